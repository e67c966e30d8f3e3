"""The base of every method's options: validated with the rest of the config (pydantic, no torch).

Each method declares its options beside its implementation (`<method>_options.py`) as one small
pydantic model whose `kind` names it. Phase-two checks, against the model's architecture (known
without weights), live in each class's `check`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from peftrun.errors import PeftrunError
from peftrun.families import ArchSummary


class MethodOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    # Whether the method trains the base model's own weights (then there is no frozen base to keep
    # in bf16: `train.precision: bf16-frozen` is refused).
    trains_base_weights: ClassVar[bool] = False

    def check(self, arch: ArchSummary) -> None:
        """Raise PeftrunError when these options cannot apply to `arch`."""

    def needs_tokenizer_check(self) -> bool:
        """Whether `check_tokens` has something to check (a tokenizer is then loaded to validate)."""
        return False

    def check_tokens(self, tokenizer) -> None:
        """Raise PeftrunError when these options cannot apply with this tokenizer."""


def check_prompt_fits(name: str, length: int, arch: ArchSummary) -> None:
    """A soft prompt of `length` tokens must leave most of the model's positions to the input."""
    if length >= arch.max_positions // 2:
        raise PeftrunError(
            f"method.{name}={length} leaves too little of the model's {arch.max_positions} positions "
            f"for the input; use fewer than {arch.max_positions // 2}"
        )
