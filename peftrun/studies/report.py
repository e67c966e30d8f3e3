"""`peftrun report`: one results table from many run directories (the paper's tables).

    DIR... ─ walk ─> run dirs + sweep.json points ─ group by what varies ─> rows ─ tables.py / plots.py
                     (done, failed, incomplete, missing)   (seeds collapsed)   (mean ± std (n), †)

- collect: every run directory under each DIR (recursively), and every point of every `sweep.json`
  found there, so a point whose run never started is shown as missing rather than dropped;
- group: the flattened resolved configs are compared; the keys that vary (or `--by`) define the
  rows. `train.seed` and `data.subset_seed` are collapsed, `name` and `output.*` ignored; a varied
  key that only restates others (method.mlp_hidden beside method.kind) adds no row and is dropped;
- aggregate: each cell is mean ± sample standard deviation (n) over the finished runs of the row,
  on the paper's print scale (E2E BLEU, METEOR, ROUGE-L ×100; NIST, CIDEr raw; XSum as stored);
- significance (`studies/significance.py`): per metric, the best row against every other row.

Reads run directories only, and needs neither torch nor Java.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.files import read_json
from peftrun.run_states import RunState
from peftrun.runs import Run, is_run_dir
from peftrun.studies.jobs import MANIFEST
from peftrun.studies.report_data import SEEDS, Column, Report, Row, RunRecord
from peftrun.studies.significance import mark_significance
from peftrun.studies.values import canon as _canon
from peftrun.studies.values import sort_key

BLEU_VARIANTS = {"perl": ("BLEU", "NIST"), "py": ("BLEU_py", "NIST_py")}


def columns(dataset: str, bleu: str = "perl") -> list[Column]:
    """The dataset's key metrics (E2E: BLEU, NIST, METEOR, ROUGE-L, CIDEr; XSum: ROUGE-1/2/L), then costs."""
    if bleu not in BLEU_VARIANTS:
        raise PeftrunError(f"--bleu {bleu!r}: choose perl (mteval, the default) or py (the -p variant)")
    if dataset == "xsum":
        quality = [Column(n, n, "scores", n) for n in ("ROUGE-1", "ROUGE-2", "ROUGE-L")]
    else:
        bleu_key, nist_key = BLEU_VARIANTS[bleu]
        quality = [
            Column("BLEU", "BLEU", "scores", bleu_key, 100.0, 1),
            Column("NIST", "NIST", "scores", nist_key),
            Column("METEOR", "METEOR", "scores", "METEOR", 100.0, 1),
            Column("ROUGE-L", "ROUGE-L", "scores", "ROUGE_L", 100.0, 1),
            Column("CIDEr", "CIDEr", "scores", "CIDEr"),
        ]
    costs = [
        Column("trainable_pct", "trainable %", "parameters", "trainable_pct", digits=3, quality=False),
        Column("stored_pct", "stored %", "parameters", "stored_pct", digits=3, quality=False),
        Column("train_seconds", "train s", "meta", "train_seconds", digits=0, quality=False),
        Column("tokens_per_s", "tokens/s", "meta", "tokens_per_s", digits=0, quality=False),
        # Output lengths from metrics/SPLIT.json (read_run lays them beside the scores); runs
        # scored before they were recorded have none ("—").
        Column("output_tokens_mean", "out tokens", "scores", "output_tokens_mean", digits=1, quality=False),
        Column("truncated_pct", "truncated %", "scores", "truncated_pct", digits=1, quality=False),
        Column("empty_pct", "empty %", "scores", "empty_pct", digits=1, quality=False),
    ]
    return quality + costs


# metrics/SPLIT.json keys beside "scores"
OUTPUT_LENGTHS = ("output_tokens_mean", "truncated_pct", "empty_pct")


