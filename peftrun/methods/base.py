"""The Method protocol: everything train.py and decode.py need of a tuning method.

A method is built around a loaded base model (`Method(loaded, options)`), decides which
parameters train, how the forward pass changes while it is active, what is checkpointed during
training and what is stored afterwards. train.py and decode.py call only these, so they never
branch on the method's name; a new method is one file plus one line in `METHODS`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch


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
    # Optional, for methods that need them (all read with getattr and a default):
    #   slots: peftrun.data.formats.Slots   room in the token sequences (position offset, fillers)
    #   wrap_format(fmt, cfg) -> format     change the prompts themselves (in-context examples)
    #   initialize() -> None                one-off set-up before training from scratch (not on
    #                                       resume, not for decoding), e.g. fitting an init
    #   take_notes() -> list[str]           lines for the run log since the last call (what an
    #                                       init fit reached, how many demonstrations fit, ...)

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
