"""The Method protocol: everything train.py and decode.py need of a tuning method, and `attach()`.

A method is built around a loaded base model (`attach(loaded, options)`), decides which
parameters train, how the forward pass changes while it is active, what is checkpointed during
training and what is stored afterwards. train.py and decode.py call only these, so they never
branch on the method's name. Optional hooks have their defaults in `MethodBase`, which every
method derives from, so no caller needs `getattr` with a default.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch

from peftrun.data.examples import Pair
from peftrun.data.formats import Room
from peftrun.methods import REGISTRY
from peftrun.methods.options import MethodOptions
from peftrun.models import LoadedModel


@dataclass(frozen=True)
class ParamCounts:
    """Trainable during training, stored after it, and the base model's size (all distinct)."""

    base: int
    trainable: int
    stored: int

    def as_dict(self) -> dict[str, float]:
        counts: dict[str, float] = asdict(self)
        counts["trainable_pct"] = 100.0 * self.trainable / self.base
        counts["stored_pct"] = 100.0 * self.stored / self.base
        return counts


class Method(Protocol):
    """What every method provides (the optional hooks below have defaults in `MethodBase`)."""

    model: torch.nn.Module
    room: Room  # what the method needs in the token sequences (position offset, fillers)
    reads_train_pairs: bool  # initialize() needs the training pairs even when nothing trains

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates."""
        ...

    def set_training(self, training: bool) -> None:
        """Put the base model and the method's modules in train/eval mode (a frozen base
        model usually stays in eval mode: no dropout)."""
        ...

    def active(self, batch_size: int) -> AbstractContextManager:
        """Context in which the model's forward pass (or generate()) includes the method."""
        ...

    def training_state(self) -> dict[str, torch.Tensor]:
        """Everything trainable, to checkpoint and resume."""
        ...

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def save(self, directory: Path) -> None:
        """Write the trained adapter (safetensors) — what is kept after training."""
        ...

    def load(self, directory: Path) -> None:
        """Load an adapter written by `save` (for decoding)."""
        ...

    def counts(self) -> ParamCounts: ...

    def wrap_format(self, text_format, decode_cfg):
        """The token format this method's prompts use (default: the model's own)."""
        ...

    def initialize(self, train_pairs: Sequence[Pair]) -> None:
        """One-off set-up before training from scratch (not on resume, not for decoding), e.g.
        fitting an init or drawing demonstrations."""
        ...

    def take_notes(self) -> list[str]:
        """Lines for the run log since the last call (what an init fit reached, ...)."""
        ...

    def row_inputs(self):
        """What the method adds for one row of a batch shared with other adapters, or None."""
        ...

    @classmethod
    def options_for_shared_rows(cls, options: MethodOptions) -> MethodOptions:
        """The options to attach with when rows of this adapter share one base and one batch with
        other adapters' rows (serving): what would change every row is turned off."""
        ...


class MethodBase:
    """The optional hooks' defaults: no room in the sequences, the format as it is, nothing to
    initialise or report, and a forward pass that needs no context."""

    room: Room = Room()
    reads_train_pairs: bool = False

    def active(self, batch_size: int) -> AbstractContextManager:
        return nullcontext()

    def wrap_format(self, text_format, decode_cfg):
        return text_format

    def initialize(self, train_pairs: Sequence[Pair]) -> None:
        return None

    def take_notes(self) -> list[str]:
        return []

    @classmethod
    def shares_base(cls, options) -> bool:
        """Whether, with these options, the method only adds to a frozen base (then rows of many
        such adapters can share one base and one batch: `row_inputs`)."""
        return False

    @classmethod
    def trains_packed(cls, options) -> bool:
        """Whether runs of this method can train packed with others on one frozen base
        (peftrun.packing): it shares the base, and its training forward draws no random numbers
        (dropout would draw differently in a batch shared with other runs' rows)."""
        return False

    def row_inputs(self):
        """What this method adds for a row of a batch shared with other adapters
        (peftrun.methods.inject.rows.RowInputs), or None: it changes the base model itself (its
        weights or its network) and cannot share one."""
        return None

    @classmethod
    def options_for_shared_rows(cls, options: MethodOptions) -> MethodOptions:
        """The options as they are: by default nothing a method does reaches other rows."""
        return options


def attach(loaded: LoadedModel, options: MethodOptions) -> Method:
    """Check `options` against the model's architecture, then attach the method to the model."""
    options.check(loaded.arch)
    method = REGISTRY[options.kind].load()(loaded, options)
    if not isinstance(method, MethodBase):
        raise TypeError(f"{type(method).__name__} must derive from MethodBase (the optional hooks)")
    return method


def trained_dtype(frozen: torch.dtype) -> torch.dtype:
    """The dtype a method makes its trained parameters in, beside frozen weights of dtype `frozen`:
    the same, but never below float32 (`train.precision: bf16-frozen`): AdamW's small updates would
    vanish in bf16's 8 significant bits, and fp32 draws the same initial values as an fp32 run."""
    return frozen if torch.finfo(frozen).bits >= 32 else torch.float32


def copy_into(named: dict[str, torch.nn.Parameter], state: dict[str, torch.Tensor], what: str) -> None:
    """Copy saved tensors into the method's parameters; the names must match exactly."""
    if set(state) != set(named):
        missing, extra = sorted(set(named) - set(state)), sorted(set(state) - set(named))
        raise ValueError(f"{what} do not match this method: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, parameter in named.items():
            parameter.copy_(state[name])


def save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({name: t.detach().contiguous().cpu() for name, t in state.items()}, str(path))
