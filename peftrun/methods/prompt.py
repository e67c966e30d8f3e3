"""Prompt tuning (Lester et al., EMNLP 2021, arXiv 2104.08691): L trained input embeddings.

The embeddings are the parameters themselves (no reparametrisation). Init (`method.init`):
`vocab`, Lester et al.'s sampled-vocabulary init — embeddings of L token ids drawn uniformly from
the 5,000 lowest ids (byte-level BPE ids grow roughly with rarity, standing in for their "5,000
most common tokens"); or `random`, normal with the token embeddings' standard deviation.
The mechanism (fillers, substitution) is `peftrun.methods.inject.soft_input`, storage
`peftrun.methods.soft_prompt`; our own code, because
HF peft's prompt tuning prepends to every input of an encoder-decoder model's forward and does
not run inside our token formats.
"""

from __future__ import annotations

import torch
from torch import nn

from peftrun.methods.base import trained_dtype
from peftrun.methods.prompt_options import PromptOptions
from peftrun.methods.soft_prompt import SoftPromptMethod
from peftrun.models import LoadedModel

VOCAB_INIT_IDS = 5000


class _Embeddings(nn.Module):
    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__()
        self.prompt = nn.Parameter(initial)

    def forward(self) -> torch.Tensor:
        return self.prompt


class Prompt(SoftPromptMethod):
    def __init__(self, loaded: LoadedModel, options: PromptOptions) -> None:
        super().__init__(loaded, options.prompt_len)
        table = self.model.get_input_embeddings().weight
        with torch.no_grad():
            if options.init == "vocab":
                ids = torch.randint(0, min(VOCAB_INIT_IDS, table.shape[0]), (self.length,))
                initial = table[ids.to(table.device)].clone()
            else:
                initial = torch.randn(self.length, self.hidden, device=table.device) * table.std()
        self.producer = _Embeddings(initial.to(trained_dtype(table.dtype)))  # fp32 beside a bf16 base
