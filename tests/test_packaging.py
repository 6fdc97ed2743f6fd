"""The wheel ships every package: pyproject's explicit `packages` list must name each folder
with an `__init__.py` under its `package-dir` roots (a missed one, models/kd, once made every
non-editable install fail at the first distill stage while the editable checkout worked)."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_in_the_wheel() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = set()
    for name, folder in cfg["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([name, *rel.parts]))
    assert on_disk - set(cfg["packages"]) == set(), "add these to [tool.setuptools] packages"
    assert set(cfg["packages"]) - on_disk == set(), "listed but not on disk"
