"""The shipped synthetic XSum-format sample is exactly what its generator writes, and reads as XSum."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

from peftrun.data import xsum

SAMPLE = ROOT / "data" / "xsum-synthetic"
FILES = ("train.jsonl", "dev.jsonl", "test.jsonl", "urls.txt")


def test_the_generator_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    script = ROOT / "scripts" / "make_synthetic_xsum.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes(), name


def test_it_reads_as_xsum_and_both_extrapolation_splits_have_both_sides():
    files = {split: str(SAMPLE / f"{split}.jsonl") for split in ("train", "dev", "test")}
    sizes = {split: len(xsum.load_instances(files, split)) for split in files}
    assert sizes == {"train": 400, "dev": 60, "test": 60}
    for extrapolation in ("news-to-sports", "within-news"):
        for split in ("train", "test"):
            kept = xsum.load_pairs(files, split, url_file=SAMPLE / "urls.txt", extrapolation=extrapolation)
            assert 0 < len(kept) < sizes[split]
