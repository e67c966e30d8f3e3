"""`<sweep folder>/selection.json` (studies/selection.py decides what it holds): written by `peftrun
sweep`, read by `peftrun report` to keep the settings that did not win out of the test table and to
print the dev grid under it. Kept apart from selection.py so that the report needs nothing of the
sweep's machinery."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.files import read_json, write_json

SELECTION = "selection.json"


class Record:
    """`<sweep folder>/selection.json`: the rule, the dev grid, winners, test decodes, reselections."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SELECTION
        self.data: dict[str, Any] = read_json(self.path) if self.path.is_file() else {}

    @property
    def winners(self) -> dict[str, str]:
        return dict(self.data.get("winners", {}))

    @property
    def test_decoded(self) -> list[str]:
        return list(self.data.get("test_decoded", []))

    def check_changes(self, winners: dict[str, str], reselect: bool) -> list[dict[str, Any]]:
        """Groups whose winner changed after their test was decoded: refused unless `reselect`."""
        changed = []
        decoded = set(self.test_decoded)
        for group, old in self.winners.items():
            new = winners.get(group)
            if new is not None and new != old and any(in_setting(n, old) for n in decoded):
                changed.append({"group": group, "from": old, "to": new, "at": _now()})
        if changed and not reselect:
            first = changed[0]
            raise PeftrunError(
                f"the selection changed after test was decoded: {first['group']} now picks {first['to']} "
                f"(was {first['from']}); pass --reselect to accept (the report will say so)"
            )
        return changed

    def save(self, spec, groups: dict[str, list[Any]], winners, undecided, changed) -> None:
        self.data.update(
            {
                "rule": spec.rule(),
                "metric": spec.metric,
                "within": spec.within,
                "grid": spec.grid,
                "seeds_added": spec.seeds,
                "updated": _now(),
                "groups": {
                    group: [
                        {"setting": s.key, "values": s.values, "dev_score": s.score, "runs": s.runs_done}
                        for s in settings
                    ]
                    for group, settings in groups.items()
                },
                "winners": winners,
                "undecided": undecided,
            }
        )
        if changed:
            self.data.setdefault("reselections", []).extend(changed)
        write_json(self.path, self.data)

    def add_test_decoded(self, name: str) -> None:
        names = self.test_decoded
        if name not in names:
            self.data["test_decoded"] = [*names, name]
            write_json(self.path, self.data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------- what the report reads


def in_setting(run_name: str, setting: str) -> bool:
    """Whether a run folder's name is one of the setting's runs: the name, or name-seed<k> (only the
    seed suffix: `lr=0.001` does not own `lr=0.001-seed=3-seed101`, another setting's run)."""
    seeded = re.escape(setting) + ("-" if setting else "") + r"seed-?\d+"
    return run_name == setting or re.fullmatch(seeded, run_name) is not None


def find_records(directories: list[Path]) -> dict[Path, dict[str, Any]]:
    """selection.json of every selection sweep under the folders (or that is one), by sweep folder."""
    found = {}
    for top in map(Path, directories):
        for path in [top / SELECTION, *top.rglob(SELECTION)]:
            if path.is_file():
                found[path.parent.resolve()] = read_json(path)
    return found


def is_unselected(run_path: Path, records: dict[Path, dict[str, Any]]) -> bool:
    """A run of a selection sweep whose setting did not win (its test is never decoded)."""
    record = records.get(run_path.parent.resolve())
    if record is None:
        return False
    return not any(in_setting(run_path.name, key) for key in record.get("winners", {}).values())


def markdown(records: dict[Path, dict[str, Any]]) -> list[str]:
    """Each selection sweep's dev grid: every setting's dev score, the winner in bold."""
    lines: list[str] = []
    for folder, record in sorted(records.items()):
        lines += [
            "",
            f"### Selection on dev ({folder.name}): {record.get('rule', '')}",
            "",
            f"| group | setting | dev {record.get('metric', '')} (mean over the grid's seeds) | runs "
            "| selected |",
            "|---|---|---:|---:|---|",
        ]
        winners = record.get("winners", {})
        for group, settings in record.get("groups", {}).items():
            for s in settings:
                won = winners.get(group) == s["setting"]
                score = "—" if s["dev_score"] is None else f"{s['dev_score']:.4g}"
                score = f"**{score}**" if won else score
                lines.append(f"| {group} | {s['setting']} | {score} | {s['runs']} | {'yes' if won else ''} |")
        for group, why in record.get("undecided", {}).items():
            lines.append(f"\nNot decided for {group}: {why}.")
        for change in record.get("reselections", []):
            lines.append(
                f"\n**Reselected after test was decoded** ({change['at']}): {change['group']} "
                f"from {change['from']} to {change['to']} (`peftrun sweep --reselect`)."
            )
    return lines