def build(
    directories: list[Path],
    split: str = "test",
    by: list[str] | None = None,
    bleu: str = "perl",
    samples: int = 1000,
    decode: str | None = None,
    references: str | None = None,
) -> Report:
    """Collect, group, aggregate and test; raises when nothing finished. `decode`: read each run's
    RUN/decodes/NAME metrics and predictions instead of its own (a run without it is unfinished).
    `references` (E2E raw or tokenized): the scores those outputs got against that style's
    references (`peftrun eval RUN --reference-style STYLE`: rescores/STYLE beside them)."""
    from peftrun.studies import claims
    from peftrun.studies import selection_record as selection

    if references is not None:
        from peftrun.data.e2e import REFERENCE_STYLES

        if references not in REFERENCE_STYLES:
            raise PeftrunError(f"--reference-style {references!r}: choose {' or '.join(REFERENCE_STYLES)}")
    records = collect(directories, split, decode, references)
    selections = selection.find_records(directories)
    if split == "test":  # a setting that did not win on dev has no test, by design: not "missing"
        records = [r for r in records if not selection.is_unselected(r.path, selections)]
    finished = [r for r in records if r.finished]
    if not finished:
        counts = Counter(r.state for r in records)
        found = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no run directories"
        where = " ".join(str(d) for d in directories)
        what = f"{split} metrics" + (f" in a {decode} decode" if decode else "")
        what += f" re-scored against {references} references" if references else ""
        raise PeftrunError(f"no finished runs with {what} under {where} ({found})")
    datasets = sorted({str(r.flat.get("data.dataset")) for r in finished})
    if len(datasets) > 1:
        raise PeftrunError(
            f"runs of several datasets ({', '.join(datasets)}); report each one's folders apart"
        )
    if samples < 1:
        raise PeftrunError("--samples must be at least 1")
    complete = [r for r in records if not r.partial]
    fill_partial(records, complete)
    keys = resolve_keys(by, records) if by else varied_keys(complete)
    report = Report(datasets[0], split, bleu, samples, keys, columns(datasets[0], bleu), [])
    report.rows = aggregate(records, keys, report.columns)
    mark_significance(report)
    report.selection = selections
    report.decode, report.references = decode, references
    manifests = sorted({p.resolve() for top in map(Path, directories) for p in Path(top).rglob(MANIFEST)})
    specs, report.claim_notes = claims.declared(manifests, split)
    report.claims = claims.evaluate(report, specs)
    return report


# --------------------------------------------------------------------------- collect


