"""Options of prefix-tuning and its ablations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peftrun.errors import PeftrunError
from peftrun.families import ArchSummary
from peftrun.methods.options import MethodOptions


class PrefixOptions(MethodOptions):
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
        "past_key_values; rotary models: their position_ids); default: on for GPT-2 and Llama-style "
        "prefixes, off for BART and infixes",
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

    def needs_tokenizer_check(self) -> bool:
        return self.init_phrase is not None and self.prefix_len is not None

    def check_tokens(self, tokenizer) -> int | None:
        """The prefix length an init_phrase gives (its token count; None without a phrase): a
        different prefix_len is a mistake, and so is a phrase of no tokens."""
        if self.init_phrase is None:
            return None
        count = len(phrase_ids(tokenizer, self.init_phrase))
        if count == 0:
            raise PeftrunError(f"method.init_phrase={self.init_phrase!r} has no tokens")
        if self.prefix_len not in (None, count):
            raise PeftrunError(
                f"method.prefix_len={self.prefix_len}, but init_phrase {self.init_phrase!r} is {count} "
                "tokens and the prefix takes its length; remove prefix_len"
            )
        return count

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
        if self.position_offset and (not arch.shifts_positions or self.variant == "infix"):
            raise PeftrunError(
                "method.position_offset applies to GPT-2 prefixes only (of the families here: those whose "
                "family shifts positions; the original BART code numbered real tokens from 0; an infix "
                "takes real positions itself); remove it"
            )
        if self.prefix_len is not None and self.prefix_len >= arch.max_positions:
            raise PeftrunError(
                f"method.prefix_len={self.prefix_len} does not fit the model's "
                f"{arch.max_positions} positions; use a shorter prefix"
            )


def phrase_ids(tokenizer, phrase: str) -> list[int]:
    """The phrase's tokens as they appear inside text after a word, however the tokenizer marks a
    word's start (GPT-2/BART byte-level BPE: a leading space; "table-to-text:" is 6 tokens,
    "summarize" 1): the tokens of "a " + phrase after those of "a"."""
    context = tokenizer("a", add_special_tokens=False)["input_ids"]
    joint = tokenizer("a " + phrase, add_special_tokens=False)["input_ids"]
    if joint[: len(context)] == context:
        return joint[len(context) :]
    return tokenizer(" " + phrase, add_special_tokens=False)["input_ids"]  # merged across the space
