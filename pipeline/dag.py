"""Plans: port matching, type checks, toposort, keys and slicing, all before anything runs."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from kdpipe.pipeline.errors import ConfigError, PlanError
from kdpipe.pipeline.hashing import fingerprint_tree, stage_key
from kdpipe.pipeline.stage import C, Port, Stage, StageConfig
from kdpipe.schemas import Schema, UnknownSchemaError, get_schema


@dataclass(frozen=True)
class Node:
    stage: Stage[Any]
    config: StageConfig
    upstream: Mapping[str, str]      # input port name -> producing stage name
    key: str
    fingerprint: str | None          # raw-input fingerprint (source stages only)
    upstream_port: Mapping[str, Port] = field(default_factory=dict)  # input -> producer's port
    # output port name -> its declared schema, resolved at plan time; the runner validates
    # these outputs before publishing (outputs without a schema are not checked)
    output_schemas: Mapping[str, Schema] = field(default_factory=dict)
    # the key without the raw-input stat fingerprint: what the stage was asked to make. The
    # stage sees this one (`ctx.key`, written into its files), so a re-run after a mere `touch`
    # can produce byte-identical outputs; it equals `key` for stages without raw inputs.
    asked_key: str = ""
    key_seed: int | None = None      # the workflow seed when the stage is `seeded`


# Early cutoff (Bazel, Shake). Keys chain upstream *keys*, so deciding "up to date" is one stat
# per stage and never re-reads multi-GB stores. A source stage's key also holds a stat
# fingerprint of its raw files, which changes when a file is merely touched or re-written with
# the same bytes. When such a stage re-runs and its outputs are byte-identical to those of an
# artifact with the same asked key, the store records an alias (new key -> that artifact's
# key) and `resolve` maps the new key to the old one here, so every downstream key comes out
# as before and stays cached. We chose aliases over keying downstream by upstream output
# digests: digests are only known after upstream ran, so plans, `status`, `gc` and slicing
# would need a workspace and lazily computed keys; an alias keeps every key computable before
# anything runs, and existing workspaces keep their keys. Safety: a changed raw file changes
# the fingerprint, so the source stage re-runs; if its bytes changed no alias is written and
# the new key flows downstream, so everything after it re-runs.
Resolve = Callable[[str, str], str]  # (stage, key) -> the key of the artifact that holds it


@dataclass(frozen=True)
class Plan:
    order: tuple[str, ...]           # topological, ties broken by workflow order
    nodes: Mapping[str, Node]

    def rekey(self, name: str, key: str, resolve: Resolve | None = None) -> Plan:
        """This plan with stage `name` keyed `key` (an early-cutoff alias's target) and the
        keys of everything downstream recomputed from it (each passed through `resolve`)."""
        nodes = dict(self.nodes)
        nodes[name] = replace(nodes[name], key=key)
        below = self.downstream_of([name]) - {name}
        for n in self.order:
            node = nodes[n]
            if n not in below:
                continue
            new = _keys(node, {p: nodes[src].key for p, src in node.upstream.items()},
                        resolve)
            nodes[n] = replace(node, key=new[0], asked_key=new[1])
        return Plan(self.order, nodes)

    def upstream_of(self, names: Iterable[str]) -> set[str]:
        """`names` plus everything they (transitively) read from."""
        out: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo.extend(self.nodes[n].upstream.values())
        return out

    def downstream_of(self, names: Iterable[str]) -> set[str]:
        """`names` plus everything that (transitively) reads from them."""
        out = set(names)
        for n in self.order:  # topological order: one pass suffices
            if any(u in out for u in self.nodes[n].upstream.values()):
                out.add(n)
        return out


def format_validation_error(where: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = "unknown config key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}")
    return "; ".join(parts)


def validate_config(stage: Stage[C], delta: Mapping[str, Any]) -> C:
    try:
        return stage.config.model_validate(dict(delta))
    except ValidationError as err:
        raise ConfigError(format_validation_error(stage.name, err)) from None


def _producers(stages: Sequence[Stage[Any]]) -> dict[str, tuple[str, Port]]:
    prod: dict[str, tuple[str, Port]] = {}
    for s in stages:
        for p in s.outputs:
            if p.ref in prod:
                raise PlanError(f"artifact '{p.ref}' is produced by both "
                                f"'{prod[p.ref][0]}' and '{s.name}'")
            prod[p.ref] = (s.name, p)
    return prod


def _match_ports(stages: Sequence[Stage[Any]]) -> dict[str, dict[str, tuple[str, Port]]]:
    prod = _producers(stages)
    upstream: dict[str, dict[str, tuple[str, Port]]] = {}
    for s in stages:
        upstream[s.name] = {}
        for p in s.inputs:
            if p.ref not in prod:
                raise PlanError(f"stage '{s.name}' needs '{p.ref}' ({p.kind.kind}) but no "
                                f"stage in the workflow produces it")
            src, out = prod[p.ref]
            if out.kind is not p.kind:
                raise PlanError(f"port type mismatch: '{src}' writes '{p.ref}' as "
                                f"{out.kind.kind}, '{s.name}' reads it as {p.kind.kind}")
            if p.schema and out.schema and _schema_id(p.schema) != _schema_id(out.schema):
                raise PlanError(f"schema mismatch on '{p.ref}': '{src}' writes "
                                f"{_schema_id(out.schema)}, '{s.name}' expects "
                                f"{_schema_id(p.schema)}")
            upstream[s.name][p.name] = (src, out)
    return upstream


def _schema_id(ref: str | Schema) -> str:
    return ref if isinstance(ref, str) else ref.id


def _resolve_schemas(stages: Sequence[Stage[Any]]) -> dict[str, dict[str, Schema]]:
    """Every port's schema object, by stage and output port; a plan error for a name no
    module registered, or a schema of another artifact kind than its port.

    Runs after port matching, so a producer/consumer disagreement is reported as that."""
    outputs: dict[str, dict[str, Schema]] = {}
    for s in stages:
        outputs[s.name] = {}
        for p, is_out in [*((p, False) for p in s.inputs), *((p, True) for p in s.outputs)]:
            if not p.schema:
                continue
            side = "output" if is_out else "input"
            try:
                schema = get_schema(p.schema)
            except UnknownSchemaError as e:
                raise PlanError(f"stage '{s.name}' {side} '{p.name}': {e}") from None
            if schema.kind != p.kind.kind:
                raise PlanError(f"stage '{s.name}' {side} '{p.name}' is {p.kind.kind} but "
                                f"schema {schema.id} describes {schema.kind} artifacts")
            if is_out:
                outputs[s.name][p.name] = schema
    return outputs


def _toposort(names: Sequence[str],
              upstream: Mapping[str, Mapping[str, tuple[str, Port]]]) -> list[str]:
    deps = {n: {src for src, _ in upstream[n].values()} for n in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and deps[n] <= set(order)]
        if not ready:
            stuck = sorted(n for n in names if n not in order)
            raise PlanError(f"cycle between stages: {' -> '.join(stuck)}")
        order.append(ready[0])  # first in workflow order: deterministic plans
    return order


def _keys(node: Node, input_keys: Mapping[str, str], resolve: Resolve | None
          ) -> tuple[str, str]:
    """(key, asked key) of `node` given its upstream keys; `resolve` maps the key through an
    early-cutoff alias."""
    name, version = node.stage.name, node.stage.version
    cfg = node.config.model_dump(mode="json")
    asked = stage_key(name, version, cfg, input_keys, None, seed=node.key_seed)
    key = asked if node.fingerprint is None else stage_key(
        name, version, cfg, input_keys, node.fingerprint, seed=node.key_seed)
    return (resolve(name, key) if resolve else key), asked


def build_plan(stages: Sequence[Stage[Any]], deltas: Mapping[str, Mapping[str, Any]],
               *, fingerprint: bool = True, seed: int = 0, resolve: Resolve | None = None
               ) -> Plan:
    """Validate configs, match ports, sort, and compute every stage's cache key (a `seeded`
    stage's key includes the workflow `seed`). `resolve` (a workspace's `canonical_key`) maps
    each key through the early-cutoff aliases of a workspace, before downstream keys use it."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise PlanError(f"stage listed twice in workflow: {names}")
    by_name = {s.name: s for s in stages}
    unknown = sorted(set(deltas) - set(names))
    if unknown:
        raise ConfigError(f"config given for stage(s) not in the workflow: {', '.join(unknown)}")
    configs = {s.name: validate_config(s, deltas.get(s.name, {})) for s in stages}
    upstream = _match_ports(stages)
    schemas = _resolve_schemas(stages)
    order = _toposort(names, upstream)
    nodes: dict[str, Node] = {}
    for n in order:
        s, cfg = by_name[n], configs[n]
        fp = None
        if s.sources is not None and fingerprint:
            fp = fingerprint_tree(s.sources(cfg))
        node = Node(s, cfg, {p: src for p, (src, _) in upstream[n].items()}, "", fp,
                    {p: out for p, (_, out) in upstream[n].items()}, schemas[n],
                    key_seed=seed if s.seeded else None)
        key, asked = _keys(node, {port: nodes[src].key for port, (src, _) in upstream[n].items()},
                           resolve)
        nodes[n] = replace(node, key=key, asked_key=asked)
    return Plan(tuple(order), nodes)


