"""Runs made before a config key existed keep working: their resolved configs (written by peftrun
before the protocol keys: data.format, data.source_prefix, decode.sample, train.decode_every, ...)
resolve again to the same text and the same run hash, so `peftrun train` resumes or skips them and
`peftrun sweep` does not call their folders "a different run". The fixtures are the resolved
configs the earlier peftrun (commit ccd4031) wrote for shipped configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from peftrun import config
from peftrun.run_states import Opening
from peftrun.runs import Run

FIXTURES = Path(__file__).parent / "fixtures" / "resolved-before-protocol"
HASHES = json.loads((FIXTURES / "hashes.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(HASHES))
def test_an_old_resolved_config_resolves_to_the_same_text_and_hash(name):
    text = (FIXTURES / f"{name}.yaml").read_text(encoding="utf-8")
    cfg = config.build(yaml.safe_load(text))
    assert cfg.to_yaml() == text
    assert cfg.short_hash() == HASHES[name]


def test_an_old_finished_run_is_done_for_the_new_peftrun(tmp_path):
    text = (FIXTURES / "tiny-prefix.yaml").read_text(encoding="utf-8")
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    (run_dir / "config.resolved.yaml").write_text(text, encoding="utf-8")
    (run_dir / "DONE").write_text("2026-12-01T00:00:00\n", encoding="utf-8")
    cfg = config.build(yaml.safe_load(text))
    _, opening = Run.prepare(run_dir, cfg.to_yaml(), overwrite=False)
    assert opening == Opening.DONE


def test_a_new_key_set_away_from_its_default_is_written_and_changes_the_hash():
    text = (FIXTURES / "tiny-prefix.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["data"]["source_prefix"] = "table-to-text:"
    cfg = config.build(data)
    assert "source_prefix: 'table-to-text:'" in cfg.to_yaml()
    assert cfg.short_hash() != HASHES["tiny-prefix"]
