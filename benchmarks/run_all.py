"""Run every benchmark in benchmarks/ and write docs/BENCHMARKS.md: each figure beside its baseline
and its goal from DESIGN.md, the machine and the date, met or not.

    python benchmarks/run_all.py                              # everything (hours: ablation, IMKD)
    python benchmarks/run_all.py --only ingest,rerun,crash_drill
    python benchmarks/run_all.py --skip kd_ablation,imkd --reuse-json docs/bench

Benchmarks are discovered by file (`benchmarks/*.py`); each runs as its own process and its JSON
(the last JSON document on its stdout) is saved as docs/bench/<name>.json. A benchmark not run
(skipped, or missing) is reported from `--reuse-json DIR/<name>.json` when that exists, marked
with the date it was measured. The table goes between two markers in docs/BENCHMARKS.md; the
rest of that file (notes on earlier measurements) is kept as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_figures import FIGURES, figure_rows  # noqa: I001 -- a sibling script module

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
# Arguments per benchmark (`{tmp}` is a scratch folder of this run); `long` ones take 30+ min.
ARGS: dict[str, tuple[list[str], bool]] = {
    "ingest": (["--format", "vod", "--frames", "2000"], False),
    "rerun": (["--frames", "10000", "--repeats", "5"], False),
    "ingest_tail": (["--groups", "2000"], False),
    "contention": (["--out", "{tmp}/contention"], False),  # ~18 min: 3 runs of the IMKD bench
    "crash_drill": (["--kills", "24", "--scheduler", "local:2"], False),
    "audit": (["--scenes", "10", "--samples", "20"], False),
    "curate": ([], False),
    "teacher": (["--frames", "480", "--epochs", "40", "--out", "{tmp}/teacher"], True),
    "kd_ablation": (["--frames", "480", "--seeds", "3", "--out", "{tmp}/kd"], True),
    "imkd": (["--out", "{tmp}/imkd"], True),
}


def discover() -> list[str]:
    """The scripts of benchmarks/ that run as one (helper modules, e.g. kd_ablation's kd_rows,
    have no `__main__` block)."""
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py")
                  if p.stem != "run_all" and not p.stem.startswith("_")
                  and 'if __name__ == "__main__":' in p.read_text())


def last_json(text: str) -> dict[str, Any] | None:
    """The last JSON object printed on stdout (benchmarks may print other lines first)."""
    dec = json.JSONDecoder()
    for i in [i for i, c in enumerate(text) if c == "{"]:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and not text[end:].strip():
            return obj
    return None


def machine() -> dict[str, Any]:
    import psutil

    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                  .splitlines() if ln.startswith("model name")), platform.processor())
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        gpu = "unknown"
    return {"cpus": len(os.sched_getaffinity(0)), "ram_gib": round(psutil.virtual_memory()
                                                                    .total / 2**30, 1),
            "cpu_model": model, "gpu": gpu, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def run_one(name: str, args: list[str], tmp: Path, quick: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(REPO / "benchmarks" / f"{name}.py"),
           *[a.replace("{tmp}", str(tmp)) for a in args], *quick]
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    wall = round(time.perf_counter() - t0, 1)
    # the 1-minute load average around the run: other jobs on the machine skew timings
    load = f"{load0:.1f}-{os.getloadavg()[0]:.1f}"
    doc = last_json(res.stdout)
    if res.returncode != 0 or doc is None:
        tail = " ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        return {"_status": "failed", "_command": " ".join(cmd[1:]), "_wall_s": wall,
                "_error": f"exit {res.returncode}: {tail[-400:]}", "_load_avg": load}
    return {**doc, "_status": "this run", "_command": " ".join(cmd[1:]), "_wall_s": wall,
            "_date": time.strftime("%Y-%m-%d"), "_load_avg": load}


def render(results: dict[str, dict[str, Any]], mach: dict[str, Any], notes: list[str]) -> str:
    lines = [BEGIN, "## All figures (`python benchmarks/run_all.py`)", "",
             f"Machine: {mach['cpus']} CPU cores ({mach['cpu_model']}), {mach['ram_gib']} GiB "
             f"RAM, GPU: {mach['gpu']}, Python {mach['python']}; run_all date {mach['date']}. "
             "The source column says which figures this run measured and which come from JSON an "
             "earlier run saved, with the machine's 1-minute load average before-after each "
             "benchmark: on a shared machine a load above the core count slows the timed runs "
             "and their baselines unevenly.", "",
             "| benchmark | figure | measured | baseline (same run) | goal (DESIGN.md) | met "
             "| source |", "|---|---|---|---|---|---|---|"]
    for name in sorted(results):
        doc = results[name]
        src = doc.get("_status", "")
        if src.startswith("reused"):
            src = f"{src}, measured {doc.get('_date', '?')}"
        if doc.get("_load_avg"):
            src += f", load {doc['_load_avg']}"
        if doc.get("_status") == "failed":
            lines.append(f"| {name} | - | failed: {doc['_error']} | - | - | - | this run |")
            continue
        for row in figure_rows(name, doc):
            met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
            lines.append(f"| {name} | {row['figure']} | {row['measured']} | {row['baseline']} "
                         f"| {row['goal']} | {met} | {src} |")
    lines += ["", "Commands and raw JSON: `docs/bench/<benchmark>.json` (`_command` holds the "
              "exact arguments).", *[f"- {n}" for n in notes], END]
    return "\n".join(lines) + "\n"


def write_doc(path: Path, block: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block.rstrip("\n") + rest.split(END, 1)[1]
    else:  # first time: the table goes right under the title, earlier notes follow it
        title, _, body = old.partition("\n")
        new = f"{title}\n\n{block}\n## Earlier notes (kept as written)\n{body}"
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated benchmarks to run")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks not to run")
    ap.add_argument("--skip-long", action="store_true", help="skip the 30+ minute ones")
    ap.add_argument("--reuse-json", type=Path, help="report benchmarks not run from DIR/*.json")
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes (ingest 400 frames, crash drill 16 kills)")
    ap.add_argument("--bench-dir", type=Path, default=REPO / "docs" / "bench")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = ap.parse_args()
    found = discover()
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    notes = [f"`{n}` asked for but benchmarks/{n}.py does not exist"
             for n in sorted(only - set(found))]
    args.bench_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("KDPIPE_BENCH_TMP")) as d:
        for name in found:
            bench_args, long = ARGS.get(name, ([], False))
            run = (not only or name in only) and name not in skip \
                and not (long and args.skip_long)
            if run:
                quick = QUICK.get(name, []) if args.quick else []
                print(f"running {name} ...", file=sys.stderr, flush=True)
                results[name] = run_one(name, bench_args, Path(d), quick)
                if results[name]["_status"] == "this run":
                    (args.bench_dir / f"{name}.json").write_text(
                        json.dumps(results[name], indent=1) + "\n")
                print(f"  {results[name]['_status']} in {results[name]['_wall_s']} s",
                      file=sys.stderr, flush=True)
            elif args.reuse_json and (args.reuse_json / f"{name}.json").exists():
                doc = json.loads((args.reuse_json / f"{name}.json").read_text())
                results[name] = {**doc, "_status": "reused JSON"}
            else:
                notes.append(f"`{name}` not run and no saved JSON: not in the table")
    notes += [f"`{n}`: no figure extractor, see its JSON" for n in results if n not in FIGURES]
    write_doc(args.doc, render(results, machine(), notes))
    print(json.dumps({n: r.get("_status") for n, r in results.items()}, indent=1))


QUICK: dict[str, list[str]] = {"ingest": ["--frames", "400"], "crash_drill": ["--kills", "16"],
                               "rerun": ["--repeats", "3"]}

if __name__ == "__main__":
    main()
