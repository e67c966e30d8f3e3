"""A report (`studies/report.py`) as text: Markdown, CSV, LaTeX (booktabs) or JSON.

Every format holds the same numbers, on the paper's print scale (E2E BLEU, METEOR, ROUGE-L ×100;
NIST, CIDEr raw; XSum ROUGE as stored). Markdown and LaTeX state the scale, the BLEU variant and
the significance test in a caption; JSON gives each row its `scale` (the factor applied to the
stored score) and `split`; CSV has one column per number.

JSON: {"rows": [row, ...], "claims": [claim, ...], "selection": {sweep folder: selection.json}}, each row
    {"group": {key: value}, "n": int, "runs": [run dirs],
     "metrics": {name: {"mean": float|null, "std": float|null, "values": [float]}},
     "best": [metrics where this row has the best mean],
     "significance": {metric: null (the best row) | {
         "best_better": bool (the best row ahead at the reported two-sided p ≤ 0.05),
         "p": float|null (two-sided; Holm-adjusted over the row's non-primary metrics),
         "p_raw": float|null (two-sided, unadjusted), "delta": float|null (best − row, print scale),
         "ci": [low, high]|null (95% percentile interval of best − row), "instances": int (N),
         "seed_pairs": int (S; 0: no test), "pairs": int (= seed_pairs, its former name),
         "seeds_resampled": bool (false: one seed pair, the instance-level test only)}},
     "identical_runs": [run dirs identical to the row's one run: counted once],
     "missing": [{"run_dir", "state", "error"}], "split": str, "scale": {name: factor}}
and each claim (studies/claims.py, one per claim and metric)
    {"claim", "kind": better|parity|trend, "metric", "mean_a", "mean_b", "estimate", "ci": [low, high],
     "p" (Holm-adjusted over the claim's metrics; null for parity), "p_raw", "verdict":
     held|reversed|inconclusive, "instances", "seed_pairs": [S per comparison], "detail"}.
Markdown prints the claims and each selection sweep's dev grid under the table.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.studies.report_data import Column, Report, Row
from peftrun.studies.significance import ALPHA, LEAST_SEED_PAIRS, primary_metric

FORMATS = ("md", "csv", "latex", "json")
DAGGER = "†"


def render(report: Report, fmt: str) -> str:
    writers = {"md": markdown, "csv": to_csv, "latex": latex, "json": to_json}
    if fmt not in writers:
        raise PeftrunError(f"--format {fmt!r}: choose md, csv, latex or json")
    return writers[fmt](report)


def caption(report: Report) -> str:
    if report.dataset == "e2e":
        scale = "BLEU, METEOR, ROUGE-L ×100; NIST, CIDEr raw"
        variant = (
            "BLEU/NIST: mteval-v13a Perl (the official default; `--bleu py`: the -p variant the paper used). "
            if report.bleu == "perl"
            else "BLEU/NIST: the official script's Python -p variant (BLEU_py, NIST_py), as the paper. "
        )
    else:
        scale, variant = "ROUGE F1 ×100", ""
    primary = primary_metric(report) or "none"
    return (
        f"Mean ± sample std (n runs) over train.seed and data.subset_seed, {report.split} split"
        + (f" as each run's re-decode `decodes/{report.decode}` scored it" if report.decode else "")
        + (f", re-scored against the {report.references} references" if report.references else "")
        + "; a row "
        f"whose runs are identical (nothing trained, greedy decoding) is one run. Scale: {scale}. "
        f"{variant}Bold: best mean. p: the best row against this row, two-sided, by a two-level paired "
        f"bootstrap (Koehn 2004; Davison & Hinkley 1997 §3.8): each of {report.samples} resamples "
        f"(seed 0) draws the {report.split} instances with replacement, keeping every seed's output of "
        "an instance together, and draws the seed pairs (runs paired by train.seed and "
        "data.subset_seed) with replacement. "
        f"{DAGGER}: p ≤ {ALPHA} with the best row ahead; p of the primary metric ({primary}) as is, of "
        "the other metrics Holm-adjusted within the row. With one seed pair only instances are "
        "resampled (the instance-level test); when one seed pair of S disagrees, p ≥ 2/S^S, so seeds "
        f"that disagree are never significant below {LEAST_SEED_PAIRS} seed pairs. Costs: trainable "
        "and stored parameters in % of the base model; training time (s); training tokens/s; out "
        "tokens: mean generated tokens per output (EOS excluded); truncated %: outputs that hit the "
        "token limit without an EOS."
    )


def p_text(p: float) -> str:
    """p as a cell shows it: p<0.001, p=0.004, p=0.030, p=0.45."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"


def _p_of(row: Row, col: Column) -> float | None:
    sig = row.significance.get(col.name)
    return sig["p"] if sig else None


def instance_level_note(report: Report) -> str | None:
    """A note under the table on the comparisons that rest on one seed pair, and the cells not tested."""
    cells = [
        (row, name)
        for row in report.rows
        for name, sig in row.significance.items()
        if sig and sig["seed_pairs"] == 1
    ]
    untested = [
        (row, name)
        for row in report.rows
        for name, sig in row.significance.items()
        if sig and not sig["seed_pairs"]
    ]
    notes = []
    if cells:
        notes.append(
            f"Note: {len(cells)} comparison(s) rest on one seed pair: the instance-level test (seed "
            "variation not resampled; JSON `seeds_resampled`: false)."
        )
    if untested:
        notes.append(
            f"Note: {len(untested)} cell(s) show no p: not tested (no seed in common with the best row, "
            "or no per-instance scores over the same instances; JSON `seed_pairs`: 0)."
        )
    return " ".join(notes) or None


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"


