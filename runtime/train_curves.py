"""Training curves of a finished training stage, inside its artifact: TensorBoard scalars in
`<artifact>/tb/` and a loss-curve PNG beside the train log.

Both are drawn from the per-step log `fit` keeps in the work dir (`train_steps.jsonl`: every
step's losses and learning rate, cut back on resume) and from the per-epoch log rows. They must
be byte-identical between runs, killed-and-resumed ones included (the crash drill compares every
artifact file), so the event file is written record by record in TensorBoard's format with a
fixed name and wall time 0 rather than by `SummaryWriter`, which stamps the clock and host into
both: read it with TensorBoard's step axis (the epochs' real durations are in lineage,
`facts.world.epoch_seconds`).

    tb/events.out.tfevents.kdpipe   step/<loss key> and step/lr per step (global step),
                                    epoch/<column> per epoch (at the epoch's last step)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdpipe.runtime.train_loop import STEPS_FILE

TB_DIR, EVENTS = "tb", "events.out.tfevents.kdpipe"
_NOT_CURVES = {"epoch", "steps", "frames"}


def read_steps(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / STEPS_FILE
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln]


def _epoch_columns(log: list[dict[str, Any]]) -> list[str]:
    """Numeric columns of any row, in first-seen order (validation columns appear only in
    the epochs that were validated)."""
    cols: dict[str, None] = {}
    for row in log:
        cols.update((k, None) for k, v in row.items() if k not in _NOT_CURVES
                    and not k.startswith("points_") and isinstance(v, int | float))
    return list(cols)


def write_tensorboard(out_dir: Path, steps: list[dict[str, Any]],
                      log: list[dict[str, Any]]) -> Path:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    def event(step: int, values: dict[str, float]) -> bytes:
        summary = Summary(value=[Summary.Value(tag=t, simple_value=v)
                                 for t, v in values.items()])
        return bytes(Event(wall_time=0.0, step=step, summary=summary).SerializeToString())

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EVENTS
    with path.open("wb") as f:
        w = RecordWriter(f)
        w.write(Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString())
        for r in steps:
            w.write(event(r["step"], {f"step/{k}": float(v) for k, v in r.items()
                                      if k not in ("epoch", "step")}))
        cols, done = _epoch_columns(log), 0
        for row in log:
            done += int(row["steps"])
            w.write(event(done, {f"epoch/{k}": float(row[k]) for k in cols if k in row}))
    return path


def write_loss_png(path: Path, steps: list[dict[str, Any]], log: list[dict[str, Any]],
                   title: str) -> Path:
    """Every loss term per step (thin), the epoch means (dots), the LR on a second axis; below,
    the validation mAP per validated epoch when the run had `optim.val_split`."""
    from matplotlib.figure import Figure

    done, ends = 0, []
    for row in log:
        done += int(row["steps"])
        ends.append(done)
    val = [(e, r) for e, r in zip(ends, log, strict=True) if "val_map" in r]
    fig = Figure(figsize=(8, 6.5 if val else 4.5), dpi=100)
    ax = fig.add_subplot(2, 1, 1) if val else fig.add_subplot()
    keys = [k for k in (steps[0] if steps else {}) if k not in ("epoch", "step", "lr")]
    for k in sorted(keys, key=lambda k: k != "loss"):
        ax.plot([r["step"] for r in steps], [r[k] for r in steps], label=k,
                linewidth=1.6 if k == "loss" else 0.8)
    if log and "loss" in log[0]:
        ax.plot(ends, [r["loss"] for r in log], "ko", markersize=3, label="epoch mean loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if steps:
        lr = ax.twinx()
        lr.plot([r["step"] for r in steps], [r["lr"] for r in steps], color="grey",
                linestyle=":", linewidth=0.8)
        lr.set_ylabel("learning rate (dotted)")
    ax.legend(fontsize=7, loc="upper right")
    if val:
        vax = fig.add_subplot(2, 1, 2, sharex=ax)
        names = [k for k in val[0][1] if k.startswith("val_ap_")]
        for k in names:
            vax.plot([e for e, _ in val], [r[k] for _, r in val], "-", linewidth=0.8,
                     label=k.removeprefix("val_ap_"))
        vax.plot([e for e, _ in val], [r["val_map"] for _, r in val], "k-o", markersize=3,
                 linewidth=1.6, label="mAP")
        vax.set_xlabel("step")
        vax.set_ylabel("val AP (%)")
        vax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})  # no version stamp
    return path


def write_curves(workdir: Path, log_path: Path, log: list[dict[str, Any]],
                 title: str) -> None:
    """`<workdir>/tb/` and `<train log>.png`; the per-step log is not an output and goes."""
    steps = read_steps(workdir)
    write_tensorboard(workdir / TB_DIR, steps, log)
    write_loss_png(log_path.with_suffix(".png"), steps, log, title)
    (workdir / STEPS_FILE).unlink(missing_ok=True)
