"""Prefix-tuning (Li & Liang, ACL 2021, arXiv 2101.00190), Sec. 4, and its Sec. 7 ablations.

Every attention layer gets `L` extra positions whose keys/values are trained; the language
model itself is frozen (and kept in eval mode). Activations at prefix positions are free
parameters P_θ[i, :]; every other activation follows the frozen model, attending to the prefix:

    h_i = P_θ[i, :]             if i in prefix positions
    h_i = LM_φ(z_i, h_<i)       otherwise

Reparametrisation (Sec. 4.3): P_θ = MLP(P'_θ), with P'_θ an embedding (L, d) and
MLP = Linear(d, mlp_hidden) → Tanh → Linear(mlp_hidden, width). After training only P_θ is
stored and the MLP is dropped, as the paper does and counts ("0.1%"). GPT-2 has one kind of
attention; BART three independent prefixes: encoder self-attention, decoder self-attention,
decoder cross-attention.

Variants (`method.variant`):
- every-layer (the method): P_θ holds keys/values, (n_layer, 2, n_kv_head, L, head_dim) per kind
  (the family's key/value heads: as many as query heads in GPT-2/BART, fewer with grouped-query
  attention).
- embedding-only (EMB-L): P_θ holds input-layer activations (L, d); the frozen model computes the
  keys/values of every layer from them (`key_values_of_inputs`). GPT-2: one table; BART: an encoder
  and a decoder table, the cross-attention prefix being the encoder prefix's outputs. Only (L, d)
  per table is stored. On GPT-2 this is exactly prompt tuning with the same embeddings (tested).
- infix (INFIX-L, decoder-only): [x; INFIX; y]. L filler tokens sit between the source and the
  separator; at every layer their keys/values are replaced by P_θ (`peftrun.methods.inject.infix_kv`),
  so the target sees x, the infix and itself. (The original added trained keys/values to the
  model's own at those positions; we use the paper's definition, free activations.) The keys are
  the key projection's output: on a rotary model (Llama) they are then turned by their fillers'
  positions like every key there, so an infix of a text's own projections is that text.

Init from a real phrase (`init_phrase`, paper Sec. 7 low-data): the prefix takes the phrase's
length (GPT-2 BPE with a leading space), and before training the MLP alone is fitted for
`init_steps` Adam steps at `init_lr` by mean-squared error to the frozen model's activations for
the phrase — its keys/values at every layer (BART: the encoder's on the phrase, the decoder's on
the phrase cross-attending to the encoder's phrase states, and those states' cross-attention
keys/values), or for embedding-only its token embeddings. The final MSE goes to the run log.

The keys/values enter attention through `peftrun.methods.inject.prefix_kv` (one mechanism for
every architecture). Our own code, not HF peft's prefix tuning: peft hands the prefix to the model as
its past keys/values (the decoder's cache), which reaches neither BART's encoder self-attention
nor a batch of rows with different prefixes.

Positions: the original GPT-2 code passed the prefix as `past_key_values`, so real tokens were
numbered L … L+T−1; `position_offset` (default on for GPT-2 and Llama-style decoders) does the
same. On a rotary model (Llama, Qwen2, Mistral) the prefix's keys are what attention and its cache
hold, after the rotary embedding: they are never turned again, only real tokens are numbered
from L (their position_ids), as HF peft does. Grouped-query attention: P_θ holds the n_kv_head
key/value heads, which attention shares among the query heads as it does real keys; a phrase's
keys/values (init_phrase) are the model's own, rotated for positions 0 … L−1.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peftrun.data.formats import Room
from peftrun.errors import PeftrunError
from peftrun.families import attention_sites, family_of
from peftrun.methods.base import MethodBase, ParamCounts, trained_dtype
from peftrun.methods.inject import positions
from peftrun.methods.inject.infix_kv import InfixKeyValues
from peftrun.methods.inject.prefix_kv import install, key_values_of_inputs
from peftrun.methods.inject.rows import RowInputs, active_rows
from peftrun.methods.prefix_options import PrefixOptions, phrase_ids
from peftrun.models import LoadedModel, base_size, count_parameters, load_tokenizer

WEIGHTS = "prefix.safetensors"
DEFAULT_LENGTH = 10


class PrefixTable(nn.Module):
    """L trained rows of `width` values: P_θ = MLP(P'_θ) (reparametrised), or P_θ itself."""

    def __init__(self, length: int, hidden: int, width: int, options: PrefixOptions) -> None:
        super().__init__()
        self.length, self.width = length, width
        if options.reparametrize:
            self.embedding = nn.Parameter(torch.randn(length, hidden) * 0.02)  # P'_θ
            self.mlp = nn.Sequential(
                nn.Linear(hidden, options.mlp_hidden), nn.Tanh(), nn.Linear(options.mlp_hidden, width)
            )
        else:
            self.embedding = nn.Parameter(torch.randn(length, width) * 0.02)  # P_θ
            self.mlp = nn.Identity()

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding)  # (L, width)


