"""kdpipe.workflow_edit (tomlkit): one key changes, comments and everything else stay byte for
byte; `kdpipe.config.toml_value` still writes one-line TOML literals (benchmarks use it)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kdpipe.config import toml_value
from kdpipe.pipeline.errors import ConfigError
from kdpipe.testing import TINY_DETECTOR
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
    if "# old one" in line:  # replaced where it stood, its comment kept
        assert "class_thresholds = {Car = 0.42, Cyclist = 0.3}  # old one\n" in text
    else:  # added to its own table
        assert text.index("[pseudo-label]") < text.index("class_thresholds") \
            < text.index("[ingest]")


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


def test_dotted_keys_become_one_line(tmp_path: Path) -> None:
    p = tmp_path / "wf.toml"
    p.write_text("[pseudo-label]\nclass_thresholds.Car = 0.1  # dotted\nsigma = 0.3\n")
    set_stage_key(p, "pseudo-label", "class_thresholds", NEW)
    assert tomllib.loads(p.read_text()) == {"pseudo-label": {"sigma": 0.3,
                                                             "class_thresholds": NEW}}
    assert p.read_text().count("class_thresholds") == 1


def test_invalid_file_fails_and_is_left_alone(tmp_path: Path) -> None:
    p = tmp_path / "wf.toml"
    before = "[pseudo-label]\nsigma = \n"
    p.write_text(before)
    with pytest.raises(ConfigError, match="invalid TOML"):
        set_stage_key(p, "pseudo-label", "class_thresholds", NEW)
    assert p.read_text() == before


@pytest.mark.parametrize("value", [TINY_DETECTOR, ["a", "b"], 'say "hi"\n', 0.1, 3, True,
                                   {"Car": 0.4, "Truck": None}, ("x", 1), Path("/a b/c")])
def test_toml_value_is_a_one_line_literal(value: object) -> None:
    text = toml_value(value)
    assert "\n" not in text
    want = {"Car": 0.4} if isinstance(value, dict) and "Truck" in value else value
    want = list(want) if isinstance(want, tuple) else want
    assert tomllib.loads(f"v = {text}")["v"] == (str(want) if isinstance(want, Path) else want)
