"""Options of the in-context learning baseline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peftrun.methods.options import MethodOptions


class ICLOptions(MethodOptions):
    """In-context learning (Brown et al. 2020): k training examples prepended; nothing trains."""

    kind: Literal["icl"] = "icl"
    k: int = Field(5, ge=0, description="demonstrations per input (fewer when they do not fit the positions)")
    seed: int = Field(0, description="seed of the draw of demonstrations from the training set")
