"""Per-method options, validated with the rest of the config (pydantic, no torch).

Each tuning method declares its options here as one small pydantic model whose `kind` names it;
`MethodOptions` is the tagged union the config uses. Phase-two checks (against the model's
architecture, known without weights) live in each class's `check` method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from peftrun.errors import PeftrunError


@dataclass(frozen=True)
class ArchSummary:
    """What validation needs to know of a model, read from its config (no weights)."""

    family: str  # "gpt2" | "bart"
    n_layer: int  # decoder layers (GPT-2: all layers)
    n_encoder_layer: int  # 0 for decoder-only models
    hidden: int
    n_head: int
    max_positions: int

    @property
    def is_encoder_decoder(self) -> bool:
        return self.n_encoder_layer > 0


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self, arch: ArchSummary) -> None:
        """Raise PeftrunError when these options cannot apply to `arch`."""


class FullOptions(_Options):
    """Full fine-tuning: every weight of the model is trained."""

    kind: Literal["full"] = "full"


class PrefixOptions(_Options):
    """Prefix-tuning (Li & Liang 2021): a trained key/value prefix at every attention layer."""

    kind: Literal["prefix"] = "prefix"
    prefix_len: int = Field(10, gt=0, description="prefix positions L per attention kind")
    mlp_hidden: int = Field(
        512, gt=0, description="middle size of the reparametrisation MLP (paper: 512 E2E, 800 XSum)"
    )
    reparametrize: bool = Field(True, description="train P = MLP(P') (the paper) instead of P directly")
    position_offset: bool | None = Field(
        None,
        description="number real tokens from prefix_len (as the original GPT-2 code did via "
        "past_key_values); default: on for GPT-2, off for BART",
    )
    frozen_dropout: bool = Field(
        False, description="keep the frozen model's dropout on while training (off: eval mode)"
    )

    def check(self, arch: ArchSummary) -> None:
        if self.position_offset and arch.family != "gpt2":
            raise PeftrunError(
                "method.position_offset applies to GPT-2 only (the original BART code numbered "
                "real tokens from 0); remove it"
            )
        if self.prefix_len >= arch.max_positions:
            raise PeftrunError(
                f"method.prefix_len={self.prefix_len} does not fit the model's "
                f"{arch.max_positions} positions; use a shorter prefix"
            )


class TopKOptions(_Options):
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


class BitFitOptions(_Options):
    """BitFit (Ben Zaken et al. 2022): only bias terms train."""

    kind: Literal["bitfit"] = "bitfit"


class FeatureExtractionOptions(_Options):
    """Frozen model; only a new (untied) output head and the final norm train."""

    kind: Literal["feature-extraction"] = "feature-extraction"


LORA_TARGETS: tuple[str, ...] = ("q", "k", "v", "o")


class LoRAOptions(_Options):
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


class AdapterOptions(_Options):
    """Bottleneck adapters: Lin et al. 2020 (`lin`, one per block) or Houlsby et al. 2019 (two)."""

    kind: Literal["adapter"] = "adapter"
    layout: Literal["lin", "houlsby"] = Field(
        "lin",
        description="lin: one adapter (LayerNorm inside) on each block's output (the paper); "
        "houlsby: one on the attention and one on the FFN sublayer output",
    )
    bottleneck: int | None = Field(None, gt=0, description="bottleneck size b (set this or target_fraction)")
    target_fraction: float | None = Field(
        None, gt=0, lt=1, description="choose b so the adapters are about this fraction of the base model"
    )
    nonlinearity: Literal["relu", "gelu"] = Field("relu", description="between down and up projections")

    @model_validator(mode="after")
    def _one_size(self) -> AdapterOptions:
        if (self.bottleneck is None) == (self.target_fraction is None):
            raise ValueError(
                "set exactly one of method.bottleneck and method.target_fraction "
                "(e.g. bottleneck: 6, or target_fraction: 0.001)"
            )
        return self


# One line per method: its `kind` and its options class.
OPTIONS_BY_KIND: dict[str, type[_Options]] = {
    "full": FullOptions,
    "prefix": PrefixOptions,
    "top-k": TopKOptions,
    "bitfit": BitFitOptions,
    "feature-extraction": FeatureExtractionOptions,
    "lora": LoRAOptions,
    "adapter": AdapterOptions,
}
METHOD_KINDS: tuple[str, ...] = tuple(OPTIONS_BY_KIND)
MethodOptions = Annotated[Union[tuple(OPTIONS_BY_KIND.values())], Field(discriminator="kind")]  # noqa: UP007
