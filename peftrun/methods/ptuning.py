"""P-tuning v1 (Liu et al. 2021, "GPT Understands, Too", arXiv 2103.10385).

Virtual token embeddings come from a prompt encoder over L trained inputs: a bidirectional LSTM
(`lstm_layers`, `encoder_hidden`/2 per direction) followed by an MLP (Linear → ReLU → Linear to
the model's width), as in the P-tuning code. The encoder only serves training: afterwards the
(L, d) embeddings it produces are stored and the encoder is dropped. The virtual tokens are
prepended to the input (BART: the encoder input); P-tuning's hand-written templates with anchor
tokens are task-specific and not reproduced. Mechanism: `peftrun.methods.inject.soft_input` (our own code,
for the same reason as prompt tuning).
"""

from __future__ import annotations

import torch
from torch import nn

from peftrun.methods.base import trained_dtype
from peftrun.methods.ptuning_options import PTuningOptions
from peftrun.methods.soft_prompt import SoftPromptMethod
from peftrun.models import LoadedModel


class PromptEncoder(nn.Module):
    def __init__(self, length: int, hidden: int, width: int, lstm_layers: int) -> None:
        super().__init__()
        self.inputs = nn.Parameter(torch.randn(length, hidden) * 0.02)
        self.lstm = nn.LSTM(hidden, hidden // 2, num_layers=lstm_layers, bidirectional=True, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, width))

    def forward(self) -> torch.Tensor:
        states, _ = self.lstm(self.inputs[None])
        return self.mlp(states[0])  # (L, width)


class PTuning(SoftPromptMethod):
    def __init__(self, loaded: LoadedModel, options: PTuningOptions) -> None:
        super().__init__(loaded, options.prompt_len)
        width = self.hidden
        self.producer = PromptEncoder(
            self.length, options.encoder_hidden or width, width, options.lstm_layers
        ).to(self.model.device, trained_dtype(self.model.dtype))  # as the base (fp32 beside a bf16 one)
