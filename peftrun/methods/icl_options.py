"""Options of the in-context learning baseline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peftrun.later_keys import later_field
from peftrun.methods.options import MethodOptions


class ICLOptions(MethodOptions):
    """In-context learning (Brown et al. 2020): k training examples prepended; nothing trains."""

    kind: Literal["icl"] = "icl"
    k: int = Field(5, ge=0, description="demonstrations per input (fewer when they do not fit the positions)")
    seed: int = Field(0, description="seed of the draw of demonstrations from the training set")
    draw: Literal["fixed", "per-seed"] = later_field(
        "fixed",
        "fixed: every train.seed gets the draw of method.seed; per-seed: the draw's seed is train.seed "
        "(method.seed unused), so the seeds of a row see different demonstrations",
    )

    def draw_seed(self, train_seed: int) -> int:
        """The seed of the demonstrations' draw in a run with `train_seed`."""
        return train_seed if self.draw == "per-seed" else self.seed
