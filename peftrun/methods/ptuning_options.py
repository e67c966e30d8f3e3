"""Options of P-tuning v1."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peftrun.errors import PeftrunError
from peftrun.families import ArchSummary
from peftrun.methods.options import MethodOptions, check_prompt_fits


class PTuningOptions(MethodOptions):
    """P-tuning v1 (Liu et al. 2021): virtual token embeddings from a bi-LSTM + MLP prompt encoder."""

    kind: Literal["ptuning"] = "ptuning"
    prompt_len: int = Field(20, gt=0, description="virtual tokens (BART: prepended to the encoder input)")
    encoder_hidden: int | None = Field(
        None, gt=0, description="prompt encoder width (LSTM: half per direction); default: the model's"
    )
    lstm_layers: int = Field(2, gt=0, description="layers of the bidirectional LSTM (P-tuning: 2)")

    def check(self, arch: ArchSummary) -> None:
        check_prompt_fits("prompt_len", self.prompt_len, arch)
        if self.encoder_hidden is not None and self.encoder_hidden % 2:
            raise PeftrunError(
                f"method.encoder_hidden={self.encoder_hidden} must be even (two LSTM directions)"
            )
