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
    """Prefix-tuning (Li & Liang 2021): a trained key/value prefix at every attention layer, and
    the paper's ablations (Sec. 7): embedding-only, infix, initialisation from a real phrase."""

    kind: Literal["prefix"] = "prefix"
    variant: Literal["every-layer", "embedding-only", "infix"] = Field(
        "every-layer",
        description="every-layer: keys/values at every layer (the method); embedding-only: trained "
        "activations at the input layer only, the frozen model computes the rest (EMB-L); infix: "
        "trained keys/values between source and target, [x; INFIX; y] (decoder-only; INFIX-L)",
    )
    prefix_len: int | None = Field(
        None,
        gt=0,
        description="prefix positions L per attention kind (default 10; with init_phrase, the phrase's "
        "token count)",
    )
    mlp_hidden: int = Field(
        512, gt=0, description="middle size of the reparametrisation MLP (paper: 512 E2E, 800 XSum)"
    )
    reparametrize: bool = Field(True, description="train P = MLP(P') (the paper) instead of P directly")
    position_offset: bool | None = Field(
        None,
        description="number real tokens from prefix_len (as the original GPT-2 code did via "
        "past_key_values); default: on for GPT-2 prefixes, off for BART and infixes",
    )
    frozen_dropout: bool = Field(
        False, description="keep the frozen model's dropout on while training (off: eval mode)"
    )
    init_phrase: str | None = Field(
        None,
        pattern=r"\S",
        description="start from a real phrase (paper, low-data: 'table-to-text:', 'summarize'): the MLP "
        "is fitted to the frozen model's activations for it before training",
    )
    init_steps: int = Field(500, gt=0, description="Adam steps of that fit (paper: 500)")
    init_lr: float = Field(1e-4, gt=0, description="learning rate of that fit (paper: 1e-4)")

    def check(self, arch: ArchSummary) -> None:
        if self.variant == "infix" and arch.is_encoder_decoder:
            raise PeftrunError(
                "method.variant=infix is defined for decoder-only models ([x; INFIX; y] in one "
                "sequence); BART reads x and y in separate stacks: use every-layer or embedding-only"
            )
        if self.variant == "infix" and self.init_phrase is not None:
            raise PeftrunError(
                "method.init_phrase does not apply to an infix (its activations depend on the input "
                "before it); remove init_phrase or use variant every-layer or embedding-only"
            )
        if self.position_offset and (arch.family != "gpt2" or self.variant == "infix"):
            raise PeftrunError(
                "method.position_offset applies to GPT-2 prefixes only (the original BART code numbered "
                "real tokens from 0; an infix takes real positions itself); remove it"
            )
        if self.prefix_len is not None and self.prefix_len >= arch.max_positions:
            raise PeftrunError(
                f"method.prefix_len={self.prefix_len} does not fit the model's "
                f"{arch.max_positions} positions; use a shorter prefix"
            )


class PromptOptions(_Options):
    """Prompt tuning (Lester et al. 2021): trained input embeddings prepended to the input only."""

    kind: Literal["prompt"] = "prompt"
    prompt_len: int = Field(20, gt=0, description="soft prompt tokens (BART: prepended to the encoder input)")
    init: Literal["random", "vocab"] = Field(
        "vocab",
        description="random: normal with the token embeddings' std; vocab: embeddings of tokens drawn "
        "from the 5,000 lowest ids (Lester et al.'s sampled-vocabulary init)",
    )

    def check(self, arch: ArchSummary) -> None:
        _fits("prompt_len", self.prompt_len, arch)


class PTuningOptions(_Options):
    """P-tuning v1 (Liu et al. 2021): virtual token embeddings from a bi-LSTM + MLP prompt encoder."""

    kind: Literal["ptuning"] = "ptuning"
    prompt_len: int = Field(20, gt=0, description="virtual tokens (BART: prepended to the encoder input)")
    encoder_hidden: int | None = Field(
        None, gt=0, description="prompt encoder width (LSTM: half per direction); default: the model's"
    )
    lstm_layers: int = Field(2, gt=0, description="layers of the bidirectional LSTM (P-tuning: 2)")

    def check(self, arch: ArchSummary) -> None:
        _fits("prompt_len", self.prompt_len, arch)
        if self.encoder_hidden is not None and self.encoder_hidden % 2:
            raise PeftrunError(
                f"method.encoder_hidden={self.encoder_hidden} must be even (two LSTM directions)"
            )


class ICLOptions(_Options):
    """In-context learning (Brown et al. 2020): k training examples prepended; nothing trains."""

    kind: Literal["icl"] = "icl"
    k: int = Field(5, ge=0, description="demonstrations per input (fewer when they do not fit the positions)")
    seed: int = Field(0, description="seed of the draw of demonstrations from the training set")


def _fits(name: str, length: int, arch: ArchSummary) -> None:
    if length >= arch.max_positions // 2:
        raise PeftrunError(
            f"method.{name}={length} leaves too little of the model's {arch.max_positions} positions "
            f"for the input; use fewer than {arch.max_positions // 2}"
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
    "prompt": PromptOptions,
    "ptuning": PTuningOptions,
    "icl": ICLOptions,
}
METHOD_KINDS: tuple[str, ...] = tuple(OPTIONS_BY_KIND)
MethodOptions = Annotated[Union[tuple(OPTIONS_BY_KIND.values())], Field(discriminator="kind")]  # noqa: UP007
