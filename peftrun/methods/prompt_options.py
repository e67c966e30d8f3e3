"""Options of prompt tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peftrun.families import ArchSummary
from peftrun.methods.options import MethodOptions, check_prompt_fits


class PromptOptions(MethodOptions):
    """Prompt tuning (Lester et al. 2021): trained input embeddings prepended to the input only."""

    kind: Literal["prompt"] = "prompt"
    prompt_len: int = Field(20, gt=0, description="soft prompt tokens (BART: prepended to the encoder input)")
    init: Literal["random", "vocab"] = Field(
        "vocab",
        description="random: normal with the token embeddings' std; vocab: embeddings of tokens drawn "
        "from the 5,000 lowest ids (Lester et al.'s sampled-vocabulary init)",
    )

    def check(self, arch: ArchSummary) -> None:
        check_prompt_fits("prompt_len", self.prompt_len, arch)
