"""Run states are one enum whose members are their strings: meta.json, sweep.json, `--json` output
and printed tables read exactly as the plain strings did."""

from __future__ import annotations

import json

from peftrun.run_states import Opening, RunState

# The words written to disk and printed before the enum existed (README, sweep.json, meta.json).
WORDS = {
    "done",
    "running",
    "failed",
    "incomplete",
    "new",
    "other-config",
    "skipped",
    "interrupted",
    "not-started",
    "missing",
}


def test_states_are_written_printed_and_compared_as_their_words():
    assert {state.value for state in RunState} == WORDS
    for state in RunState:
        assert state == state.value and json.dumps(state) == json.dumps(state.value)
        assert f"{state}" == state.value and f"{state:<12}" == f"{state.value:<12}"
        assert json.loads(json.dumps({"state": state})) == {"state": state.value}
        assert RunState(state.value) is state  # read back from JSON
    assert {opening.value for opening in Opening} == {"new", "resume", "done", "overwrite", "recover"}


def test_a_run_directorys_status_and_meta_json_keep_their_words(tmp_path):
    from peftrun.runs import Run

    run = Run(tmp_path / "run")
    run.path.mkdir()
    run.lock()
    assert run.status() == "running" and json.dumps(run.status()) == '"running"'
    run.update_meta(status=RunState.FAILED)
    run.unlock()
    assert json.loads((run.path / "meta.json").read_text())["status"] == "failed"
    assert run.status() == "failed"
    run.update_meta(status="done")
    assert run.status() == "incomplete"  # no DONE file: interrupted, it resumes
    run.finish()
    assert run.status() == "done" and json.loads((run.path / "meta.json").read_text())["status"] == "done"
