"""Config keys added after runs existed (`later_field`): kept apart from `peftrun.config` so that
method options, which `peftrun.config` imports, can declare such keys too."""

from __future__ import annotations

from typing import Any

from pydantic import Field

# A key added after runs were made. At its default (which must mean the old behaviour) it is left
# out of the resolved config and of the run hash, so a run or sweep made before the key existed
# resumes, skips and reports unchanged; set to anything else, it is written like any other key.
OMIT_AT_DEFAULT = {"omit_at_default": True}


def later_field(default: Any, description: str, **constraints: Any) -> Any:
    """A Field for a key added after runs existed (see OMIT_AT_DEFAULT)."""
    return Field(default, description=description, json_schema_extra=OMIT_AT_DEFAULT, **constraints)