def _dagger(row: Row, col: Column) -> bool:
    sig = row.significance.get(col.name)
    return bool(sig and sig["best_better"])


def _missing(row: Row) -> str:
    counts = Counter(r.state for r in row.missing)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _value_text(value: Any) -> str:
    return "—" if value is None else json.dumps(value) if not isinstance(value, str) else value


def markdown(report: Report) -> str:
    keys = report.keys or ["group"]
    header = [*keys, *(c.label for c in report.columns), "not finished"]
    lines = [
        f"*{caption(report)}*",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(keys) + "---:|" * len(report.columns) + "---|",
    ]
    for row in report.rows:
        group = [_value_text(row.group[k]) for k in report.keys] or ["(all runs)"]
        cells = []
        for col in report.columns:
            mean, std, n = row.stats(col.name)
            if mean is None:
                cells.append("—")
                continue
            text = _number(mean, col.digits) + (f" ± {_number(std, col.digits)}" if std is not None else "")
            text = f"**{text}**" if col.name in row.best else text
            p = _p_of(row, col)
            mark = "" if p is None else f" {p_text(p)}" + (DAGGER if _dagger(row, col) else "")
            cells.append(f"{text} ({n}){mark}")
        lines.append("| " + " | ".join([*group, *cells, _missing(row)]) + " |")
    note = instance_level_note(report)
    if note:
        lines += ["", note]
    missing = [r for row in report.rows for r in row.missing]
    if missing:
        lines += ["", "Not finished (shown, never averaged):"]
        lines += [f"- {r.state}: `{r.path}`" + (f" ({r.error})" if r.error else "") for r in missing]
    from peftrun.studies import claims
    from peftrun.studies import selection_record as selection

    lines += selection.markdown(report.selection)
    claim_lines = claims.markdown(report.claims, report.split, report.claim_notes)
    lines += ["", *claim_lines] if claim_lines else []
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [*report.keys, "n"]
    for col in report.columns:
        header += [col.name, f"{col.name}_std", f"{col.name}_n"]
        header += [f"{col.name}_best_better", f"{col.name}_p", f"{col.name}_instances"] if col.quality else []
        header += [f"{col.name}_seed_pairs"] if col.quality else []
    writer.writerow([*header, "not_finished", "runs"])
    for row in report.rows:
        cells: list[Any] = [_value_text(row.group[k]) for k in report.keys] + [len(row.runs)]
        for col in report.columns:
            mean, std, n = row.stats(col.name)
            cells += ["" if mean is None else f"{mean:.10g}", "" if std is None else f"{std:.10g}", n]
            if col.quality:
                sig = row.significance.get(col.name)
                p = sig["p"] if sig else None
                cells += [
                    "" if sig is None else str(sig["best_better"]).lower(),
                    "" if p is None else f"{p:.4g}",
                    "" if sig is None else sig["instances"],
                    "" if sig is None else sig["seed_pairs"],
                ]
        writer.writerow([*cells, _missing(row), ";".join(str(r.path) for r in row.runs)])
    return buffer.getvalue()


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
_LATEX |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "--", "`": ""}
_LATEX |= {"±": r"$\pm$", "†": r"$^\dagger$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "−": "$-$"}


def _tex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def latex(report: Report) -> str:
    keys = report.keys or ["group"]
    any_missing = any(row.missing for row in report.rows)
    spec = "l" * len(keys) + "r" * len(report.columns) + ("l" if any_missing else "")
    header = [*keys, *(c.label for c in report.columns)] + (["not finished"] if any_missing else [])
    lines = [
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _tex(caption(report)) + "}",
        r"\begin{tabular}{" + spec + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for row in report.rows:
        cells = [_tex(_value_text(row.group[k])) for k in report.keys] or ["(all runs)"]
        for col in report.columns:
            mean, std, n = row.stats(col.name)
            if mean is None:
                cells.append("--")
                continue
            number = _number(mean, col.digits).replace(",", "{,}")
            number = rf"\textbf{{{number}}}" if col.name in row.best else number
            spread = rf"$\pm$\,{_number(std, col.digits)}\," if std is not None else ""
            mark = r"$^\dagger$" if _dagger(row, col) else ""
            p = _p_of(row, col)
            p_small = "" if p is None else r"\," + _tex(p_text(p)).replace("<", r"$<$")
            cells.append(rf"{number}{mark}\,{{\scriptsize {spread}({n}){p_small}}}")
        cells += [_tex(_missing(row))] if any_missing else []
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\label{tab:report}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def rows_json(report: Report) -> list[dict[str, Any]]:
    out = []
    for row in report.rows:
        metrics = {}
        for col in report.columns:
            mean, std, _ = row.stats(col.name)
            metrics[col.name] = {"mean": mean, "std": std, "values": row.values.get(col.name, [])}
        out.append(
            {
                "group": row.group,
                "n": len(row.runs),
                "runs": [str(r.path) for r in row.runs],
                "metrics": metrics,
                "best": row.best,
                "significance": row.significance,
                "identical_runs": [str(r.path) for r in row.identical],
                "missing": [
                    {"run_dir": str(r.path), "state": r.state, "error": r.error} for r in row.missing
                ],
                "split": report.split,
                "scale": report.scale,
            }
        )
    return out


def to_json(report: Report) -> str:
    payload = {
        "rows": rows_json(report),
        "claims": [result.as_json() for result in report.claims],
        "selection": {str(folder): record for folder, record in report.selection.items()},
        "claim_notes": report.claim_notes,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
