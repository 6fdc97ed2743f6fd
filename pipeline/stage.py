"""What a stage is: a typed config, typed input/output ports and one `run`.

A stage module defines a config model, a `run(ctx)` function and one `STAGE` constant. The runner
owns everything else (keys, temporary locations, publishing, lineage), so `run` only reads
`ctx.inputs[...]` and writes `ctx.outputs[...]`.
"""
from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from kdpipe.pipeline.hashing import canonical_json, sha256_bytes

if TYPE_CHECKING:
    import polars as pl

    from kdpipe.pipeline.executor import Executor


class StageConfig(BaseModel):
    """Base for stage configs: frozen, unknown keys rejected (nanoGPT's `Unknown config key`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


C = TypeVar("C", bound=StageConfig)


class Artifact:
    """An artifact kind: how a port's data sits on disk (one file or one directory)."""

    kind: ClassVar[str] = "artifact"
    suffix: ClassVar[str] = ""
    is_dir: ClassVar[bool] = False


class ZarrArtifact(Artifact):
    kind, suffix, is_dir = "zarr", ".zarr", True


class ParquetArtifact(Artifact):
    kind, suffix, is_dir = "parquet", ".parquet", False


class CheckpointArtifact(Artifact):
    kind, suffix, is_dir = "checkpoint", ".pt", False


class JsonArtifact(Artifact):
    kind, suffix, is_dir = "json", ".json", False


class HtmlArtifact(Artifact):
    """One self-contained HTML page (reports)."""

    kind, suffix, is_dir = "html", ".html", False


class DirArtifact(Artifact):
    """A directory of files (reports, exported label folders)."""

    kind, suffix, is_dir = "dir", "", True


@dataclass(frozen=True)
class Port:
    name: str                     # artifact name in the workflow, e.g. "radar_frames"
    kind: type[Artifact]          # ZarrArtifact | ParquetArtifact | ...
    schema: str | None = None     # schema name from kdpipe.schemas, checked when plans are built
    # Artifact name in the workflow when it differs from the port name (a stage used twice,
    # e.g. `evaluate` on the teacher and on the student: `[evaluate-student] ports = {...}`).
    artifact: str | None = None

    def filename(self) -> str:
        return self.name + self.kind.suffix

    @property
    def ref(self) -> str:
        """The name plans match producers and consumers on."""
        return self.artifact or self.name


def instance(stage: Stage[Any], name: str, ports: Mapping[str, str]) -> Stage[Any]:
    """`stage` under another name, its ports bound to other artifact names (`run` is unchanged,
    it still reads and writes its own port names). Ports not in `ports` keep their binding."""
    from dataclasses import replace

    from kdpipe.pipeline.errors import ConfigError

    # A renamed port fails with the key to write: the old name would otherwise read as a typo.
    for old in ports:
        new = stage.renamed_ports.get(old)
        if new is not None:
            raise ConfigError(f"[{name}] ports: port '{old}' of stage '{stage.name}' is now "
                              f"'{new}' (write ports = {{ {new} = \"{ports[old]}\", ... }})")
    known = {p.name for p in (*stage.inputs, *stage.outputs)}
    unknown = sorted(set(ports) - known)
    if unknown:
        raise ConfigError(f"[{name}] ports: stage '{stage.name}' has no port(s) "
                          f"{', '.join(unknown)} (it has: {', '.join(sorted(known))})")

    def bind(ps: tuple[Port, ...]) -> tuple[Port, ...]:
        # keep a port's own default binding (e.g. a renamed port still reading its old
        # artifact) unless the workflow rebinds it
        return tuple(replace(p, artifact=ports.get(p.name, p.artifact)) for p in ps)

    return replace(stage, name=name, inputs=bind(stage.inputs), outputs=bind(stage.outputs))


