"""Scoring outside a training run: re-score a run, score any outputs file, compare two runs.

`peftrun eval` calls these; a run's own decode-and-score step calls `score_records` too, so a
run's metrics and a re-score are the same code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.runs import RESOLVED, Outputs, Run


def log(message: str) -> None:
    import typer

    typer.echo(message, err=True)


def score_records(
    run: Outputs,
    split: str,
    dataset: str,
    reference_style: str,
    references: list[list[str]] | None = None,
    into: Outputs | None = None,
) -> dict[str, Any]:
    """Score `run`'s stored predictions of `split` (against their own references, or against
    `references`, one list per record) and write metrics/SPLIT.json into `into` (default: `run`)."""
    from peftrun.metrics import score

    records = run.read_predictions(split)
    refs = [r["references"] for r in records] if references is None else references
    report = score(dataset, [r["output"] for r in records], refs)
    for note in report.notes:
        log(f"note: {note}")
    payload = {
        "split": split,
        "dataset": dataset,
        "reference_style": reference_style,
        "instances": len(records),
        "scores": report.scores,
        **output_lengths(records),
        "scorers": report.scorers,
        "notes": report.notes,
        "per_example": report.per_example,
    }
    (into or run).write_metrics(split, payload)
    return payload


def output_lengths(records: list[dict[str, Any]]) -> dict[str, float]:
    """empty_pct (% of outputs with no text but whitespace), and output_tokens_mean (generated
    tokens, EOS excluded) and truncated_pct (% of outputs the token limit cut before an EOS) when
    every record holds them (predictions written before they were recorded do not)."""
    if not records:
        return {}
    lengths = {"empty_pct": 100.0 * sum(not str(r.get("output", "")).strip() for r in records) / len(records)}
    tokens = [r.get("output_tokens") for r in records]
    cut = [r.get("truncated") for r in records]
    if not all(isinstance(t, int) and isinstance(c, bool) for t, c in zip(tokens, cut, strict=True)):
        return lengths
    return {
        "output_tokens_mean": sum(tokens) / len(tokens),
        "truncated_pct": 100.0 * sum(cut) / len(cut),
        **lengths,
    }


def open_run(run_dir: str | Path):
    """A finished or unfinished run directory and its resolved config."""
    from peftrun import config as config_module

    run = Run(Path(run_dir))
    if not run.resolved_config_path.is_file():
        raise PeftrunError(f"{run.path} is not a peftrun run directory (no {RESOLVED})")
    return run, config_module.load(run.resolved_config_path)


BLEU_VARIANTS = {"perl": ("BLEU", "NIST"), "py": ("BLEU_py", "NIST_py")}


def rescore(
    run_dir: str | Path,
    reference_style: str | None = None,
    bleu: str | None = None,
    decode: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Score a run's stored predictions again (`decode`: those of its decode RUN/decodes/NAME).
    Without `reference_style`: against the references they were decoded with, into their own
    metrics/ (as their decode did). With it (E2E: raw or tokenized): against that style's
    references, into rescores/STYLE/metrics/ beside them (their own metrics are never touched).
    `bleu` (perl or py) keeps only that BLEU/NIST variant in the returned scores (the file keeps
    both)."""
    if bleu is not None:
        bleu_variant({"scores": {}}, bleu)  # an unknown variant fails before any scoring
    run, cfg = open_run(run_dir)
    outputs = run
    if decode is not None:
        outputs = run.decoded(decode)
        if not outputs.exists:
            known = ", ".join(run.decode_names()) or "none"
            raise PeftrunError(f"{run.path} has no decode named {decode!r} (its decodes: {known})")
    splits = outputs.prediction_splits()
    if not splits:
        raise PeftrunError(f"{outputs.path} has no predictions yet; run `peftrun decode {run.path}`")
    if reference_style is None:
        results = {s: score_records(outputs, s, cfg.data.dataset, cfg.data.reference_style) for s in splits}
    else:
        results = {s: _rescore_against(outputs, cfg, s, reference_style) for s in splits}
    return results if bleu is None else {s: bleu_variant(r, bleu) for s, r in results.items()}


def _rescore_against(run: Outputs, cfg, split: str, style: str) -> dict[str, Any]:
    """The `split` predictions of a run (or of one of its decodes) scored against `style`
    references, written apart."""
    references = style_references(run.read_predictions(split), cfg, split, style, run.path)
    return score_records(run, split, "e2e", style, references, into=run.rescored(style))


def style_references(
    records: list[dict[str, Any]], cfg, split: str, style: str, where: Path
) -> list[list[str]]:
    """Each E2E prediction record's references in `style` (raw or tokenized), found by its id."""
    from peftrun import data
    from peftrun.data.e2e import REFERENCE_STYLES

    if cfg.data.dataset != "e2e":
        raise PeftrunError(f"--reference-style is for E2E runs; {where} is a {cfg.data.dataset} run")
    if style not in REFERENCE_STYLES:
        raise PeftrunError(f"--reference-style {style!r}: choose {' or '.join(REFERENCE_STYLES)}")
    instances = data.load_instances(cfg.data.model_copy(update={"reference_style": style}), split)
    by_id: dict[Any, list[str] | None] = {}
    for instance in instances:  # an id met twice cannot say which references are meant
        by_id[instance.id] = None if instance.id in by_id else list(instance.references)
    references = [by_id.get(r["id"]) for r in records]
    if any(refs is None for refs in references):
        missing = next(r["id"] for r, refs in zip(records, references, strict=True) if refs is None)
        raise PeftrunError(
            f"{where}: its {split} prediction {missing!r} matches no single {split} instance; "
            "it cannot be scored against other references"
        )
    return references