def select(plan: Plan, targets: Sequence[str] = (), *, from_: Sequence[str] = (),
           to: Sequence[str] = (), only: Sequence[str] = ()) -> list[str]:
    """Stages to consider, in plan order (kedro-style slicing).

    targets: those stages and everything upstream; from_: those and everything downstream;
    to: those and everything upstream; only: exactly those.
    """
    for n in [*targets, *from_, *to, *only]:
        if n not in plan.nodes:
            raise PlanError(f"unknown stage '{n}' (workflow has: {', '.join(plan.order)})")
    chosen = set(plan.order)
    if targets:
        chosen &= plan.upstream_of(targets)
    if from_:
        chosen &= plan.downstream_of(from_)
    if to:
        chosen &= plan.upstream_of(to)
    if only:
        chosen = set(only)
    return [n for n in plan.order if n in chosen]


def forced(plan: Plan, chosen: Sequence[str], targets: Sequence[str] = (), *,
           from_: Sequence[str] = (), to: Sequence[str] = (),
           only: Sequence[str] = ()) -> list[str]:
    """The stages of `chosen` (what `select` returned) that `--force` re-runs: the named ones.

    STAGE arguments, `--to` and `--only` name exactly those stages; `--from S` names S and
    everything downstream of it; with no names at all the whole selection is named. Upstream
    stages pulled in to feed a named one run only when stale: to force them, name them too
    (`--from ingest --to distill --force` forces the whole chain).
    """
    named = {*targets, *to, *only, *(plan.downstream_of(from_) if from_ else ())}
    return [n for n in chosen if n in named or not named]
