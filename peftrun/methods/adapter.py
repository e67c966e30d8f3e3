"""Bottleneck adapters (Houlsby et al., ICML 2019; Lin et al., Findings of EMNLP 2020): the method
configured as `method.kind: adapter` (not to be confused with "adapter", any trained artifact a
run saves).

A small trained bottleneck module inside each frozen transformer layer, with a residual connection:

    adapter(h) = h + up(f(down(LN(h))))       down: d -> b, up: b -> d, b << d, f = ReLU or GeLU

Two layouts:

* ``lin`` (Lin et al. 2020; the paper's Adapter(0.1%) / Adapter(3%) rows): one adapter per block,
  applied to the block's output (after the FFN residual), with a LayerNorm inside (as above).
* ``houlsby`` (Houlsby et al. 2019): two per block, on the attention sublayer's output and on the FFN
  sublayer's output, each *before* that sublayer's residual add: x + up(f(down(x))), no LayerNorm.

Sites. GPT-2: ``lin`` hooks ``transformer.h[i]``; ``houlsby`` hooks ``h[i].attn`` (output[0]) and
``h[i].mlp``. BART (encoder and decoder layers): ``lin`` hooks the layer; ``houlsby`` hooks
``self_attn`` (output[0]) and ``fc2`` (BART's decoder cross-attention gets no adapter).

Our own code (forward hooks on the frozen layers): HF peft has no Lin et al. / Houlsby bottleneck
adapters for GPT-2 and BART.

Llama-style bases (RMSNorm in their blocks) get the same bottleneck: lin's norm stays a LayerNorm
(with its bias), because it belongs to the adapter as Lin et al. define it, not to the base, and it
keeps the method (and its size formula below) one thing on every family; ``lin`` hooks
``model.layers[i]``, ``houlsby`` its ``self_attn`` (output[0]) and ``mlp``.

``up`` is initialised to zero, so an attached adapter leaves the model unchanged; ``down`` is small
random (normal, std 0.01). The adapters are attached to the model as ``model.peft_adapters`` (so they
move with it) and applied by forward hooks; the base model is frozen and stays in eval mode.

Size. With hidden size d, bottleneck b and S adapter sites (lin: one per layer, houlsby: two):
per adapter 2·d·b + b + d (down and up, with biases), plus 2·d for lin's LayerNorm; so
lin = S·(2db + b + 3d), houlsby = S·(2db + b + d). ``target_fraction`` solves this for b (rounded,
at least 1) so the adapters are about that fraction of the base model. GPT-2-medium (d=1024,
24 blocks, base 354,823,168): lin b=6 → 368,784 (0.104%), lin b=215 → 10,646,568 (3.00%): Lin et al.'s
~0.1% and ~3% settings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from peftrun.families import family_of
from peftrun.methods.adapter_options import BottleneckAdapterOptions
from peftrun.methods.base import MethodBase, ParamCounts, copy_into, save_tensors, trained_dtype
from peftrun.models import ADAPTER_FLAG, LoadedModel, base_size, count_parameters

WEIGHTS = "adapter.safetensors"
ATTRIBUTE = "peft_adapters"


class Bottleneck(nn.Module):
    """One bottleneck adapter: h + up(f(down(LN(h)))); LN only with `layer_norm` (a LayerNorm
    whatever the family's own norms are: part of Lin et al.'s definition)."""

    def __init__(self, hidden: int, bottleneck: int, nonlinearity: str, layer_norm: bool, like: torch.Tensor):
        super().__init__()
        kwargs = {"device": like.device, "dtype": trained_dtype(like.dtype)}  # fp32 beside a bf16 base
        self.norm = nn.LayerNorm(hidden, **kwargs) if layer_norm else nn.Identity()
        self.down = nn.Linear(hidden, bottleneck, **kwargs)
        self.up = nn.Linear(bottleneck, hidden, **kwargs)
        self.act = F.relu if nonlinearity == "relu" else F.gelu
        with torch.no_grad():
            nn.init.normal_(self.down.weight, std=0.01)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        for parameter in self.parameters():
            setattr(parameter, ADAPTER_FLAG, True)  # the method's, inside the model: not the base's

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.down.weight.dtype)  # computes in its own dtype (fp32 beside a bf16 base)
        return h + self.up(self.act(self.down(self.norm(x)))).to(h.dtype)


def _sites(model, layout: str) -> list[nn.Module]:
    """The modules whose output (or output[0]) an adapter rewrites: every block of every stack
    (lin), or each block's attention and FFN sublayers (houlsby)."""
    family = family_of(model)
    blocks = [block for stack in family.stacks for block in family.blocks(model, stack)]
    if layout == "lin":
        return blocks
    sublayers = (family.sublayers["attention"], family.sublayers["ffn"])
    return [getattr(block, name) for block in blocks for name in sublayers]


def bottleneck_size(hidden: int, bottleneck: int, layout: str) -> int:
    """Parameters of one bottleneck adapter."""
    return 2 * hidden * bottleneck + bottleneck + hidden + (2 * hidden if layout == "lin" else 0)


def solve_bottleneck(fraction: float, base: int, sites: int, hidden: int, layout: str) -> int:
    """The b whose adapters come nearest to `fraction` × `base` parameters (at least 1)."""
    fixed = hidden + (2 * hidden if layout == "lin" else 0)
    return max(1, round((fraction * base / sites - fixed) / (2 * hidden + 1)))


def _hook(adapter: Bottleneck):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return hook


class BottleneckAdapter(MethodBase):
    """Frozen model + trained bottleneck adapters (layout ``lin`` or ``houlsby``)."""

    def __init__(self, loaded: LoadedModel, options: BottleneckAdapterOptions) -> None:
        self.model = loaded.model
        self.options = options
        self.base = base_size(self.model)
        self.model.requires_grad_(False)
        sites = _sites(self.model, options.layout)
        hidden = loaded.arch.hidden
        self.bottleneck = options.bottleneck or solve_bottleneck(
            options.target_fraction, self.base, len(sites), hidden, options.layout
        )
        like = next(self.model.parameters())
        self.adapters = nn.ModuleList(
            Bottleneck(hidden, self.bottleneck, options.nonlinearity, options.layout == "lin", like)
            for _ in sites
        )
        setattr(self.model, ATTRIBUTE, self.adapters)
        self.handles = [
            site.register_forward_hook(_hook(a)) for site, a in zip(sites, self.adapters, strict=True)
        ]

    def _named(self) -> dict[str, nn.Parameter]:
        return dict(self.adapters.named_parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.adapters.parameters())

    def set_training(self, training: bool) -> None:
        self.model.train(False)  # frozen base: no dropout
        self.adapters.train(training)

    def training_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self._named().items()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        copy_into(self._named(), state, "adapter weights")

    def save(self, directory: Path) -> None:
        save_tensors(self.training_state(), directory / WEIGHTS)

    def load(self, directory: Path) -> None:
        self.load_training_state(
            load_file(str(directory / WEIGHTS), device=str(next(self.model.parameters()).device))
        )

    def counts(self) -> ParamCounts:
        trainable = count_parameters(self.trainable_parameters())
        return ParamCounts(base=self.base, trainable=trainable, stored=trainable)
