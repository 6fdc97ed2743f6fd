"""CLI calls that only read or plan import neither torch nor dask (a fresh interpreter each)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdpipe.api import run_workflow
from kdpipe.testing import toy_workflow, write_raw

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "dask", "distributed")
# Runs the real entry point (`python -m kdpipe ...`), then lists the heavy modules it loaded.
PROBE = """
import json, runpy, sys
PRELUDE
sys.argv = ["kdpipe", *sys.argv[1:]]
try:
    runpy.run_module("kdpipe", run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}),
      file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))
# `kdpipe.models` as a bare package (its __init__, which imports every model and so torch, not
# run; its submodules import as usual): what planning loads apart from that __init__.
BARE_MODELS = """
import importlib.util, types
spec = importlib.util.find_spec("kdpipe.models")
bare = types.ModuleType("kdpipe.models")
bare.__path__ = list(spec.submodule_search_locations)
sys.modules["kdpipe.models"] = bare
"""


def loaded(*args: str, prelude: str = "") -> list[str]:
    res = subprocess.run([sys.executable, "-c", PROBE.replace("PRELUDE", prelude), *args],
                         capture_output=True, text=True, timeout=120, check=False)
    last = json.loads(res.stderr.strip().splitlines()[-1])
    assert last["code"] in (0, None), res.stderr
    return list(last["heavy"])


@pytest.fixture(scope="module")
def toy_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("imports")
    write_raw(tmp / "raw", 8)
    wf = toy_workflow(tmp / "wf.toml", tmp / "raw")
    run_workflow(wf, str(tmp / "ws"), scheduler="sync")
    return wf, tmp / "ws"


def test_help_imports_nothing_heavy() -> None:
    assert loaded("--help") == []
    assert loaded("run", "--help") == []


def test_status_lineage_metrics_import_no_torch_nor_dask(toy_ws: tuple[Path, Path]) -> None:
    wf, ws = toy_ws
    assert loaded("status", "-w", str(wf), "--workspace", str(ws)) == []
    assert loaded("status", "-w", str(REPO / "workflows/smoke.toml"), "--workspace",
                  str(ws)) == []
    assert loaded("lineage", "toy-report", "--workspace", str(ws)) == []
    assert loaded("metrics", "--workspace", str(ws)) == []


@pytest.mark.parametrize("workflow", ["vod_sckd", "nuscenes_imkd"])
def test_training_stages_and_their_configs_import_no_torch(toy_ws: tuple[Path, Path],
                                                           workflow: str) -> None:
    """Planning a training workflow: the stage modules and the configs they nest
    (runtime/config.py) load no torch; torch comes with `build`/`run`. Only `kdpipe.models`'
    __init__ is left out (see the xfail below)."""
    _, ws = toy_ws
    assert loaded("status", "-w", str(REPO / f"workflows/{workflow}.toml"), "--workspace",
                  str(ws), prelude=BARE_MODELS) == []


def test_status_of_a_training_workflow_imports_no_torch(toy_ws: tuple[Path, Path]) -> None:
    _, ws = toy_ws
    assert loaded("status", "-w", str(REPO / "workflows/vod_sckd.toml"), "--workspace",
                  str(ws)) == []