def kv_layout(flat: torch.Tensor, n_layer: int, n_kv_head: int) -> torch.Tensor:
    """(L, n_layer·2·n_kv_head·head_dim), laid out layer-major then key/value → (n_layer, 2,
    n_kv_head, L, head_dim)."""
    length = flat.shape[0]
    return flat.view(length, n_layer, 2, n_kv_head, -1).permute(1, 2, 3, 0, 4)


class Prefix(MethodBase):
    """Frozen model + a trained prefix (every layer, embedding-only or infix)."""

    def __init__(self, loaded: LoadedModel, options: PrefixOptions) -> None:
        self.model = loaded.model
        self.options = options
        self.variant = options.variant
        self.notes: list[str] = []
        self.model.requires_grad_(False)
        arch = loaded.arch
        self.tokenizer = loaded.tokenizer
        self.length = self._length(loaded)
        self.n_layers = {kind: len(modules) for kind, modules in attention_sites(self.model).items()}
        self.n_kv_head = arch.n_kv_head
        kv_width = 2 * arch.n_kv_head * arch.head_dim  # one layer's keys and values per position
        # Where input-layer activations enter: GPT-2's one stack, BART's encoder and decoder.
        self.input_kinds = family_of(self.model).input_kinds
        if self.variant == "embedding-only":
            kinds = {kind: arch.hidden for kind in self.input_kinds}
        elif self.variant == "infix":
            kinds = {"self": arch.n_layer * kv_width}
        else:
            kinds = {kind: n * kv_width for kind, n in self.n_layers.items()}
        self.tables = nn.ModuleDict(
            {kind: PrefixTable(self.length, arch.hidden, width, options) for kind, width in kinds.items()}
        ).to(self.model.device, trained_dtype(self.model.dtype))  # as the base (fp32 beside a bf16 one)
        self.stored: dict[str, torch.Tensor] | None = None  # set by `load`: P_θ without its MLP
        self.prefix_attention = install(self.model)
        default_offset = arch.shifts_positions and self.variant != "infix"
        offset = options.position_offset if options.position_offset is not None else default_offset
        self.room = Room(
            reserved_positions=self.length if offset else 0,
            infix=self.length if self.variant == "infix" else 0,
        )
        # While active, real tokens' positions become L … L+T−1, in training and in generate()
        # alike (but not while the frozen model computes the prefix itself, at 0 … L−1).
        self.position_offset = self.length if offset else 0
        if offset:
            positions.install(self.model)
        self.infix = InfixKeyValues(self.model, arch) if self.variant == "infix" else None

    def _length(self, loaded: LoadedModel) -> int:
        phrase = self.options.init_phrase
        if phrase is None:
            return self.options.prefix_len or DEFAULT_LENGTH
        if self.tokenizer is None and self.options.prefix_len is not None:
            return self.options.prefix_len  # counting parameters without weights or tokenizer
        if self.tokenizer is None:
            try:
                self.tokenizer = load_tokenizer(loaded.name)
            except PeftrunError:
                raise PeftrunError(
                    f"method.init_phrase needs {loaded.name}'s tokenizer to count the phrase's tokens and "
                    "it cannot be loaded here; set method.prefix_len to that count (GPT-2/BART BPE: "
                    "'table-to-text:' 6, 'summarize' 1)"
                ) from None
        return self.options.check_tokens(self.tokenizer)

    # What the prefix is -------------------------------------------------------------------

    def values(self) -> dict[str, torch.Tensor]:
        """P_θ per table: keys/values (n_layer, 2, n_kv_head, L, head_dim), or embeddings (L, d)."""
        if self.stored is not None:
            return self.stored
        if self.variant == "embedding-only":
            return {kind: table() for kind, table in self.tables.items()}
        return {
            kind: kv_layout(table(), self.n_layers[kind], self.n_kv_head)
            for kind, table in self.tables.items()
        }

    def key_values(self) -> dict[str, torch.Tensor]:
        """Prefix K/V per attention kind, (n_layer, 2, n_kv_head, L, head_dim) each."""
        values = self.values()
        if self.variant != "embedding-only":
            return values
        with self._unshifted():
            return key_values_of_inputs(self.model, self.prefix_attention, values)

    def _unshifted(self):
        shift = getattr(self.model, "peftrun_position_shift", None)
        return shift.suspended() if shift is not None else nullcontext()

    @classmethod
    def shares_base(cls, options) -> bool:
        return options.variant != "infix"

    @classmethod
    def trains_packed(cls, options) -> bool:
        return cls.shares_base(options) and not options.frozen_dropout  # the table has no dropout

    def row_inputs(self) -> RowInputs | None:
        """This prefix's keys/values and position offset for a row of a shared batch (an infix
        sits inside the token sequence and cannot share one: None)."""
        if self.infix is not None:
            return None
        return RowInputs(key_values=self.key_values(), position_offset=self.position_offset)

    # The Method protocol -------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.tables.parameters())

    def set_training(self, training: bool) -> None:
        self.model.train(training and self.options.frozen_dropout)
        self.tables.train(training)

    @contextmanager
    def active(self, batch_size: int):
        if self.infix is not None:
            with self.infix.active(self.values()["self"]):
                yield
            return
        with active_rows(self.model, [self.row_inputs()]):  # one row serves the whole batch
            yield

    def initialize(self, train_pairs=()) -> None:
        """Init from a real phrase: fit the MLP (or set P_θ) to the phrase's activations."""
        phrase = self.options.init_phrase
        if phrase is None:
            return
        targets = self.phrase_targets()
        if not self.options.reparametrize:
            with torch.no_grad():
                for kind, table in self.tables.items():
                    table.embedding.copy_(_flat(targets[kind], self.variant))
            self.notes.append(f"prefix set to the activations of {phrase!r} ({self.length} tokens)")
            return
        mlp = [p for table in self.tables.values() for p in table.mlp.parameters()]
        optimizer = torch.optim.Adam(mlp, lr=self.options.init_lr)
        first = None
        for _ in range(self.options.init_steps):
            loss = self.phrase_mse(targets)
            first = loss.item() if first is None else first
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.tables.zero_grad(set_to_none=True)  # the fit's gradients must not reach training
        with torch.no_grad():
            self.init_mse = self.phrase_mse(targets).item()
        self.notes.append(
            f"prefix initialised from {phrase!r} ({self.length} tokens): MLP fitted for "
            f"{self.options.init_steps} Adam steps at lr {self.options.init_lr:g}; MSE to the phrase's "
            f"activations {first:.4g} -> {self.init_mse:.4g}"
        )

    def phrase_targets(self) -> dict[str, torch.Tensor]:
        """What each table should hold to be the phrase: its token embeddings (embedding-only) or
        the frozen model's keys/values for it (every-layer)."""
        ids = torch.tensor(phrase_ids(self.tokenizer, self.options.init_phrase), device=self.model.device)
        with torch.no_grad(), self._unshifted():
            embeddings = self.model.get_input_embeddings()(ids)
            inputs = {kind: embeddings for kind in self.input_kinds}
            if self.variant == "embedding-only":
                return inputs
            return key_values_of_inputs(self.model, self.prefix_attention, inputs)

    def phrase_mse(self, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        values = self.values()
        got = torch.cat([values[kind].reshape(-1) for kind in sorted(targets)])
        want = torch.cat([targets[kind].reshape(-1) for kind in sorted(targets)]).to(got.dtype)
        return nn.functional.mse_loss(got, want)

    def training_state(self) -> dict[str, torch.Tensor]:
        return self.tables.state_dict()

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.tables.load_state_dict(state)

    def save(self, directory: Path) -> None:
        with torch.no_grad():
            tensors = {kind: value.detach().contiguous().cpu() for kind, value in self.values().items()}
        save_file(tensors, str(directory / WEIGHTS))
        layout = "(L, d)" if self.variant == "embedding-only" else "(n_layer, 2, n_kv_head, L, head_dim)"
        shapes = {kind: list(value.shape) for kind, value in tensors.items()}
        (directory / "prefix.json").write_text(
            json.dumps({"variant": self.variant, "layout": layout, "shapes": shapes}, indent=2)
        )

    def load(self, directory: Path) -> None:
        tensors = load_file(str(directory / WEIGHTS), device=str(self.model.device))
        self.stored = None
        with torch.no_grad():
            expected = {kind: tuple(value.shape) for kind, value in self.values().items()}
        got = {kind: tuple(value.shape) for kind, value in tensors.items()}
        if got != expected:
            raise ValueError(f"prefix in {directory} has shapes {got}, this model needs {expected}")
        self.stored = tensors

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    def counts(self) -> ParamCounts:
        return ParamCounts(
            base=base_size(self.model),
            trainable=count_parameters(self.tables.parameters()),
            stored=sum(table.length * table.width for table in self.tables.values()),
        )


def _flat(target: torch.Tensor, variant: str) -> torch.Tensor:
    """A table's (L, width) rows holding `target` (inverse of `kv_layout` for keys/values)."""
    if variant == "embedding-only":
        return target
    return target.permute(3, 0, 1, 2, 4).reshape(target.shape[3], -1)
