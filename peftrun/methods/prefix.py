"""Prefix-tuning (Li & Liang, ACL 2021, arXiv 2101.00190), Sec. 4.

Every attention layer gets `L` extra positions whose keys/values are trained; the language
model itself is frozen (and kept in eval mode). Activations at prefix positions are free
parameters P_θ[i, :]; every other activation follows the frozen model, attending to the prefix:

    h_i = P_θ[i, :]             if i in prefix positions
    h_i = LM_φ(z_i, h_<i)       otherwise

Reparametrisation (Sec. 4.3): P_θ = MLP(P'_θ), with P'_θ an embedding (L, d) and
MLP = Linear(d, mlp_hidden) → Tanh → Linear(mlp_hidden, n_layer·2·d). After training only
P_θ is stored — per kind (n_layer, 2, n_head, L, head_dim) — and the MLP is dropped, as the
paper does and counts ("0.1%"). GPT-2 has one kind of attention; BART three independent
prefixes: encoder self-attention, decoder self-attention, decoder cross-attention.

The keys/values enter attention through `peftrun.prefix_attention` (one mechanism for every
architecture). Positions: the original GPT-2 code passed the prefix as `past_key_values`, so
real tokens were numbered L … L+T−1; `position_offset` (default on for GPT-2) does the same.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peftrun.method_options import PrefixOptions
from peftrun.methods.base import ParamCounts
from peftrun.models import LoadedModel, attention_sites, count_parameters
from peftrun.prefix_attention import install

WEIGHTS = "prefix.safetensors"


class PrefixTable(nn.Module):
    """The prefix of one attention kind: produces (n_layer, 2, n_head, L, head_dim)."""

    def __init__(self, n_layer: int, n_head: int, hidden: int, options: PrefixOptions) -> None:
        super().__init__()
        self.shape = (options.prefix_len, n_layer, 2, n_head, hidden // n_head)
        width = n_layer * 2 * hidden
        if options.reparametrize:
            self.embedding = nn.Parameter(torch.randn(options.prefix_len, hidden) * 0.02)  # P'_θ
            self.mlp = nn.Sequential(
                nn.Linear(hidden, options.mlp_hidden), nn.Tanh(), nn.Linear(options.mlp_hidden, width)
            )
        else:
            self.embedding = nn.Parameter(torch.randn(options.prefix_len, width) * 0.02)  # P_θ
            self.mlp = nn.Identity()

    def forward(self) -> torch.Tensor:
        flat = self.mlp(self.embedding)  # (L, n_layer·2·d), laid out layer-major, then key/value
        return flat.view(self.shape).permute(1, 2, 3, 0, 4)  # (n_layer, 2, n_head, L, head_dim)


class Prefix:
    """Frozen model + trained prefix key/values at every attention layer."""

    def __init__(self, loaded: LoadedModel, options: PrefixOptions) -> None:
        self.model = loaded.model
        self.options = options
        self.model.requires_grad_(False)
        sites = attention_sites(self.model)
        arch = loaded.arch
        layers = {"self": arch.n_layer, "encoder": arch.n_encoder_layer}
        self.tables = nn.ModuleDict(
            {
                kind: PrefixTable(layers.get(kind, arch.n_layer), arch.n_head, arch.hidden, options)
                for kind in sites
            }
        ).to(self.model.device)
        self.stored: dict[str, torch.Tensor] | None = None  # set by `load`: P_θ without its MLP
        self.slot = install(self.model, sites)
        offset = options.position_offset if options.position_offset is not None else arch.family == "gpt2"
        # Positions the shifted real tokens can no longer use (the token formats stay below them).
        self.reserved_positions = options.prefix_len if offset else 0
        if offset:
            # Real tokens' positions become L … L+T−1, in training and in generate() alike.
            shift = options.prefix_len
            self.model.transformer.wpe.register_forward_pre_hook(lambda _, args: (args[0] + shift,))

    def key_values(self) -> dict[str, torch.Tensor]:
        """Prefix K/V per kind, (n_layer, 2, n_head, L, head_dim) each."""
        if self.stored is not None:
            return self.stored
        return {kind: table() for kind, table in self.tables.items()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.tables.parameters())

    def set_training(self, training: bool) -> None:
        self.model.train(training and self.options.frozen_dropout)
        self.tables.train(training)

    @contextmanager
    def active(self, batch_size: int):
        # One row serves the whole batch (the slot broadcasts it).
        rows = {kind: kv.unsqueeze(0) for kind, kv in self.key_values().items()}
        with self.slot.active(rows):
            yield

    def training_state(self) -> dict[str, torch.Tensor]:
        return self.tables.state_dict()

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.tables.load_state_dict(state)

    def save(self, directory: Path) -> None:
        with torch.no_grad():
            tensors = {kind: kv.detach().contiguous().cpu() for kind, kv in self.key_values().items()}
        save_file(tensors, str(directory / WEIGHTS))
        shapes = {kind: list(kv.shape) for kind, kv in tensors.items()}
        (directory / "prefix.json").write_text(
            json.dumps({"layout": "(n_layer, 2, n_head, L, head_dim)", "shapes": shapes}, indent=2)
        )

    def load(self, directory: Path) -> None:
        tensors = load_file(str(directory / WEIGHTS), device=str(self.model.device))
        expected = {kind: tuple(table().shape) for kind, table in self.tables.items()}
        got = {kind: tuple(kv.shape) for kind, kv in tensors.items()}
        if got != expected:
            raise ValueError(f"prefix in {directory} has shapes {got}, this model needs {expected}")
        self.stored = tensors

    def counts(self) -> ParamCounts:
        stored = sum(
            table.shape[0] * table.shape[1] * 2 * table.shape[3] * table.shape[4]
            for table in self.tables.values()
        )
        return ParamCounts(
            base=count_parameters(self.model.parameters()),
            trainable=count_parameters(self.tables.parameters()),
            stored=stored,
        )
