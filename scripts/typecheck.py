"""Type-check kdpipe with mypy; the settings (which packages, how strict) are pyproject's.

The repository keeps `pipeline/`, `schemas/`, ... at the top level and setuptools installs them
as `kdpipe.pipeline`, `kdpipe.schemas`, ... (pyproject's package-dir). The editable install maps
them with an import hook, which mypy cannot follow, so this mirrors the mapping as symlinks under
build/mypy/ (pyproject's `mypy_path`), runs mypy on the package names and prints the repository
paths in its messages. Extra arguments go to mypy.

    python scripts/typecheck.py
"""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "mypy"


def package_dirs() -> dict[str, Path]:
    """Dotted package name -> its folder, for `kdpipe` and every mapped subpackage."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in setup["package-dir"].items()}


def link_tree(dirs: dict[str, Path]) -> dict[Path, Path]:
    """build/mypy/kdpipe/...: a link per entry of kdpipe/ and per mapped subpackage; rebuilt
    each run so new and removed files show. Returns tree folder -> repository folder."""
    pkg = TREE / "kdpipe"
    pkg.mkdir(parents=True, exist_ok=True)
    want = {p.name: p for p in dirs["kdpipe"].iterdir() if p.name != "__pycache__"}
    subs = {name.removeprefix("kdpipe."): d for name, d in dirs.items() if name != "kdpipe"}
    want.update(subs)
    for p in pkg.iterdir():  # only links live here: never follow one
        if not p.is_symlink():
            raise SystemExit(f"{p} is not a symlink; remove {TREE} and run again")
        if p.name not in want or p.readlink() != want[p.name]:
            p.unlink()
    for name, target in want.items():
        if not (pkg / name).is_symlink():
            (pkg / name).symlink_to(target)
    return {pkg / name: d for name, d in subs.items()} | {pkg: dirs["kdpipe"]}


def main() -> int:
    tree = link_tree(package_dirs())
    res = subprocess.run([sys.executable, "-m", "mypy", *sys.argv[1:]], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    out = res.stdout + res.stderr
    # longest first: build/mypy/kdpipe/pipeline/ before build/mypy/kdpipe/
    for link, real in sorted(tree.items(), key=lambda kv: -len(str(kv[0]))):
        out = out.replace(f"{link.relative_to(ROOT)}/", f"{real.relative_to(ROOT)}/")
    sys.stdout.write(out)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
