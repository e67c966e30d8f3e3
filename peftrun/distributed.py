"""Data-parallel processes: which one this is, and the few collective operations a run needs.

`accelerate launch -m peftrun train CFG` (or `peftrun train CFG --gpus N`, which runs exactly
that) starts N processes; `accelerate` sets up the process group (NCCL on GPUs, gloo on a CPU) and
gives each process its device. A run then:

- splits every micro-batch of the global batch across the processes (row r goes to process
  r mod N), normalises each process's loss by the *global* denominator (target tokens or
  sequences of the whole micro-batch) and sums the gradients, so an update equals the one a single
  process computes on the whole micro-batch (methods whose base model has no dropout: exactly,
  up to float summation order);
- splits decoding the same way and gathers the outputs back into the official order;
- writes only from process 0 (run directory, checkpoints, logs, trackers).

With one process all of this is the identity, and `accelerate` is not imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Processes:
    """This process's place among the data-parallel processes of a run."""

    rank: int = 0
    world: int = 1
    accelerator: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This process's share of `items` (every world-th, from its rank)."""
        return items[self.rank :: self.world]

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum tensors across processes, in place."""
        if self.world == 1:
            return
        for tensor in tensors:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)

    def total(self, value: float, device) -> float:
        """The sum of a number over the processes."""
        if self.world == 1:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
        self.sum_([tensor])
        return float(tensor.item())

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `parameters` (a parameter without one contributes zeros)."""
        if self.world == 1:
            return
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        self.sum_([p.grad for p in parameters])

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Make every process hold process 0's values."""
        if self.world == 1:
            return
        for tensor in tensors:
            torch.distributed.broadcast(tensor, src=0)

    def unshard(self, shards: list) -> list:
        """Inverse of `shard`: every process's share, gathered and put back in the original order."""
        if self.world == 1:
            return shards
        from accelerate.utils import gather_object

        pieces = gather_object([shards])  # one list per process, in rank order
        total = sum(len(piece) for piece in pieces)
        out: list = [None] * total
        for rank, piece in enumerate(pieces):
            out[rank :: self.world] = piece
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()


def launched_processes() -> int:
    """How many processes the launcher started (accelerate and torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def current(trackers: tuple[str, ...] = (), tracker_dir: str | None = None, cpu: bool = False) -> Processes:
    """This process's place; with several processes (or trackers), through an `Accelerator`.
    Without a GPU (or with `cpu`), the processes talk over gloo: `accelerate` needs to be told."""
    if launched_processes() == 1 and not trackers:
        return Processes()
    from accelerate import Accelerator

    cpu = cpu or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, log_with=list(trackers) or None, project_dir=tracker_dir)
    return Processes(accelerator.process_index, accelerator.num_processes, accelerator)
