"""Figures of a report (`studies/report.py`), PNG and PDF, with matplotlib's Agg backend.

- `loss.{png,pdf}`: training loss and dev loss against the update step, one colour per row (group),
  one line per run;
- `dev-curves.{png,pdf}` (only when runs logged a dev curve, `train.decode_every`): each key metric
  of the dev curve against the update step, one panel per metric (the primary one, BLEU for E2E,
  first), one line per row: the mean over the row's seeds at each step, in a band of ± their sample
  std;
- `<metric-keys>-vs-<key>.{png,pdf}`: for each numeric key that varies (data.train_size → the
  paper's low-data figure, method.prefix_len → its prefix-length figure), each key metric against it,
  mean with error bars of the sample std over seeds, one line per combination of the other keys.
  Rows without that key (full fine-tuning beside prefix lengths) are dashed horizontal lines.

matplotlib is imported here only, when figures are asked for.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.runs import Run
from peftrun.studies.report_data import Report, Row


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PeftrunError("--plots needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label(group: dict[str, Any], keys: list[str] | None = None) -> str:
    keys = list(group) if keys is None else keys
    shown = {k: "—" if group[k] is None else group[k] for k in keys}
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in shown.items()) or "all runs"


def numeric_keys(report: Report) -> list[str]:
    """Group keys whose values are numbers (ignoring rows without the key), with two or more values."""
    out = []
    for key in report.keys:
        values = [row.group[key] for row in report.rows if row.group[key] is not None]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and len(set(values)) > 1:
            out.append(key)
    return out


def write(report: Report, folder: Path) -> list[Path]:
    """Write every figure of the report into `folder`; returns the files written."""
    plt = pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = _save(plt, loss_figure(plt, report), folder / "loss")
    if curve_columns(report):
        written += _save(plt, curve_figure(plt, report), folder / "dev-curves")
    for key in numeric_keys(report):
        written += _save(plt, metric_figure(plt, report, key), folder / f"metrics-vs-{key}")
    return written


def _save(plt, figure, stem: Path) -> list[Path]:
    paths = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]
    figure.savefig(paths[0], dpi=150, bbox_inches="tight")
    figure.savefig(paths[1], bbox_inches="tight")
    plt.close(figure)
    return paths


def _colours(plt, count: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if count <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(count)]


def loss_figure(plt, report: Report):
    figure, (train_ax, dev_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for row, colour in zip(report.rows, _colours(plt, len(report.rows)), strict=True):
        name = label(row.group, report.keys)
        for index, record in enumerate(row.runs):
            log = Run(record.path).read_log()
            train = [(line["step"], line["loss"]) for line in log if "loss" in line]
            dev = [(line["step"], line["dev_loss"]) for line in log if "dev_loss" in line]
            shown = name if index == 0 else None  # one legend entry per row
            alpha = 0.85 if len(row.runs) == 1 else 0.6
            if train:
                marker = "o" if len(train) <= 30 else None  # a short log is dots, not an invisible line
                train_ax.plot(
                    *zip(*train, strict=True),
                    color=colour,
                    alpha=alpha,
                    lw=1.2,
                    marker=marker,
                    ms=3,
                    label=shown,
                )
            if dev:
                dev_ax.plot(*zip(*dev, strict=True), color=colour, alpha=alpha, lw=1.2, marker="o", ms=3)
    train_ax.set(title="training loss (one line per run)", xlabel="update step", ylabel="loss")
    dev_ax.set(title="dev loss", xlabel="update step", ylabel="dev loss")
    for ax in (train_ax, dev_ax):
        ax.grid(alpha=0.3)
    if report.rows:
        figure.legend(loc="lower center", ncol=min(3, len(report.rows)), fontsize=8, frameon=False)
        figure.subplots_adjust(bottom=0.24 + 0.05 * ((len(report.rows) - 1) // 3))
    figure.suptitle(f"{report.dataset}: losses by group", y=1.02)
    return figure


def metric_figure(plt, report: Report, key: str):
    quality = [c for c in report.columns if c.quality]
    figure, axes = plt.subplots(1, len(quality), figsize=(3.2 * len(quality), 3.4), squeeze=False)
    others = [k for k in report.keys if k != key]
    series: dict[str, list[Row]] = {}
    for row in report.rows:
        series.setdefault(label(row.group, others), []).append(row)
    values = [row.group[key] for row in report.rows if row.group[key] is not None]
    log_x = min(values) > 0 and max(values) / min(values) >= 10
    colours = _colours(plt, len(series))
    for ax, col in zip(axes[0], quality, strict=True):
        for (name, rows), colour in zip(series.items(), colours, strict=True):
            points = sorted(
                (row.group[key], *row.stats(col.name)[:2])
                for row in rows
                if row.group[key] is not None and row.stats(col.name)[0] is not None
            )
            if points:
                xs, means, stds = zip(*points, strict=True)
                errors = [0.0 if s is None else s for s in stds]
                ax.errorbar(xs, means, yerr=errors, color=colour, marker="o", ms=4, capsize=3, label=name)
            for row in rows:  # no such key here (another method): a reference line
                mean = row.stats(col.name)[0]
                if row.group[key] is None and mean is not None:
                    ax.axhline(mean, color=colour, ls="--", lw=1, label=f"{name} (no {key})")
        ax.set(title=col.label, xlabel=key)
        if log_x:
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(values)), [str(v) for v in sorted(set(values))])
            ax.minorticks_off()
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if len(labels) > 1 or (labels and labels[0] != "all runs"):
        figure.legend(
            handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False
        )
        figure.subplots_adjust(bottom=0.28 + 0.06 * ((len(labels) - 1) // 3), wspace=0.35)
    figure.suptitle(f"{report.dataset} {report.split}: key metrics vs {key} (mean ± std over seeds)", y=1.04)
    return figure


def dev_curve(row: Row, metric: str) -> dict[int, list[float]]:
    """The row's dev-curve values of one metric (train_log.jsonl's `dev_scores` lines), by update
    step: one value per run that logged that step."""
    by_step: dict[int, list[float]] = {}
    for record in row.runs:
        for line in Run(record.path).read_log():
            value = (line.get("dev_scores") or {}).get(metric)
            if isinstance(value, (int, float)):
                by_step.setdefault(line["step"], []).append(float(value))
    return by_step


def curve_columns(report: Report) -> list:
    """The report's key metrics that some run's dev curve holds (in the report's column order)."""
    quality = [c for c in report.columns if c.quality and c.where == "scores"]
    return [c for c in quality if any(dev_curve(row, c.source) for row in report.rows)]


def curve_figure(plt, report: Report):
    columns = curve_columns(report)
    figure, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.4), squeeze=False)
    colours = _colours(plt, len(report.rows))
    for ax, col in zip(axes[0], columns, strict=True):
        for row, colour in zip(report.rows, colours, strict=True):
            points = sorted(dev_curve(row, col.source).items())
            if not points:
                continue
            steps = [step for step, _ in points]
            means = [col.scale * statistics.fmean(values) for _, values in points]
            stds = [col.scale * statistics.stdev(values) if len(values) > 1 else 0.0 for _, values in points]
            n = max(len(values) for _, values in points)
            name = f"{label(row.group, report.keys)} (n={n})"
            marker = "o" if len(steps) <= 30 else None
            ax.plot(steps, means, color=colour, lw=1.4, marker=marker, ms=3, label=name)
            if n > 1:
                low = [m - s for m, s in zip(means, stds, strict=True)]
                high = [m + s for m, s in zip(means, stds, strict=True)]
                ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0)
        ax.set(title=col.label, xlabel="update step", ylabel=f"dev {col.label}")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if labels:
        figure.legend(
            handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False
        )
        figure.subplots_adjust(bottom=0.28 + 0.06 * ((len(labels) - 1) // 3), wspace=0.35)
    figure.suptitle(f"{report.dataset}: dev curves (greedy, mean ± std over seeds)", y=1.04)
    return figure
