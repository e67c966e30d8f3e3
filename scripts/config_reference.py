"""The config reference (markdown) from the pydantic models' fields and descriptions.

python scripts/config_reference.py           print it
python scripts/config_reference.py --write   replace docs/configs.md's copy (between its markers)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from peftrun.config import Config
from peftrun.methods import REGISTRY


def rows(model: type[BaseModel], prefix: str) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        if isinstance(default, BaseModel):
            continue
        shown = "required" if default is PydanticUndefined else f"`{default!r}`"
        annotation = (
            str(field.annotation)
            .replace("typing.", "")
            .replace("<class '", "")
            .replace("'>", "")
            .replace("|", "\\|")
        )
        out.append(f"| `{prefix}{name}` | `{annotation}` | {shown} | {field.description or ''} |")
    return out


PAGE = Path(__file__).resolve().parent.parent / "docs" / "configs.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def reference() -> str:
    lines = [
        "| key | type | default | meaning |",
        "|---|---|---|---|",
        "| `name` | `str \\| None` | `None` | run name (default: dataset-model-method); the run dir adds a config hash |",  # noqa: E501
    ]
    for section in ("model", "data", "train", "decode", "output"):
        lines += rows(Config.model_fields[section].annotation, f"{section}.")
    for kind, entry in REGISTRY.items():
        options = entry.options
        lines.append(f"| `method.kind: {kind}` | | | {' '.join((options.__doc__ or '').split())} |")
        lines += rows(options, "method.")
    return "\n".join(lines)


def spliced(page: str) -> str:
    """docs/configs.md with the reference between its markers replaced by the current one."""
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(spliced(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(reference())
