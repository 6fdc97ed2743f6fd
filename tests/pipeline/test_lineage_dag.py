"""`kdpipe lineage` on a diamond: the shared source once, `--depth`, config on request."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kdpipe.api import run_workflow

KDPIPE = [sys.executable, "-m", "kdpipe"]


@pytest.fixture(scope="module")
def diamond(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """toy-source -> toy-scale (x2) and triple (x3) -> toy-join reading both."""
    from kdpipe.testing import write_raw

    tmp = tmp_path_factory.mktemp("diamond")
    write_raw(tmp / "raw", 6)
    wf = tmp / "wf.toml"
    wf.write_text(f"""[workflow]
stages = []
plugins = ["kdpipe.testing:SOURCE", "kdpipe.testing:SCALE", "triple", "toy-join"]
[toy-source]
root = "{tmp / 'raw'}"
[triple]
uses = "kdpipe.testing:SCALE"
ports = {{ scaled = "tripled" }}
factor = 3
[toy-join]
uses = "kdpipe.testing:JOIN"
ports = {{ left = "scaled", right = "tripled" }}
""")
    run_workflow(wf, str(tmp / "ws"), scheduler="sync")
    return tmp / "ws"


def _lineage(ws: Path, *args: str) -> str:
    res = subprocess.run([*KDPIPE, "lineage", "toy-join", "--workspace", str(ws), *args],
                         check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _full(node: dict[str, Any]) -> list[str]:
    """Stages of every full (non-reference) entry in a nested lineage."""
    if "ref" in node:
        return []
    return [node["stage"], *(s for c in node["inputs"] for s in _full(c))]


def test_shared_source_appears_once_in_json_and_text(diamond: Path) -> None:
    node = json.loads(_lineage(diamond, "--json"))
    assert sorted(_full(node)) == ["toy-join", "toy-scale", "toy-source", "triple"]
    refs = [c for p in node["inputs"] for c in p["inputs"] if "ref" in c]
    assert [r["stage"] for r in refs] == ["toy-source"]  # the second path: a reference
    assert "config" not in node
    assert json.dumps(node).count('"raw_files": [{') == 1  # the raw files listed once
    txt = _lineage(diamond)
    assert txt.count("toy-source ") == 2 and txt.count("(shown above)") == 1
    assert txt.count("raw ") == 6
    assert "factor" not in txt


def test_depth_one_shows_direct_parents_only(diamond: Path) -> None:
    node = json.loads(_lineage(diamond, "--json", "--depth", "1"))
    assert [c["stage"] for c in node["inputs"]] == ["toy-scale", "triple"]
    assert all(c["inputs"] == [] and c["hidden_inputs"] == 1 for c in node["inputs"])
    assert "toy-source" not in json.dumps(node)
    txt = _lineage(diamond, "--depth", "1")
    assert "toy-source" not in txt and "raw " not in txt and "beyond --depth" in txt
    assert "toy-scale" in txt and "triple" in txt
    zero = json.loads(_lineage(diamond, "--json", "--depth", "0"))
    assert zero["inputs"] == [] and zero["hidden_inputs"] == 2


def test_config_values_on_request(diamond: Path) -> None:
    node = json.loads(_lineage(diamond, "--json", "--config"))
    by = {c["stage"]: c for c in node["inputs"]}
    assert by["triple"]["config"] == {"factor": 3} and node["config"] == {"title": "join"}
    txt = _lineage(diamond, "--config")
    assert "factor=3" in txt and "factor=2" in txt
