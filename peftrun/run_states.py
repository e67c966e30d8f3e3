"""The words for where a run stands, in one place: a run directory's status (`peftrun ls`, the
report), what a sweep says of each point, and how `peftrun train` opens a run directory.

`StrEnum` members are their strings: they compare equal to them, print and format as them and are
written to JSON as them, so meta.json, sweep.json and `--json` output read exactly as before.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Where a run stands. A run directory's status is one of the first four (`Run.status`); a sweep
    also says NEW (no directory yet), OTHER_CONFIG, and, for one invocation, SKIPPED, INTERRUPTED and
    NOT_STARTED; a report shows a sweep point with no run directory as MISSING."""

    DONE = "done"  # DONE written: trained, decoded, scored
    RUNNING = "running"  # its lock is held by a live process
    FAILED = "failed"  # stopped on an error (meta.json's `error` says which)
    INCOMPLETE = "incomplete"  # interrupted: running `peftrun train` again resumes it
    NEW = "new"  # nothing there yet
    OTHER_CONFIG = "other-config"  # its folder holds a run of another config
    SKIPPED = "skipped"  # DONE before this sweep invocation
    INTERRUPTED = "interrupted"  # stopped by a signal in this invocation (resumes)
    NOT_STARTED = "not-started"  # never started in this invocation (fail-fast, Ctrl-C)
    MISSING = "missing"  # a sweep point whose run directory does not exist


class Opening(StrEnum):
    """What `peftrun train` does with the run directory it is given (`Run.prepare`): not a state of
    the run, a decision about it."""

    NEW = "new"  # start afresh (nothing, or only a killed start's leftovers, is there)
    RESUME = "resume"  # same config, unfinished: continue from the last checkpoint
    DONE = "done"  # same config, finished: nothing to train
    OVERWRITE = "overwrite"  # --overwrite: remove what is there and start afresh
    RECOVER = "recover"  # --resume-from-last-good: continue with changed train.* settings
