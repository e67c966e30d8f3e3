"""The README's set-up promise that a tool can check: its test command is the one CI runs."""

from __future__ import annotations

import re

from conftest import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"The test command is `([^`]+)`", readme).group(1)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command == "python3 -m pytest -q"
    assert any(line.strip() == command for line in ci.splitlines())
    assert f"&& {command}" in readme  # the set-up's second command
