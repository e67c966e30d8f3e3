"""Options of LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peftrun.errors import PeftrunError
from peftrun.methods.options import MethodOptions
from peftrun.models import ArchSummary

LORA_TARGETS: tuple[str, ...] = ("q", "k", "v", "o")


class LoRAOptions(MethodOptions):
    """LoRA (Hu et al. 2021): W x + (alpha/r)·B·A x on the chosen attention projections."""

    kind: Literal["lora"] = "lora"
    rank: int = Field(4, gt=0, description="rank r of the update B·A")
    alpha: float = Field(32.0, gt=0, description="scale numerator: the update is multiplied by alpha/r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch's input")
    targets: tuple[str, ...] = Field(
        ("q", "v"), description="attention projections to adapt: q, k, v, o (paper: q, v)"
    )
    merge: bool = Field(False, description="after loading, fold B·A into the base weights for inference")

    def check(self, arch: ArchSummary) -> None:
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise PeftrunError(
                f"method.targets={list(self.targets)} is not a non-empty list of distinct "
                f"projections; valid ones: {', '.join(LORA_TARGETS)}"
            )
