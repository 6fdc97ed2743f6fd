"""Security basics: dataset file names stay inside the root, checkpoints are checked against their
lineage before they are unpickled, and nothing is unpickled from inputs."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.datasets.formats.bins import safe_join
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.pipeline.errors import ConfigError
from kdpipe.runtime.checkpoints import read_checkpoint
from kdpipe.testing import TINY_DETECTOR, ingest_store

REPO = Path(__file__).resolve().parents[2]
VOD_FILES = {"lidar": "lidar/training/velodyne/{f}.bin", "image": "lidar/training/image_2/{f}.jpg",
             "pose": "lidar/training/pose/{f}.json", "calib": "radar/training/calib/{f}.txt"}


def copy_vod(real: Path, dst: Path) -> Path:
    shutil.copytree(real / "vod", dst, ignore=shutil.ignore_patterns("label_2_json"))
    return dst


@pytest.mark.parametrize("name", ["../x.bin", "a/../../x.bin", "/etc/passwd", "~/x", "", "a\0b"])
def test_safe_join_refuses_names_that_leave_the_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(FormatError) as e:
        safe_join(tmp_path, name)
    assert e.value.check == "path"


@pytest.mark.parametrize("which", sorted(VOD_FILES))
def test_vod_file_symlinked_out_of_the_root_is_rejected(tmp_path: Path, real: Path,
                                                        which: str) -> None:
    """Every per-frame file, the camera image included (it was read without the check)."""
    root = copy_vod(real, tmp_path / "vod")
    victim = root / VOD_FILES[which].format(f="01047")
    outside = tmp_path / "outside" / victim.name
    outside.parent.mkdir()
    shutil.move(victim, outside)
    victim.symlink_to(outside)
    art = ingest_store(tmp_path, root)
    rejects = pl.read_parquet(art / "rejects.parquet")
    assert rejects.select("frame", "check").rows() == [("01047", "path")], rejects
    assert "outside root" in rejects["reason"][0]
    assert pl.read_parquet(art / "frames.parquet").height == 2


def test_vod_split_file_cannot_name_a_path(tmp_path: Path, real: Path) -> None:
    root = copy_vod(real, tmp_path / "vod")
    (root / "lidar/ImageSets").mkdir(exist_ok=True)
    (root / "lidar/ImageSets/train.txt").write_text("00549\n../../../etc/passwd\n")
    with pytest.raises(Exception, match="not a frame id: '../../../etc/passwd'"):
        ingest_store(tmp_path, root)


def _tiny_teacher(tmp: Path, vod_world: Path) -> tuple[Path, Path]:
    wf = tmp / "wf.toml"
    wf.write_text(f"""[workflow]
stages = ["ingest", "teacher-train", "teacher-label"]
[ingest]
roots = [{toml_value(str(vod_world))}]
[teacher-train]
max_frames = 4
detector = {toml_value(TINY_DETECTOR)}
[teacher-train.optim]
epochs = 1
""")
    rep = run_workflow(wf, str(tmp / "ws"), ["teacher-train"], scheduler="sync")
    return wf, Path(rep["stages"][-1]["outputs"]["teacher"])


def test_tampered_checkpoint_is_refused_before_it_is_loaded(tmp_path: Path,
                                                            vod_world: Path) -> None:
    wf, ckpt = _tiny_teacher(tmp_path, vod_world)
    assert read_checkpoint(ckpt)["format"]  # untouched: loads
    blob = torch.load(ckpt, weights_only=True)
    key = next(iter(blob["state_dict"]))
    blob["state_dict"][key] = blob["state_dict"][key] + 1.0  # a valid, but different, model
    torch.save(blob, ckpt)
    with pytest.raises(ConfigError, match="does not match the sha256 in its lineage"):
        read_checkpoint(ckpt)
    res = subprocess.run([sys.executable, "-m", "kdpipe", "run", "teacher-label", "--workflow",
                          str(wf), "--workspace", str(tmp_path / "ws"), "--scheduler", "sync",
                          "--json"], capture_output=True, text=True, timeout=300, check=False)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error:") and "does not match the sha256" in lines[0]
    # a copy outside any workspace has no lineage to check against: it loads
    shutil.copyfile(ckpt, tmp_path / "loose.pt")
    assert read_checkpoint(tmp_path / "loose.pt")["format"]
    # a lineage record that lost the file's entry is refused too
    rec = ckpt.parent / "_lineage.json"
    doc = json.loads(rec.read_text())
    doc["outputs"] = {}
    rec.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="does not record a digest"):
        read_checkpoint(ckpt)


UNSAFE = [
    (r"\bpickle\.loads?\(", "pickle.load"),
    (r"\bnp\.load\([^)]*allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\b(?:pd|pandas)\.read_pickle\(", "read_pickle"),
    (r"\b(?:joblib|dill|cloudpickle)\.loads?\(", "joblib/dill/cloudpickle load"),
    (r"\byaml\.load\((?![^)]*Loader=yaml\.SafeLoader)", "yaml.load without SafeLoader"),
]


def _call(text: str, start: int) -> str:
    """The call text from `start` (just past its opening parenthesis) to the matching one."""
    depth, i = 1, start
    while depth and i < len(text):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    return text[start:i]


def test_nothing_is_unpickled_from_inputs() -> None:
    """No code path unpickles files: torch.load always with weights_only=True (tests included),
    no pickle/np.load with allow_pickle, pandas/joblib pickles or unsafe YAML in the package and
    the benchmarks (a test may round-trip its own pickle)."""
    found = []
    for folder in ("kdpipe", "pipeline", "stages", "models", "schemas", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for m in re.finditer(r"\btorch\.load\(", text):
                if "weights_only=True" not in _call(text, m.end()):
                    found.append(f"{path.relative_to(REPO)}: torch.load without weights_only=True")
            for pattern, what in UNSAFE if folder != "tests" else ():
                if re.search(pattern, text):
                    found.append(f"{path.relative_to(REPO)}: {what}")
    assert not found, found
