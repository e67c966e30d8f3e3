"""A Session: one run's base model with its method attached and its token format, ready to train
(a `train.Trainee`), decode and score, and store its adapter."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from peftrun.assembly import attach_method, load_base, pick_device
from peftrun.config import Config
from peftrun.distributed import Processes
from peftrun.runs import Run
from peftrun.scoring import log, score_records


class Session:
    """A model with its method attached, ready to train or decode (in this process's share of the
    data-parallel processes, if several)."""

    def __init__(self, cfg: Config, processes: Processes | None = None, base=None) -> None:
        """`base`: a loaded model to attach to (runs packed on one frozen base), else one is loaded."""
        import torch

        self.cfg = cfg
        self.processes = processes or Processes()
        accelerator = self.processes.accelerator
        if base is not None:
            self.device = base.model.device
            self.loaded = base
        else:
            self.device = accelerator.device if self.processes.world > 1 else pick_device(cfg.train.device)
            self.loaded = load_base(cfg, self.device)
        # The method's initialisation comes from train.seed, whatever the base model is (a hub
        # model draws nothing; a built-in one drew its weights from model.seed).
        torch.manual_seed(cfg.train.seed)
        self.method, self.format = attach_method(self.loaded, cfg)

    @property
    def model(self):
        return self.loaded.model

    def log_notes(self) -> list[str]:
        """Log what the method has to say (an init fit's result, demonstrations used, ...)."""
        notes = self.method.take_notes()
        for note in notes:
            log(note)
        return notes

    def decode_and_score(self, run: Run, splits) -> dict[str, dict[str, Any]]:
        from peftrun import data
        from peftrun.decode import generate

        results = {}
        for split in splits:
            instances = data.load_instances(self.cfg.data, split)[: self.cfg.decode.limit]
            started = time.perf_counter()
            sources = [i.source for i in instances]
            if self.processes.world == 1:  # outputs are saved per batch: a resumed decode skips them
                done = run.partial_predictions(split, sources)
                save = partial(run.add_partial_predictions, split, sources=sources)
                outputs = generate(
                    self.model, self.method, self.format, sources, self.cfg.decode, self.device, done, save
                )
            else:
                share = self.processes.shard(sources)
                outputs = generate(self.model, self.method, self.format, share, self.cfg.decode, self.device)
                outputs = self.processes.unshard(outputs)
            if not run.writer:
                continue
            log(f"decoded {len(instances)} {split} instances in {time.perf_counter() - started:.1f}s")
            self.log_notes()
            records = [
                {"id": inst.id, "source": inst.source, "output": out, "references": list(inst.references)}
                for inst, out in zip(instances, outputs, strict=True)
            ]
            run.write_predictions(split, records)
            results[split] = score_records(run, split, self.cfg.data.dataset, self.cfg.data.reference_style)
        return results

    def trainee(self, run: Run, train_pairs, dev_pairs):
        from peftrun.train import Trainee

        return Trainee(
            self.model,
            self.method,
            train_pairs,
            dev_pairs,
            self.format.training_batch,
            self.cfg.train,
            run,
            self.device,
            self.processes,
        )

    def save_adapter(self, run: Run) -> None:
        from peftrun import __version__

        if not run.writer:
            return
        with run.new_adapter_dir() as folder:  # the folder appears whole, or not at all
            self.method.save(folder)
            run.write_adapter_meta(
                folder,
                {
                    "peftrun": __version__,
                    "base_model": self.cfg.model.name,
                    "method": self.cfg.method.model_dump(mode="json"),
                    "parameters": self.method.counts().as_dict(),
                },
            )