def collect(
    directories: list[Path], split: str, decode: str | None = None, references: str | None = None
) -> list[RunRecord]:
    """Every run directory under the given folders, and every sweep point listed in a sweep.json there
    (`decode`, `references`: which of each run's numbers, see read_run)."""
    records: dict[Path, RunRecord] = {}
    manifests: list[Path] = []
    for top in map(Path, directories):
        if not top.exists():
            raise PeftrunError(f"{top} does not exist")
        for here, subdirs, files in os.walk(top):
            here_path = Path(here)
            if is_run_dir(here_path):
                records.setdefault(here_path.resolve(), read_run(here_path, split, decode, references))
                subdirs.clear()  # checkpoints, adapter, ...: nothing of ours below a run
                continue
            if MANIFEST in files:
                manifests.append(here_path / MANIFEST)
            subdirs.sort()
    for manifest in manifests:
        for record in manifest_points(manifest, records):
            records.setdefault(record.path.resolve(), record)
    return list(records.values())


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config with every key, the later-added ones at their defaults included (they are
    left out of config.resolved.yaml at their default), so a claim or `--by` can name them and old
    runs read as what they were; the stored values as they are if this peftrun cannot read them."""
    from peftrun import config as config_module

    try:
        return config_module.build(config).model_dump(mode="json")
    except PeftrunError:
        return config


def read_run(path: Path, split: str, decode: str | None = None, references: str | None = None) -> RunRecord:
    """A run directory as the report sees it: its config, status, meta and its `split` metrics
    (with `decode`, those of RUN/decodes/NAME: a finished run without them is "no NAME decode";
    with `references`, those of the same outputs re-scored against that reference style,
    rescores/STYLE beside them). The output lengths stored beside the scores (output_tokens_mean,
    truncated_pct) are read with them."""
    import yaml

    run = Run(path, writer=False)
    config = yaml.safe_load(run.resolved_config_path.read_text(encoding="utf-8"))
    meta, state = run.meta(), run.status()
    outputs = run if decode is None else run.decoded(decode)
    scored = outputs if references is None else outputs.rescored(references)
    metrics = scored.read_metrics().get(split) if state == RunState.DONE else None
    if state == RunState.DONE and metrics is None and references is not None and outputs.path.is_dir():
        state = f"no {split} metrics against {references} references"
    elif state == RunState.DONE and metrics is None:
        if decode is None:
            state = f"no {split} metrics"
        elif not outputs.path.is_dir():
            state = f"no {decode} decode"
        else:
            state = f"no {split} metrics in {decode} decode"
    scores = (metrics or {}).get("scores")
    if scores is not None:
        scores = {**scores, **{k: metrics[k] for k in OUTPUT_LENGTHS if k in metrics}}
    return RunRecord(
        path,
        state,
        flatten(with_defaults(config if isinstance(config, dict) else {})),
        meta.get("error"),
        scores,
        (metrics or {}).get("per_example") or {},
        meta,
        outputs_dir=None if decode is None else outputs.path,
        reference_style=references,
    )


def manifest_points(manifest: Path, records: dict[Path, RunRecord]) -> list[RunRecord]:
    """The manifest's points whose folder holds no run directory: missing runs, with their config."""
    data = read_json(manifest)
    points = data.get("points", [])
    by_folder = {p["name"]: p for p in points}
    out = []
    for point in points:
        # A point's run dir is <sweep folder>/<point name>; the recorded run_dir may be relative to
        # wherever the sweep was started, so it is found beside the manifest.
        path = manifest.parent / point["name"]
        if path.resolve() in records:
            continue
        siblings = [
            r
            for r in records.values()
            if r.path.parent.resolve() == manifest.parent.resolve()
            and by_folder.get(r.path.name, {}).get("base") == point.get("base")
        ]
        why = f"sweep.json says {point.get('state', '?')}" + (
            f": {point['error']}" if point.get("error") else ""
        )
        flat, partial = point_config(point, siblings)
        out.append(RunRecord(path, RunState.MISSING, flat, why, partial=partial))
    return out


def point_config(point: dict[str, Any], siblings: list[RunRecord]) -> tuple[dict[str, Any], bool]:
    """A sweep point's flattened config, and whether it is partial: resolved from its base and
    overrides when the base is readable from here, else a run of the same base with the point's
    values laid over it, else the point's values alone (partial)."""
    from peftrun import config as config_module

    values = point.get("values", {})
    try:
        cfg = config_module.load(point["base"], list(point["overrides"]))
        return flatten(cfg.model_dump(mode="json")), False
    except (PeftrunError, KeyError):
        pass
    if not siblings:
        return flatten(values), True
    flat = dict(siblings[0].flat)
    for key, value in values.items():
        if isinstance(value, dict):  # a whole section given: it replaces the section
            flat = {k: v for k, v in flat.items() if not k.startswith(key + ".")}
        flat.update(flatten({key: value}))
    return flat, False


def fill_partial(records: list[RunRecord], complete: list[RunRecord]) -> None:
    """Give partial configs the values every complete config shares, so they land in their row
    (and do not make model.name look varied)."""
    if not complete:
        return
    shared = {
        k: v
        for k, v in complete[0].flat.items()
        if all(k in r.flat and _canon(r.flat[k]) == _canon(v) for r in complete)
    }
    for record in records:
        if record.partial:
            record.flat = {**shared, **record.flat}