def bleu_variant(result: dict[str, Any], bleu: str) -> dict[str, Any]:
    """A metrics payload whose scores keep only one BLEU/NIST variant (perl: BLEU, NIST; py:
    BLEU_py, NIST_py), in the order BLEU, NIST, then the rest."""
    if bleu not in BLEU_VARIANTS:
        raise PeftrunError(f"--bleu {bleu!r}: choose perl (mteval, the default) or py (the -p variant)")
    keep = BLEU_VARIANTS[bleu]
    drop = {name for variant in BLEU_VARIANTS.values() for name in variant} - set(keep)
    scores = result["scores"]
    ordered = {k: scores[k] for k in keep if k in scores}
    ordered.update({k: v for k, v in scores.items() if k not in drop and k not in ordered})
    return {**result, "scores": ordered, "bleu": bleu}


def read_outputs(path: Path) -> list[str]:
    """An outputs file: one output per line (.txt), or JSONL objects with an `output` field."""
    from peftrun.files import read_utf8

    lines = read_utf8(path, "outputs file").splitlines()
    if path.suffix != ".jsonl":
        return lines
    outputs = []
    for number, line in enumerate(lines, 1):
        try:
            outputs.append(json.loads(line)["output"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PeftrunError(f"{path}:{number}: expected a JSON object with an 'output' field") from None
    return outputs


def score_file(
    path: Path, dataset: str, split: str, reference_style: str, references: Path | None = None
) -> dict[str, Any]:
    """Score any outputs file against a dataset split's references (official order), or against
    a references file."""
    from peftrun import data
    from peftrun.config import DataConfig
    from peftrun.data.references import read_references
    from peftrun.metrics import score

    if references is not None:
        refs, source = read_references(Path(references)), str(references)
    else:
        try:
            data_cfg = DataConfig(dataset=dataset, reference_style=reference_style)
        except ValueError:
            raise PeftrunError(
                "--dataset must be e2e or xsum and --reference-style raw or tokenized"
            ) from None
        refs, source = (
            [list(i.references) for i in data.load_instances(data_cfg, split)],
            f"{dataset} {split}",
        )
    outputs = read_outputs(Path(path))
    if len(outputs) != len(refs):
        raise PeftrunError(
            f"{path} has {len(outputs)} outputs; {source} has {len(refs)} instances (expected {len(refs)}, one per instance, in order)"  # noqa: E501
        )
    empty = sum(1 for o in outputs if not o.strip())
    if empty:
        log(f"warning: {empty} empty outputs (scored as empty)")
    report = score(dataset, outputs, refs)
    for note in report.notes:
        log(f"note: {note}")
    return {
        "split": split,
        "dataset": dataset,
        "references": source,
        "reference_style": reference_style,
        "scores": report.scores,
        "scorers": report.scorers,
        "notes": report.notes,
    }


def _dataset(run: Run) -> str:
    """A run's dataset from its resolved config; a folder of predictions alone is taken as E2E."""
    from peftrun import config as config_module

    if not run.resolved_config_path.is_file():
        return "e2e"
    return config_module.load(run.resolved_config_path).data.dataset


def compare_runs(
    run_a: str | Path, run_b: str | Path, split: str, samples: int, seed: int
) -> list[dict[str, Any]]:
    """Paired bootstrap (Koehn 2004) of B − A over the N instances both runs decoded (E2E: the suite
    re-scored per resample; XSum: its stored per-instance ROUGE), with a two-sided p. One run against
    one run is one seed pair: the instance-level test, which says nothing about seed variation
    (`seeds_resampled`: false; `peftrun report` resamples the seeds)."""
    from peftrun.metrics.bootstrap import paired_bootstrap, paired_bootstrap_means

    runs = [Run(Path(run_a)), Run(Path(run_b))]
    datasets = {_dataset(run) for run in runs}
    if len(datasets) > 1:
        raise PeftrunError(f"{run_a} and {run_b} are runs of different datasets; compare runs of one")
    records_a, records_b = (run.read_predictions(split) for run in runs)
    if [r["id"] for r in records_a] != [r["id"] for r in records_b]:
        raise PeftrunError(
            f"{run_a} and {run_b} decoded different {split} instances; compare runs of the same split"
        )
    if datasets == {"xsum"}:  # ROUGE is a mean of instance scores: the stored ones are tested
        stored = [(run.read_metrics().get(split) or {}).get("per_example") or {} for run in runs]
        if not all(stored):
            raise PeftrunError(f"{run_a} or {run_b} has no per-instance {split} ROUGE scores to compare")
        results = paired_bootstrap_means(stored[0], stored[1], samples=samples, seed=seed)
        return [result.summary() for result in results.values()]
    results = paired_bootstrap(
        [r["output"] for r in records_a],
        [r["output"] for r in records_b],
        [r["references"] for r in records_a],
        samples=samples,
        seed=seed,
    )
    return [result.summary() for result in results.values()]
