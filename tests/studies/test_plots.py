"""`peftrun report --plots`: loss curves and metric-vs-key figures, PNG and PDF."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
from report_helpers import e2e_scores, make_run
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.studies import plots
from peftrun.studies import report as reports

ErrorbarContainer = pytest.importorskip("matplotlib.container").ErrorbarContainer

runner = CliRunner()


def low_data_study(root: Path) -> Path:
    """Prefix vs full over train sizes (the paper's low-data figure), 3 subset seeds each."""
    for kind, lift in [("prefix", 0.04), ("full", 0.0)]:
        method = {"kind": "prefix", "prefix_len": 5} if kind == "prefix" else {"kind": "full"}
        for size in (50, 100, 200, 500):
            for subset_seed in (1, 2, 3):
                bleu = 0.30 + 0.05 * [50, 100, 200, 500].index(size) + lift + 0.01 * subset_seed
                steps = range(0, 60, 10)
                log = [
                    {"step": s, "loss": 4.0 / (1 + s / 20) + lift + 0.02 * subset_seed, "lr": 1e-4}
                    for s in steps
                ]
                log += [{"step": s, "dev_loss": 4.2 / (1 + s / 25) + lift} for s in (20, 40, 60)]
                make_run(
                    root / f"{kind}-n{size}-s{subset_seed}",
                    method=method,
                    data={"train_size": size, "subset_seed": subset_seed},
                    scores=e2e_scores(
                        bleu, METEOR=0.3 + bleu / 4, ROUGE_L=0.5 + bleu / 3, CIDEr=1 + bleu * 2
                    ),
                    log=log,
                )
    return root


def test_plots_are_written_as_png_and_pdf(tmp_path: Path):
    study = low_data_study(tmp_path / "runs")
    out = tmp_path / "figures"
    result = runner.invoke(app, ["report", str(study), "--plots", str(out), "--samples", "20"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "loss.pdf",
        "loss.png",
        "metrics-vs-data.train_size.pdf",
        "metrics-vs-data.train_size.png",
    ]
    for path in out.iterdir():
        head = path.read_bytes()[:8]
        assert path.stat().st_size > 5000 and head.startswith(
            b"\x89PNG" if path.suffix == ".png" else b"%PDF"
        )
    assert f"wrote {out / 'loss.png'}" in result.output


def metric_axes(root: Path, key: str) -> dict[str, Any]:
    """The metric-vs-key figure's axes by column title (matplotlib objects, read back)."""
    plt = plots.pyplot()
    figure = plots.metric_figure(plt, reports.build([root], samples=20), key)
    axes = {ax.get_title(): ax for ax in figure.axes}
    plt.close(figure)
    return axes


def error_bars(ax) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Each errorbar series on an axis: x, the plotted mean, and the half-length of its bar."""
    out = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            line, _, (bars,) = container.lines
            xs, ys = (list(map(float, v)) for v in line.get_data())
            halves = [float(seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments()]
            out[container.get_label()] = (xs, ys, halves)
    return out


# Print scale of each figure column, and how each stored score follows BLEU in low_data_study.
COLUMNS = {
    "BLEU": lambda bleu: 100 * bleu,
    "NIST": lambda bleu: 8.0 + bleu,
    "METEOR": lambda bleu: 100 * (0.3 + bleu / 4),
    "ROUGE-L": lambda bleu: 100 * (0.5 + bleu / 3),
    "CIDEr": lambda bleu: 1 + bleu * 2,
}


def test_error_bars_are_the_sample_std_over_seeds(tmp_path: Path):
    # docs/studies.md#formats-and-plots: metrics-vs-KEY plots the mean with std error bars; the std
    # is the sample std over the row's seeds (here three subset seeds, BLEU 0.01 apart: BLEU std 1.0
    # on the ×100 scale).
    study = low_data_study(tmp_path / "runs")
    axes = metric_axes(study, "data.train_size")
    assert set(axes) == set(COLUMNS)
    sizes = [50, 100, 200, 500]
    for title, shown in COLUMNS.items():
        series = error_bars(axes[title])
        assert set(series) == {"kind=prefix", "kind=full"}, title
        for kind, lift in [("prefix", 0.04), ("full", 0.0)]:
            xs, means, halves = series[f"kind={kind}"]
            assert xs == sizes
            for size, mean, half in zip(sizes, means, halves, strict=True):
                values = [shown(0.30 + 0.05 * sizes.index(size) + lift + 0.01 * s) for s in (1, 2, 3)]
                assert mean == pytest.approx(statistics.fmean(values), rel=1e-9), (title, kind, size)
                assert half == pytest.approx(statistics.stdev(values), rel=1e-6), (title, kind, size)
                assert half > 0


def test_a_key_absent_from_some_rows_draws_them_as_reference_lines(tmp_path: Path):
    for length in (1, 5, 10):
        for seed in (1, 2):
            make_run(
                tmp_path / f"prefix-{length}-{seed}",
                method={"kind": "prefix", "prefix_len": length},
                seed=seed,
                scores=e2e_scores(0.6 + length / 100),
            )
    make_run(tmp_path / "full", method={"kind": "full"}, scores=e2e_scores(0.62))
    out = tmp_path / "figures"
    result = runner.invoke(app, ["report", str(tmp_path), "--plots", str(out), "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert (out / "metrics-vs-method.prefix_len.png").stat().st_size > 5000
    # Full fine-tuning has no prefix length: in every column it is a dashed horizontal line across
    # the whole axis at its mean, not a point at some x; the prefix lengths are the x values.
    full_means = {"BLEU": 62.0, "NIST": 8.62, "METEOR": 45.0, "ROUGE-L": 70.0, "CIDEr": 2.4}
    axes = metric_axes(tmp_path, "method.prefix_len")
    assert set(axes) == set(full_means)
    for title, mean in full_means.items():
        ax = axes[title]
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(dashed) == 1, title
        (line,) = dashed
        assert line.get_label() == "kind=full (no method.prefix_len)"
        assert [float(y) for y in line.get_ydata()] == pytest.approx([mean, mean], rel=1e-12), title
        assert list(line.get_xdata()) == [0, 1] and line.get_transform() == ax.get_yaxis_transform()
        series = error_bars(ax)
        assert set(series) == {"kind=prefix"}, title  # full is not a point
        assert series["kind=prefix"][0] == [1, 5, 10]


def curve_study(root: Path) -> Path:
    """Two rows with a dev curve (train.decode_every) over three seeds each, one row without."""
    for kind, lift in [("prefix", 0.1), ("full", 0.0)]:
        method = {"kind": "prefix", "prefix_len": 5} if kind == "prefix" else {"kind": "full"}
        for seed in (1, 2, 3):
            log = [{"step": s, "loss": 3.0, "lr": 1e-4} for s in (10, 20, 30)]
            log += [
                {
                    "step": s,
                    "epoch": 0,
                    "dev_scores": {
                        "BLEU": curve_bleu(s, lift, seed),
                        "NIST": 2.0 + s / 10,
                        "ROUGE_L": 0.4,
                        "CIDEr": 1.0,
                    },
                    "dev_decode_size": 64,
                }
                for s in (10, 20, 30)
            ]
            make_run(
                root / f"{kind}-{seed}",
                method=method,
                seed=seed,
                scores=e2e_scores(0.6 + 0.01 * seed),
                log=log,
            )
    make_run(root / "lora", method={"kind": "lora", "rank": 2}, scores=e2e_scores(0.5))  # no curve
    return root


def curve_bleu(step: int, lift: float, seed: int) -> float:
    return 0.2 + step / 100 + lift + 0.01 * seed


def test_dev_curves_are_the_mean_and_std_band_over_seeds_per_row(tmp_path: Path):
    study = curve_study(tmp_path / "runs")
    plt = plots.pyplot()
    figure = plots.curve_figure(plt, reports.build([study], samples=20))
    axes = {ax.get_title(): ax for ax in figure.axes}
    plt.close(figure)
    assert list(axes) == ["BLEU", "NIST", "ROUGE-L", "CIDEr"]  # the report's key metrics; no METEOR curve
    bleu = axes["BLEU"]
    lines = {line.get_label(): line for line in bleu.get_lines()}
    assert set(lines) == {"kind=prefix (n=3)", "kind=full (n=3)"}  # the row without a curve draws none
    bands = bleu.collections
    assert len(bands) == 2
    for kind, lift in [("prefix", 0.1), ("full", 0.0)]:
        line = lines[f"kind={kind} (n=3)"]
        assert list(line.get_xdata()) == [10, 20, 30]
        for step, mean in zip([10, 20, 30], line.get_ydata(), strict=True):
            values = [
                100 * curve_bleu(step, lift, seed) for seed in (1, 2, 3)
            ]  # BLEU on the report's x100 scale
            assert mean == pytest.approx(statistics.fmean(values), rel=1e-9)
            std = statistics.stdev(values)
            band = [b for b in bands if b.get_facecolor()[0][:3].tolist() == list(line.get_color()[:3])]
            (vertices,) = [p.vertices for p in band[0].get_paths()]
            at = sorted(float(y) for x, y in vertices if x == step)
            assert at[0] == pytest.approx(mean - std, rel=1e-9) and at[-1] == pytest.approx(
                mean + std, rel=1e-9
            )
    out = tmp_path / "figures"
    written = plots.write(reports.build([study], samples=20), out)
    assert {p.name for p in written} >= {"dev-curves.png", "dev-curves.pdf"}
    assert (out / "dev-curves.png").stat().st_size > 5000
