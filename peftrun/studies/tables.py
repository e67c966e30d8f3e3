"""A report (`studies/report.py`) as text: Markdown, CSV, LaTeX (booktabs) or JSON.

Every format holds the same numbers, on the paper's print scale (E2E BLEU, METEOR, ROUGE-L ×100;
NIST, CIDEr raw; XSum ROUGE as stored). Markdown and LaTeX state the scale, the BLEU variant and
the significance test in a caption; JSON gives each row its `scale` (the factor applied to the
stored score) and `split`; CSV has one column per number.

JSON: a list of rows, each
    {"group": {key: value}, "n": int, "runs": [run dirs],
     "metrics": {name: {"mean": float|null, "std": float|null, "values": [float]}},
     "best": [metrics where this row has the best mean],
     "significance": {metric: null (the best row) | {"best_better": bool, "p": float|null, "pairs": int}},
     "missing": [{"run_dir", "state", "error"}], "split": str, "scale": {name: factor}}
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.studies.report_data import Column, Report, Row
from peftrun.studies.significance import THRESHOLD

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
    return (
        f"Mean ± sample std (n runs) over train.seed and data.subset_seed, {report.split} split. "
        f"Scale: {scale}. {variant}Bold: best mean. {DAGGER}: the best row is significantly better "
        f"than this row: one-sided paired bootstrap over {report.split} instances (Koehn 2004), pooled over "
        f"the seeds both rows ran, {report.samples} resamples, seed 0; best − row > 0 in ≥ {THRESHOLD:.0%} "
        "of resamples (p ≤ 0.05). Costs: trainable and stored parameters in % of the base model; "
        "training time (s); training tokens/s."
    )


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
            cells.append(f"{text} ({n})" + (f" {DAGGER}" if _dagger(row, col) else ""))
        lines.append("| " + " | ".join([*group, *cells, _missing(row)]) + " |")
    missing = [r for row in report.rows for r in row.missing]
    if missing:
        lines += ["", "Not finished (shown, never averaged):"]
        lines += [f"- {r.state}: `{r.path}`" + (f" ({r.error})" if r.error else "") for r in missing]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [*report.keys, "n"]
    for col in report.columns:
        header += [col.name, f"{col.name}_std", f"{col.name}_n"]
        header += [f"{col.name}_best_better", f"{col.name}_p"] if col.quality else []
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
            cells.append(rf"{number}{mark}\,{{\scriptsize {spread}({n})}}")
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
                "missing": [
                    {"run_dir": str(r.path), "state": r.state, "error": r.error} for r in row.missing
                ],
                "split": report.split,
                "scale": report.scale,
            }
        )
    return out


def to_json(report: Report) -> str:
    return json.dumps(rows_json(report), indent=2, ensure_ascii=False) + "\n"
