"""LoRA: Low-Rank Adaptation (Hu et al., ICLR 2022, arXiv 2106.09685).

A frozen weight W (d_out x d_in) gets a trained low-rank update; for an input x,

    h = W x + (alpha / r) · B A x        A: (r x d_in), B: (d_out x r), r << min(d_in, d_out)

A is initialised randomly (Kaiming-uniform, as nn.Linear and HF peft do; the paper says Gaussian)
and B = 0, so training starts exactly at the pretrained model. Only A and B train and are stored.

             x ──────────────┬──────────────┐
                             │              │
                      ┌──────┴──────┐   dropout
                      │  W (frozen) │   ┌───┴───┐
                      │             │   │ A r×in│  (trained)
                      └──────┬──────┘   └───┬───┘
                             │          ┌───┴───┐
                             │          │B out×r│  (trained, init 0)
                             │          └───┬───┘
                             │            ·alpha/r
                             └──── + ───────┘
                                   │
                                   h

Targets (the paper's setting: W_q and W_v; any of q, k, v, o, and on Llama-style decoders the
gated MLP's gate/up/down projections, each adapted whole; `all-linear`: all of the family's).
BART: `q_proj`, `v_proj` (k → `k_proj`, o → `out_proj`) in every attention module — encoder
self-, decoder self- and cross-attention.
GPT-2 fuses q, k, v in one `c_attn` Conv1D (weight (d, 3d), y = x W + b): each chosen projection
gets its own A, B that update only its output columns (q: [0:d], k: [d:2d], v: [2d:3d]; each
projection as wide as the family table says, `Family.projection_slices`), so the k
slice is untouched when targets are (q, v); o → `attn.c_proj` whole.

Implementation: our own (`LoRALayer`, a wrapper around the original layer that adds the low-rank
update to the chosen output slices), not HF peft, because peft's GPT-2 LoRA adapts the whole fused
`c_attn` (q, k and v together), which is not the paper's q/v-only setting. The base model is frozen
and stays in eval mode (no dropout) like prefix-tuning; only the LoRA dropout follows
`set_training`. `active` gates the rows: only this LoRA's layers apply to them (other LoRAs attached
to the same base stay off; `rows.active_rows`). With `merge`, `load` folds
(alpha/r)·B A into the base weights for inference (`merged` is then True and the branch is skipped).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from peftrun.families import ArchSummary, attention_sites, family_of
from peftrun.methods.base import MethodBase, ParamCounts, copy_into, save_tensors, trained_dtype
from peftrun.methods.inject import match_rows, rowwise
from peftrun.methods.inject.rows import RowInputs, active_rows
from peftrun.methods.lora_options import LoRAOptions
from peftrun.models import ADAPTER_FLAG, LoadedModel, base_size, count_parameters

WEIGHTS = "lora.safetensors"


class LoRALayer(nn.Module):
    """`base(x)` plus (alpha/r)·B A x on each named slice [start, end) of the output features.

    `base` is an nn.Linear (weight (out, in)) or a GPT-2 Conv1D (weight (in, out)), or another
    LoRALayer: several LoRAs on one frozen model nest, each adding its update to the rows its
    `gate` selects ((R,) booleans, matched to the batch's rows; None: every row)."""

    def __init__(
        self,
        base: nn.Module,
        slices: dict[str, tuple[int, int]],
        rank: int,
        alpha: float,
        dropout: float,
        transposed: bool | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        innermost = base
        while isinstance(innermost, LoRALayer):
            innermost = innermost.base
        # The family says (`Family.conv1d`); else: nn.Linear stores (out, in), GPT-2's Conv1D (in, out).
        self.transposed = not isinstance(innermost, nn.Linear) if transposed is None else transposed
        weight = _weight(base)
        in_features, self.out_features = weight.shape[::-1] if not self.transposed else weight.shape
        self.slices = dict(slices)
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        dtype = trained_dtype(weight.dtype)  # fp32 beside a bf16 frozen weight
        for name, (start, end) in self.slices.items():
            a = torch.empty(rank, in_features, device=weight.device, dtype=dtype)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_A[name] = nn.Parameter(a)
            self.lora_B[name] = nn.Parameter(
                torch.zeros(end - start, rank, device=weight.device, dtype=dtype)
            )
        for parameter in (*self.lora_A.values(), *self.lora_B.values()):
            setattr(parameter, ADAPTER_FLAG, True)
        self.merged = False
        self.gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        if self.gate is None:
            return y + self.delta(x).to(y.dtype)
        chosen = match_rows(self.gate.to(x.device), x.shape[0])
        if rowwise.STATE.on and chosen.any():  # the update over the whole batch: fixed shapes
            return torch.where(chosen[:, None, None], y + self.delta(x).to(y.dtype), y)
        rows = chosen.nonzero()[:, 0]
        if rows.numel() == 0:
            return y
        return y.index_add(0, rows, self.delta(x[rows]).to(y.dtype))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """(alpha/r)·B A x on the chosen output slices, zero elsewhere (x: (rows, T, in)), in the
        dtype of A and B (fp32 beside a bf16 frozen base; the caller casts it back to the output's)."""
        h = self.dropout(x).to(self.lora_A[next(iter(self.slices))].dtype)
        total = None
        for name, (start, end) in self.slices.items():
            delta = (h @ self.lora_A[name].t()) @ self.lora_B[name].t() * self.scale
            delta = F.pad(delta, (start, self.out_features - end))
            total = delta if total is None else total + delta
        return total

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (inference only)."""
        if self.merged:
            return
        weight = _weight(self.base)
        for name, (start, end) in self.slices.items():
            delta = (self.lora_B[name] @ self.lora_A[name]) * self.scale  # (end - start, in)
            if self.transposed:
                weight[:, start:end] += delta.t()
            else:
                weight[start:end] += delta
        self.merged = True


def _weight(layer: nn.Module) -> torch.Tensor:
    """The frozen weight under any number of LoRA wrappers."""
    while isinstance(layer, LoRALayer):
        layer = layer.base
    return layer.weight


def _sites(model, targets: tuple[str, ...], arch: ArchSummary) -> list[tuple[nn.Module, str, dict]]:
    """(attention module, attribute, {target: output slice}) for every layer LoRA wraps: a fused
    q/k/v projection is wrapped once, with one slice per chosen target (each as wide as the family
    says: k and v have n_kv_head·head_dim columns)."""
    family = family_of(model)
    slices = family.projection_slices(arch)
    found = []
    for modules in attention_sites(model).values():
        for attn in modules:
            by_layer: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
            for target in targets:
                if target in slices:
                    name, start, end = slices[target]
                    by_layer[name][target] = (start, end)
            found += [(attn, name, chosen) for name, chosen in by_layer.items()]
    # Feed-forward projections (a gated MLP's gate/up/down): each whole layer, in every block.
    for target, path in family.ffn_projections.items():
        if target not in targets:
            continue
        owner, _, attr = path.rpartition(".")
        for stack in family.stacks:
            for block in family.blocks(model, stack):
                parent = family.get(block, owner) if owner else block
                width = _weight(getattr(parent, attr)).shape[1 if family.conv1d else 0]
                found.append((parent, attr, {target: (0, width)}))
    return found


def lora_layers(model) -> list[LoRALayer]:
    """Every LoRA layer attached to `model` (per-row gating needs them all)."""
    if not hasattr(model, "peftrun_lora_layers"):
        model.peftrun_lora_layers = []
    return model.peftrun_lora_layers


def detach_lora(model, owner) -> None:
    """Take the LoRA layers of `owner` out of `model`: each is replaced by what it wrapped (a
    server unloading an adapter); other LoRAs' layers stay where they are."""
    mine = {id(layer) for layer in lora_layers(model) if layer.owner is owner}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in mine:
                setattr(parent, name, child.base)
    lora_layers(model)[:] = [layer for layer in lora_layers(model) if id(layer) not in mine]


class LoRA(MethodBase):
    """Frozen model + trained low-rank updates on the chosen attention projections."""

    def __init__(self, loaded: LoadedModel, options: LoRAOptions) -> None:
        self.model = loaded.model
        self.options = options
        self.base = base_size(self.model)  # before this LoRA's layers are attached
        self.model.requires_grad_(False)
        self.layers: list[LoRALayer] = []
        paths = {id(module): name for name, module in self.model.named_modules()}
        # Names as a model with only this LoRA has them, whatever else is attached (saved files).
        self.named: dict[str, nn.Parameter] = {}
        conv1d = family_of(self.model).conv1d
        for parent, attr, slices in _sites(self.model, options.resolved_targets(loaded.arch), loaded.arch):
            layer = LoRALayer(
                getattr(parent, attr), slices, options.rank, options.alpha, options.dropout, transposed=conv1d
            )
            setattr(parent, attr, layer)
            layer.owner = self
            self.layers.append(layer)
            prefix = f"{paths[id(parent)]}.{attr}" if paths[id(parent)] else attr
            for table in ("lora_A", "lora_B"):
                for target, parameter in getattr(layer, table).items():
                    self.named[f"{prefix}.{table}.{target}"] = parameter
        lora_layers(self.model).extend(self.layers)

    @property
    def merged(self) -> bool:
        return bool(self.layers) and all(layer.merged for layer in self.layers)

    def _named(self) -> dict[str, nn.Parameter]:
        return self.named

    @classmethod
    def shares_base(cls, options) -> bool:
        return True

    @classmethod
    def trains_packed(cls, options) -> bool:
        return options.dropout == 0  # a LoRA dropout would draw its masks over the shared batch

    def row_inputs(self) -> RowInputs:
        return RowInputs(lora=self)

    @classmethod
    def options_for_shared_rows(cls, options: LoRAOptions) -> LoRAOptions:
        return options.model_copy(update={"merge": False})  # merged weights would change every row

    def active(self, batch_size: int):
        """Only this LoRA's layers apply (others attached to the same base stay off)."""
        return active_rows(self.model, [self.row_inputs()])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self._named().values())

    def set_training(self, training: bool) -> None:
        self.model.train(False)  # frozen base: no dropout
        for layer in self.layers:
            layer.dropout.train(training)

    def training_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self._named().items()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.merged:
            raise ValueError("LoRA weights are already merged into the model; load into a fresh model")
        copy_into(self._named(), state, "LoRA weights")

    def save(self, directory: Path) -> None:
        save_tensors(self.training_state(), directory / WEIGHTS)

    def load(self, directory: Path) -> None:
        self.load_training_state(load_file(str(directory / WEIGHTS), device=str(self.model.device)))
        if self.options.merge:
            self.merge()

    def merge(self) -> None:
        for layer in self.layers:
            layer.merge()

    def counts(self) -> ParamCounts:
        trainable = count_parameters(self.trainable_parameters())
        return ParamCounts(base=self.base, trainable=trainable, stored=trainable)
