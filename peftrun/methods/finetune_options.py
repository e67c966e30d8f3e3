"""Options of the fine-tuning baselines (full, top-k, BitFit, feature extraction)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from peftrun.errors import PeftrunError
from peftrun.families import ArchSummary
from peftrun.methods.options import MethodOptions


class _BaseWeightsOptions(MethodOptions):
    """A method that trains (some of) the base model's own weights."""

    trains_base_weights: ClassVar[bool] = True


class FullOptions(_BaseWeightsOptions):
    """Full fine-tuning: every weight of the model is trained."""

    kind: Literal["full"] = "full"


class TopKOptions(_BaseWeightsOptions):
    """Fine-tune only the top k transformer layers (+ the final norm): Li & Liang's FT-top2."""

    kind: Literal["top-k"] = "top-k"
    k: int = Field(gt=0, description="how many of the top (decoder) layers train (paper: 2)")
    train_embeddings: bool = Field(
        True,
        description="also train the token embedding (as the paper's FT-top2 did); GPT-2 and BART "
        "tie it to the LM head, so this trains both",
    )

    def check(self, arch: ArchSummary) -> None:
        if self.k > arch.n_layer:
            raise PeftrunError(
                f"method.k={self.k} exceeds the model's {arch.n_layer} (decoder) layers; "
                f"use k <= {arch.n_layer}"
            )


class BitFitOptions(_BaseWeightsOptions):
    """BitFit (Ben Zaken et al. 2022): only bias terms train."""

    kind: Literal["bitfit"] = "bitfit"


class FeatureExtractionOptions(_BaseWeightsOptions):
    """Frozen model; only a new (untied) output head and the final norm train."""

    kind: Literal["feature-extraction"] = "feature-extraction"