@dataclass(frozen=True)
class Stage(Generic[C]):
    name: str                                   # CLI spelling, e.g. "teacher-label"
    config: type[C]                             # pydantic model, frozen, extra="forbid"
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    run: Callable[[StageContext[C]], None]
    version: int = 1                            # bump to invalidate cached outputs on purpose
    # Raw inputs outside the workspace; their (path, size, mtime) fingerprint joins the key.
    sources: Callable[[C], Sequence[Path]] | None = None
    description: str = ""
    # Ports renamed since workflows were written (old name -> new name): binding the old name
    # in `ports = {...}` fails with a message naming the new key.
    renamed_ports: Mapping[str, str] = field(default_factory=dict)
    # Its outputs depend on the workflow seed (training: init, augmentation, batch order), so
    # the seed joins its key: another seed re-runs it, and everything downstream of it.
    seeded: bool = False

    def source_hash(self) -> str:
        """Hash of the stage module's code, comments and docstrings stripped (lineage only)."""
        return module_source_hash(self.run)


def module_source_hash(fn: Callable[..., Any]) -> str:
    module = inspect.getmodule(fn)
    if module is None:
        return "unknown"
    try:
        src = inspect.getsource(module)
    except (OSError, TypeError):
        return "unknown"
    tree = ast.parse(src)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                and isinstance(first.value.value, str):
            # any node with a statement body (module, def, class, if, for, ...); ast.AST
            # itself declares no `body`
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return sha256_bytes(ast.dump(tree).encode())[:16]


# (description, done, total); the runner's is a `pipeline.progress.StageProgress`, which also
# takes the training loop's per-step reports
ProgressFn = Callable[[str, int, int], None]


def _no_progress(desc: str, done: int, total: int) -> None:
    return None


@dataclass
class StageContext(Generic[C]):
    """What `run` sees. Output paths point into the stage's work directory, not the store."""

    stage: str
    key: str
    config: C
    inputs: Mapping[str, Path]
    outputs: Mapping[str, Path]
    workdir: Path                  # persists across a killed run so stages can resume
    executor: Executor
    seed: int = 0
    progress: ProgressFn = _no_progress
    # raw input files read, as polars tables (path, bytes, sha256): a fleet's ingest reads ~10^7,
    # which as Python dicts would cost the driver GBs and minutes
    sources: list[pl.DataFrame] = field(default_factory=list)
    # Digests a stage computed while writing (e.g. per Zarr group, in parallel); the runner
    # hashes any output not listed here.
    output_digests: dict[str, str] = field(default_factory=dict)
    # Figures a stage reports about its run (e.g. points trained on), kept in the lineage record
    # only: they describe the work, and artifacts stay byte-identical between runs without them.
    facts: dict[str, Any] = field(default_factory=dict)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *, desc: str = "",
            resources: Mapping[str, float] | None = None) -> list[Any]:
        """Run `fn(item)` for every item on the executor; results in item order.

        Items must be small (paths, ids, configs): tasks read their own data.
        """
        seq = list(items)
        label = desc or self.stage
        return self.executor.map(fn, seq, name=f"{self.stage}-{label}", resources=resources,
                                 progress=lambda done: self.progress(label, done, len(seq)))

    def record_sources(self, rows: Iterable[Mapping[str, Any]] | pl.DataFrame) -> None:
        """Record raw input files read: dicts with `path`, `bytes`, `sha256`, or a polars
        DataFrame with those columns (kept as it is)."""
        import polars as pl

        self.sources.append(rows if isinstance(rows, pl.DataFrame)
                            else pl.DataFrame([dict(r) for r in rows]))

    def file_metadata(self) -> dict[str, str]:
        """Deterministic provenance for file-level metadata (Parquet key "kdpipe", Zarr attrs).

        Only what was asked for goes here (no times, hosts): artifacts stay byte-identical
        between runs; the full record lives in `_lineage.json`.
        """
        return {"kdpipe": canonical_json({"stage": self.stage, "key": self.key,
                                          "config": self.config.model_dump(mode="json")}).decode()}
