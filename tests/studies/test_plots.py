"""`peftrun report --plots`: loss curves and metric-vs-key figures, PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import e2e_scores, make_run
from typer.testing import CliRunner

from peftrun.cli import app

pytest.importorskip("matplotlib")
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
