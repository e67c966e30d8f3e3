"""A sweep file and the run list it expands to (torch-free: `--dry-run` and validation stay light).

    base: ../e2e/gpt2-medium/prefix.yaml   # a config (paths in a sweep file are relative to it)
    set: {train.epochs: 10}                 # overrides for every run
    grid:                                   # cartesian product of dotted keys
      data.train_size: [50, 100, 200, 500]
      data.subset_seed: [0, 1, 2, 3, 4]
    cases:                                  # optional points, each a dict of overrides, × the grid
      - {method: {kind: prefix, prefix_len: 10}, train.lr: 5e-5}
      - {base: ../e2e/gpt2-medium/full.yaml}   # a case may name its own base config
    seeds: [101, 102]                       # each point once per seed (sets train.seed)
    select: {grid: {train.lr: [1e-4, 1e-3]}, metric: BLEU, seeds: [103]}   # tune on dev (selection.py)
    claims: [{better: {method.kind: prefix}, worse: {method.kind: full}}]  # declared claims (claims.py)
    name: lowdata-e2e                       # the sweep's folder under --root (default: file stem)
    slurm: {partition: gpu, gpus_per_task: 1, time: 240, mem: 32G}

Keys are dotted (`train.lr`) or nested; a mapping value replaces that whole section (a case's
`method: {kind: full}` does not inherit the base's prefix options), so write dotted keys to change
one field. Each run's overrides apply in this order: `set`, the case, the grid point, the seed,
then the command line's `key=value` overrides.

A run's folder is `<root>/<name>/<varied values>-seed<k>`: the keys whose values differ between
the sweep's points, by their last dotted part (the full key where two would clash), e.g.
`train_size=50-subset_seed=0-kind=prefix-seed101`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from peftrun.config import read_yaml, unknown_key
from peftrun.errors import PeftrunError
from peftrun.studies.claims import ClaimSpec

MAX_NAME = 200  # bytes of a run folder's name before it is shortened with a hash


class SlurmOptions(BaseModel):
    """Resources of each Slurm job (one run per job, submitted as a job array)."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = Field(None, description="Slurm partition")
    account: str | None = Field(None, description="Slurm account")
    gpus_per_task: int = Field(1, ge=0, description="GPUs per run")
    cpus_per_task: int | None = Field(None, gt=0, description="CPU cores per run")
    time: int | str = Field(240, description="time limit per run: minutes, or H:MM:SS")
    mem: str | None = Field(None, description="memory per run, e.g. 32G")
    additional: dict[str, Any] = Field(default_factory=dict, description="further sbatch options")

    @field_validator("time")
    @classmethod
    def _minutes(cls, value: int | str) -> int | str:
        time_minutes(value)
        return value


def time_minutes(value: int | str) -> int:
    """240 → 240; "4:00:00" → 240; "90" → 90."""
    if isinstance(value, int):
        return value
    parts = str(value).strip().split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise ValueError(f"time {value!r} is not minutes or H:MM:SS")
    numbers = [int(p) for p in parts]
    if len(numbers) == 1:
        return numbers[0]
    hours, minutes, seconds = ([0] * (3 - len(numbers)) + numbers) if len(numbers) == 3 else (0, *numbers)
    return hours * 60 + minutes + (1 if seconds else 0)


DEV_LOSS = "dev_loss"  # select.metric: the lowest dev loss a run logged


class SelectSpec(BaseModel):
    """A sweep's `select:` section (studies/selection.py runs it)."""

    model_config = ConfigDict(extra="forbid")

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="settings to choose among")
    within: list[str] = Field(
        default_factory=lambda: ["method.kind", "method.variant"], description="keys of the groups"
    )
    metric: str = Field("BLEU", description="a dev report column (higher wins) or dev_loss (lower wins)")
    seeds: list[int] = Field(default_factory=list, description="seeds trained for each winner")
    test: bool = Field(
        True,
        description="decode test for the winners' runs (false: a choice only, e.g. a rate another "
        "sweep fixes, so no test score is seen before that sweep's claims are declared)",
    )

    @field_validator("grid")
    @classmethod
    def _values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"select.grid key {key!r} has no values")
        return grid

    def rule(self) -> str:
        direction = "lowest dev loss" if self.metric == DEV_LOSS else f"highest dev {self.metric}"
        grid = "; ".join(f"{k} in {v}" for k, v in self.grid.items()) or "no grid (cases only)"
        return f"within {', '.join(self.within)}: {direction} (mean over the grid's seeds), among {grid}"


class SweepFile(BaseModel):
    """What a sweep file may hold (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    base: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    cases: list[dict[str, Any]] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
    select: SelectSpec | None = None
    claims: list[ClaimSpec] = Field(default_factory=list)


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its config file, its overrides (as `peftrun train` takes them) and folder."""

    name: str
    base: Path
    overrides: tuple[str, ...]
    values: dict[str, Any]  # the dotted keys this point sets → values (names and reports)
    run_dir: Path
    setting: str = ""  # the name less its seed suffix: the runs of one setting share it
    seed: int | None = None
    selected_seed: bool = False  # a seed of `select.seeds`: trained only for a winning setting
    tuned: bool = True  # False: a case with `select: false` (a group of its own, nothing chosen)


@dataclass
class Sweep:
    path: Path
    text: str
    name: str
    folder: Path  # <root>/<name>
    spec: SweepFile
    cli_overrides: list[str]
    points: list[Point] = field(default_factory=list)


