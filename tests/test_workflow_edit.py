"""kdpipe.workflow_edit: one key changes, comments and everything else stay byte for byte."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kdpipe.pipeline.errors import ConfigError
from kdpipe.workflow_edit import set_stage_key

BASE = """# my workflow
[workflow]
stages = ["ingest", "pseudo-label"]  # two

[pseudo-label]   # filter
sigma = 0.1  # SCKD
{line}
# trailing note of the table

[ingest]
format = "vod"
"""
NEW = {"Car": 0.42, "Cyclist": 0.3}


@pytest.mark.parametrize("line", ['class_thresholds = { Car = 0.2 }  # old one',
                                  'class_thresholds = {}', ""])
def test_replace_or_insert_keeps_the_rest(tmp_path: Path, line: str) -> None:
    p = tmp_path / "wf.toml"
    p.write_text(BASE.format(line=line))
    set_stage_key(p, "pseudo-label", "class_thresholds", NEW)
    text = p.read_text()
    assert tomllib.loads(text)["pseudo-label"] == {"sigma": 0.1, "class_thresholds": NEW}
    others = [ln for ln in text.splitlines() if "class_thresholds" not in ln]
    assert others == [ln for ln in BASE.format(line=line).splitlines()
                      if "class_thresholds" not in ln]
    if "# old one" in line:
        assert 'class_thresholds = { "Car" = 0.42, "Cyclist" = 0.3 }  # old one' in text
    else:  # inserted right after the table's last key
        assert text.index("class_thresholds") < text.index("# trailing note")


def test_new_table_and_sub_table(tmp_path: Path) -> None:
    p = tmp_path / "wf.toml"
    p.write_text('[workflow]\nstages = ["ingest"]  # keep me')
    set_stage_key(p, "pseudo-label", "class_thresholds", NEW)
    assert tomllib.loads(p.read_text())["pseudo-label"]["class_thresholds"] == NEW
    assert p.read_text().startswith('[workflow]\nstages = ["ingest"]  # keep me\n')
    p.write_text('[pseudo_label]\nsigma = 0.2\n[pseudo_label.class_thresholds]\nCar = 0.1\n'
                 '[ingest]\nformat = "vod"\n')
    set_stage_key(p, "pseudo-label", "class_thresholds", NEW)
    doc = tomllib.loads(p.read_text())
    assert doc == {"pseudo_label": {"sigma": 0.2, "class_thresholds": NEW},
                   "ingest": {"format": "vod"}}


def test_unsafe_edit_fails_and_leaves_the_file(tmp_path: Path) -> None:
    p = tmp_path / "wf.toml"
    before = "[pseudo-label]\nclass_thresholds.Car = 0.1\n"
    p.write_text(before)
    with pytest.raises(ConfigError, match="edit it by hand"):
        set_stage_key(p, "pseudo-label", "class_thresholds", NEW)
    assert p.read_text() == before
