"""The layout contract: `stages/` holds stages only, and no stage imports another stage."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

STAGES = Path(__file__).resolve().parents[2] / "stages"


def _stage_units() -> list[Path]:
    """Every module and sub-package directly in stages/ (its __init__ aside)."""
    return sorted(p for p in STAGES.iterdir()
                  if (p.suffix == ".py" and p.name != "__init__.py")
                  or (p.is_dir() and (p / "__init__.py").exists()))


def _imports(path: Path) -> set[str]:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    out: set[str] = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("unit", _stage_units(), ids=lambda p: p.stem)
def test_each_unit_in_stages_is_a_stage(unit: Path) -> None:
    from kdpipe.pipeline.stage import Stage

    mod = importlib.import_module(f"kdpipe.stages.{unit.stem}")
    assert isinstance(getattr(mod, "STAGE", None), Stage)


@pytest.mark.parametrize("unit", _stage_units(), ids=lambda p: p.stem)
def test_no_stage_imports_another_stage(unit: Path) -> None:
    others = {f"kdpipe.stages.{p.stem}" for p in _stage_units()} - {f"kdpipe.stages.{unit.stem}"}
    bad = sorted(i for i in _imports(unit)
                 if any(i == o or i.startswith(o + ".") for o in others))
    assert not bad, f"{unit.name} imports other stages: {bad}"


def test_builtin_stages_all_load() -> None:
    from kdpipe.pipeline.stage import Stage
    from kdpipe.stages import BUILTIN, load_stage

    assert all(isinstance(load_stage(name), Stage) for name in BUILTIN)