# --------------------------------------------------------------------------- group


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"method": {"kind": "prefix"}} → {"method.kind": "prefix"} (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def never_grouped(key: str) -> bool:
    return key in SEEDS or key == "name" or key.startswith("output.")


def _parts(records: list[RunRecord], keys: list[str]) -> int:
    # An absent key is unset (None): a config field added by a later peftrun, absent from the
    # resolved configs of runs made before it, does not split a study into rows.
    return len({tuple(_canon(r.flat.get(k)) for k in keys) for r in records})


def varied_keys(records: list[RunRecord]) -> list[str]:
    """The config keys whose values differ between runs, less those that only restate others."""
    all_keys = list(dict.fromkeys(k for r in records for k in r.flat))
    varied = [k for k in all_keys if not never_grouped(k) and _parts(records, [k]) > 1]
    # Keys every run has come first, so method.kind is kept and method.mlp_hidden (present only
    # for prefixes, and the same for all of them) is dropped as restating it.
    varied.sort(key=lambda k: not all(k in r.flat for r in records))
    kept: list[str] = []
    for key in varied:
        if _parts(records, [*kept, key]) > _parts(records, kept):
            kept.append(key)
    return sorted(kept, key=all_keys.index)


def resolve_keys(by: list[str], records: list[RunRecord]) -> list[str]:
    """`--by` keys: a full dotted key, or a unique last part (train_size → data.train_size)."""
    all_keys = list(dict.fromkeys(k for r in records for k in r.flat))
    keys = []
    for given in (part.strip() for item in by for part in item.split(",") if part.strip()):
        matches = [given] if given in all_keys else [k for k in all_keys if k.endswith("." + given)]
        if len(matches) != 1:
            hint = ", ".join(varied_keys(records)) or "none"
            what = "is ambiguous: " + ", ".join(matches) if matches else "is not a config key"
            raise PeftrunError(f"--by {given} {what} (keys that vary here: {hint})")
        if never_grouped(matches[0]):
            raise PeftrunError(
                f"--by {matches[0]}: seeds are collapsed and name/output.* ignored; pick another key"
            )
        keys.append(matches[0])
    return list(dict.fromkeys(keys))


def aggregate(records: list[RunRecord], keys: list[str], cols: list[Column]) -> list[Row]:
    rows: dict[tuple[str, ...], Row] = {}
    for record in sorted(records, key=lambda r: str(r.path)):
        group = {key: record.flat.get(key) for key in keys}
        row = rows.setdefault(tuple(_canon(v) for v in group.values()), Row(group))
        (row.runs if record.finished else row.missing).append(record)
    for row in rows.values():
        row.runs.sort(key=lambda r: (tuple(sort_key(v) for v in r.seed_key), str(r.path)))
        if identical_runs(row.runs):  # one run under several seeds: counted once
            row.runs, row.identical = row.runs[:1], row.runs[1:]
        for col in cols:
            row.values[col.name] = [v for v in (col.value(r) for r in row.runs) if v is not None]
    return sorted(rows.values(), key=lambda row: tuple(sort_key(v) for v in row.group.values()))


def identical_runs(runs: list[RunRecord]) -> bool:
    """Whether two or more finished runs are the same run (nothing trained and greedy decoding
    give it under every seed): the same stored scores and per-instance scores, and the same
    predictions (ids and outputs) on every split they decoded."""
    first = runs[0] if len(runs) > 1 else None
    if first is None or any(r.scores != first.scores or r.per_example != first.per_example for r in runs):
        return False
    try:
        splits = first.prediction_splits()
        outputs = [
            [[(p.get("id"), p.get("output")) for p in r.read_predictions(s)] for s in splits] for r in runs
        ]
    except (PeftrunError, OSError, ValueError):
        return False
    same_splits = all(r.prediction_splits() == splits for r in runs)
    return bool(splits) and same_splits and all(o == outputs[0] for o in outputs)