def load(path: str | Path, root: str | Path = "runs", cli_overrides: list[str] | None = None) -> Sweep:
    """Read and expand a sweep file (no model, no data: nothing is checked against them yet)."""
    path = Path(path)
    data = read_yaml(path)
    if not data:
        raise PeftrunError(f"{path} is empty: a sweep needs at least `base:` and a `grid:` or `cases:`")
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        problem = unknown_key(loc, data, SweepFile) if first["type"] == "extra_forbidden" else first["msg"]
        where = "" if first["type"] == "extra_forbidden" else f"{'.'.join(loc)}: "
        raise PeftrunError(f"sweep file {path}: {where}{problem}") from None
    name = spec.name or path.stem
    sweep = Sweep(
        path, path.read_text(encoding="utf-8"), name, Path(root) / name, spec, list(cli_overrides or [])
    )
    sweep.points = expand(sweep)
    return sweep


def _product(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def expand(sweep: Sweep) -> list[Point]:
    """grid × cases × seeds → points, in that nesting (cases outermost, seeds innermost).

    With `select:`, every case (but those with `select: false`) also takes every setting of
    `select.grid`, each point decodes dev only, and each setting gets `select.seeds` as extra points
    (trained only if the setting wins: sweep.py decides)."""
    spec, here = sweep.spec, sweep.path.parent
    cases = spec.cases or [{}]
    if spec.base is None and not all("base" in case for case in cases):
        raise PeftrunError(f"sweep file {sweep.path}: give `base:` (a config), or a `base` in every case")
    for key, values in spec.grid.items():
        if not values:
            raise PeftrunError(f"sweep file {sweep.path}: grid key {key!r} has no values")
    select = spec.select
    if select is not None:
        repeated = sorted(set(select.seeds) & set(spec.seeds))
        if repeated:
            raise PeftrunError(
                f"sweep file {sweep.path}: seed {repeated[0]} is in both seeds and select.seeds"
            )
    grid = _product(spec.grid)
    raw: list[tuple[Path, dict[str, Any], int | None, bool, bool]] = []
    for case in cases:
        case = dict(case)
        base = here / str(case.pop("base", spec.base))
        if select is None and "select" in case:
            raise PeftrunError(f"sweep file {sweep.path}: a case sets select: but the sweep has no select:")
        tuned = case.pop("select", True)
        if tuned not in (True, False):
            raise PeftrunError(f"sweep file {sweep.path}: a case's select: is true or false (got {tuned!r})")
        settings = _product(select.grid) if select is not None and tuned else [{}]
        fixed = {"decode.splits": ["dev"]} if select is not None else {}
        for point in grid:
            for setting in settings:
                values = {**_dotted(spec.set), **_dotted(case), **point, **setting, **fixed}
                extra = select.seeds if select is not None else []
                for seed in [*(spec.seeds or [None]), *extra]:
                    seeded = values if seed is None else {**values, "train.seed": seed}
                    raw.append((base, seeded, seed, seed in extra, tuned))
    names = _names([(base, values) for base, values, *_ in raw], len({r[0] for r in raw}) > 1)
    points = []
    for (base, values, seed, selected_seed, tuned), name in zip(raw, names, strict=True):
        overrides = tuple(f"{key}={json.dumps(value)}" for key, value in values.items()) + tuple(
            sweep.cli_overrides
        )
        suffix = f"seed{seed}" if seed is not None else None
        folder = "-".join(part for part in (name, suffix) if part) or "run"
        points.append(
            Point(folder, base, overrides, values, sweep.folder / folder, name, seed, selected_seed, tuned)
        )
    return points


def _dotted(mapping: dict[str, Any]) -> dict[str, Any]:
    """Keys as written: dotted keys stay; a nested mapping stays whole (it replaces its section)."""
    return {str(key): value for key, value in mapping.items()}


def _leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar leaves by full dotted key (for naming: method: {kind: x} → method.kind)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, full + "."))
        else:
            out[full] = value
    return out


def _names(points: list[tuple[Path, dict[str, Any]]], several_bases: bool) -> list[str]:
    """Readable names from what varies between points (train.seed gets its own suffix)."""
    leaves = []
    for base, values in points:
        flat = {k: v for k, v in _leaves(values).items() if k != "train.seed"}
        if several_bases:
            flat = {"base": base.stem, **flat}
        leaves.append(flat)
    keys = list(dict.fromkeys(k for flat in leaves for k in flat))
    varied = [k for k in keys if len({json.dumps(flat.get(k), sort_keys=True) for flat in leaves}) > 1]
    short = {k: k.rsplit(".", 1)[-1] for k in varied}
    clashing = {s for s in short.values() if list(short.values()).count(s) > 1}
    short = {k: (k if s in clashing else s) for k, s in short.items()}
    names = []
    for flat in leaves:
        parts = [f"{short[k]}={_slug(flat[k])}" for k in varied if k in flat]
        name = "-".join(parts)
        if len(name.encode()) > MAX_NAME:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            name = name.encode()[: MAX_NAME - 9].decode("utf-8", "ignore") + "-" + digest
        names.append(name)
    # Different points with the same visible values (only absent keys differ): add a hash.
    seen: dict[str, set[str]] = {}
    for name, flat in zip(names, leaves, strict=True):
        seen.setdefault(name, set()).add(json.dumps(flat, sort_keys=True))
    names = [
        f"{name}-{hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:6]}"
        if len(seen[name]) > 1
        else name
        for name, flat in zip(names, leaves, strict=True)
    ]
    return names


def _slug(value: Any) -> str:
    if isinstance(value, str):  # PyYAML reads 5e-5 as a string; the config reads it as a number
        try:
            value = float(value)
        except ValueError:
            pass
    text = f"{value:g}" if isinstance(value, float) else str(value)
    # Keep a trailing mark visible ("table-to-text:" → "table-to-text_" ≠ "table-to-text").
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip("_") or "_"
