"""Options of LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peftrun.errors import PeftrunError
from peftrun.families import FAMILIES, ArchSummary
from peftrun.methods.options import MethodOptions

LORA_TARGETS: tuple[str, ...] = ("q", "k", "v", "o")  # attention projections: every family has them
ALL_LINEAR = "all-linear"  # shorthand: every target the family has (peft's name for it)


def family_targets(arch: ArchSummary) -> tuple[str, ...]:
    """The LoRA targets of the model's family: q, k, v, o and its feed-forward projections (a
    gated MLP's gate, up, down), in that order."""
    return LORA_TARGETS + tuple(FAMILIES[arch.family].ffn_projections)


class LoRAOptions(MethodOptions):
    """LoRA (Hu et al. 2021): W x + (alpha/r)·B·A x on the chosen attention projections."""

    kind: Literal["lora"] = "lora"
    rank: int = Field(4, gt=0, description="rank r of the update B·A")
    alpha: float = Field(32.0, gt=0, description="scale numerator: the update is multiplied by alpha/r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch's input")
    targets: tuple[str, ...] = Field(
        ("q", "v"),
        description="projections to adapt: q, k, v, o (paper: q, v); a gated MLP's gate, up, down "
        "(Llama-style families); all-linear: every one of them",
    )
    merge: bool = Field(False, description="after loading, fold B·A into the base weights for inference")

    def check(self, arch: ArchSummary) -> None:
        valid = family_targets(arch)
        unknown = [t for t in self.targets if t not in (*valid, ALL_LINEAR)]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise PeftrunError(
                f"method.targets={list(self.targets)} is not a non-empty list of distinct projections "
                f"of family {arch.family}; valid ones: {', '.join(valid)} (or {ALL_LINEAR})"
            )

    def resolved_targets(self, arch: ArchSummary) -> tuple[str, ...]:
        """The targets, with the all-linear shorthand spelled out as the family's own."""
        if ALL_LINEAR in self.targets:
            return family_targets(arch)
        return tuple(self.targets)
