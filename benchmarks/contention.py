"""Training beside a CPU-bound competitor: slowdown vs alone, OpenMP spin-wait vs passive.

    python benchmarks/contention.py                   # JSON on stdout
    python benchmarks/contention.py --steps 30 --competitors 2

A fresh interpreter times `--steps` radar-only training steps (batch 4, 0.8 m grid, torch
threads = the machine's cores), alone and again while `--competitors` busy-loop processes keep
every core busy, once with GNU OpenMP's default wait policy (threads spin) and once as kdpipe
sets it on import (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0). A fair share of 2 cores beside
2 busy processes is 2x; the issue-17 goal is <= 2.5x. This measures the training step, the
part of a pipeline run that collapsed; it is not a whole `kdpipe run` (not measured here).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

STEP = r"""
import time, torch
from kdpipe.models import create_model
torch.manual_seed(0)
m = create_model("radar-only", pillar_size_m=0.8)
opt = torch.optim.AdamW(m.parameters(), 1e-3)
g = torch.Generator().manual_seed(0)
pts = 1200
radar = torch.cat([torch.randint(0, 4, (pts, 1), generator=g).float(),
                   torch.rand(pts, 1, generator=g) * 50, torch.rand(pts, 1, generator=g) * 50 - 25,
                   torch.rand(pts, 4, generator=g)], 1)
batch = {"radar": radar, "batch_size": 4}
tg = [{"boxes": torch.tensor([[10., 1., -1., 4., 1.8, 1.5, 0.3]]), "labels": torch.tensor([0])}] * 4
for i in range(WARM + STEPS):
    if i == WARM:
        t = time.perf_counter()
    loss = m.loss(m(batch), tg)["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()
print((time.perf_counter() - t) / STEPS)
"""


def _spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def _seconds_per_step(steps: int, passive: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    # `import kdpipe` sets the passive policy; the spin case imports torch first, as a user
    # script that imports torch before kdpipe would.
    head = "import kdpipe\n" if passive else "import torch\nimport kdpipe\n"
    code = head + STEP.replace("WARM", "3").replace("STEPS", str(steps))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--competitors", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    res: dict[str, dict[str, float]] = {}
    for policy, passive in (("spin (OpenMP default)", False), ("passive (kdpipe)", True)):
        alone = _seconds_per_step(args.steps, passive)
        load_alone = os.getloadavg()[0]
        procs = [mp.Process(target=_spin, args=(time.time() + 600,), daemon=True)
                 for _ in range(args.competitors)]
        for p in procs:
            p.start()
        try:
            time.sleep(1.0)
            beside = _seconds_per_step(args.steps, passive)
            load_beside = os.getloadavg()[0]
        finally:
            for p in procs:
                p.terminate()
        res[policy] = {"alone_s_per_step": round(alone, 4),
                       "beside_s_per_step": round(beside, 4),
                       "slowdown": round(beside / alone, 2),
                       "load_average_alone": round(load_alone, 2),
                       "load_average_beside": round(load_beside, 2)}
    print(json.dumps({"cores": os.cpu_count(), "competitors": args.competitors,
                      "steps": args.steps, "results": res, "goal": "slowdown <= 2.5x",
                      "met": res["passive (kdpipe)"]["slowdown"] <= 2.5}, indent=1))


if __name__ == "__main__":
    main()
