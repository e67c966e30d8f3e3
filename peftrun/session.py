"""A Session: one run's base model with its method attached and its token format, ready to train
(a `train.Trainee`), decode and score, and store its adapter."""

from __future__ import annotations

import time
from typing import Any

from peftrun.assembly import attach_method, load_base, pick_device
from peftrun.config import Config
from peftrun.distributed import Processes
from peftrun.runs import Outputs, Run
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

    def decode_and_score(self, run: Outputs, splits) -> dict[str, dict[str, Any]]:
        """Decode each split and score it into `run`: the run directory, or a folder of its own
        (`Run.decoded(NAME)`: other decoding settings, kept apart). Each prediction record holds
        the output's generated tokens (EOS excluded) and whether the token limit cut it."""
        from peftrun import data
        from peftrun.decode import Generation, generations

        results = {}
        for split in splits:
            instances = data.decode_instances(self.cfg.data, self.cfg.decode, split)
            started = time.perf_counter()
            sources = [i.source for i in instances]
            if self.processes.world == 1:  # outputs are saved per batch: a resumed decode skips them
                saved = run.partial_predictions(split, sources)
                done = {i: Generation.from_fields(fields) for i, fields in saved.items()}

                def save(new, split=split, sources=sources):
                    run.add_partial_predictions(split, {i: g.fields() for i, g in new.items()}, sources)

                outputs = generations(
                    self.model, self.method, self.format, sources, self.cfg.decode, self.device, done, save
                )
            else:
                share = self.processes.shard(sources)
                outputs = generations(
                    self.model, self.method, self.format, share, self.cfg.decode, self.device
                )
                outputs = self.processes.unshard(outputs)
            if not run.writer:
                continue
            log(f"decoded {len(instances)} {split} instances in {time.perf_counter() - started:.1f}s")
            self.log_notes()
            records = [
                {
                    "id": inst.id,
                    "source": inst.source,
                    **out.fields(),
                    "references": list(inst.references),
                }
                for inst, out in zip(instances, outputs, strict=True)
            ]
            run.write_predictions(split, records)
            results[split] = score_records(run, split, self.cfg.data.dataset, self.cfg.data.reference_style)
        return results

    def generate(self, sources: list[str], decode_cfg) -> list[str]:
        """The outputs of `sources` with the method's current weights (`peftrun.decode.generate`;
        data-parallel processes each decode their share, gathered back in order)."""
        from peftrun.decode import generate

        if self.processes.world == 1:
            return generate(self.model, self.method, self.format, sources, decode_cfg, self.device)
        share = self.processes.shard(sources)
        outputs = generate(self.model, self.method, self.format, share, decode_cfg, self.device)
        return self.processes.unshard(outputs)

    def dev_curve(self) -> DevCurve | None:
        """The run's dev curve (`train.decode_every`), or None when it is off."""
        from peftrun import data

        train, decode = self.cfg.train, self.cfg.decode
        if not train.decode_every:
            return None
        if decode.sample is None:
            return DevCurve(self, data.load_instances(self.cfg.data, "dev")[: train.decode_dev_size])
        # decode.sample's seeded draw at the curve's size: a random subset of the dev MRs the run
        # decodes at the end (a smaller sample of a seed is contained in a larger one)
        curve = decode.model_copy(update={"sample": min(train.decode_dev_size, decode.sample)})
        return DevCurve(self, data.decode_instances(self.cfg.data, curve, "dev"))

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
            dev_curve=self.dev_curve(),
            group_by_length=self.cfg.data.group_by_length,
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


# What greedy decoding leaves out of decode.*: beam and sampling settings that do nothing there
# (HF warns about them when they are set beside num_beams=1 and do_sample=False).
GREEDY = {
    "num_beams": 1,
    "do_sample": False,
    "early_stopping": False,
    "length_penalty": 1.0,
    "top_k": None,
    "top_p": None,
    "temperature": 1.0,
}


class DevCurve:
    """A run's learning curve on the dev set (`train.decode_every`): the first
    `train.decode_dev_size` dev instances (unique sources, file order), fixed for the whole run,
    decoded greedily with the run's current weights (the rest of decode.* as configured) and
    scored with the dataset's curve metrics (`config.CURVE_METRICS`: the E2E suite without
    METEOR, XSum's ROUGE). Decoding leaves the method in evaluation mode; the caller restores it."""

    def __init__(self, session: Session, instances) -> None:
        from peftrun.config import CURVE_METRICS

        self.session, self.instances = session, list(instances)
        self.decode_cfg = session.cfg.decode.model_copy(update=GREEDY)
        self.dataset = session.cfg.data.dataset
        self.metrics = CURVE_METRICS[self.dataset]

    def __len__(self) -> int:
        return len(self.instances)

    def scores(self) -> dict[str, float]:
        outputs = self.session.generate([i.source for i in self.instances], self.decode_cfg)
        references = [list(i.references) for i in self.instances]
        return curve_scores(self.dataset, outputs, references, self.metrics)


def curve_scores(dataset: str, outputs: list[str], references: list[list[str]], metrics) -> dict[str, float]:
    """The curve metrics of outputs (the scorers a run's final scores come from)."""
    if dataset == "e2e":
        from peftrun.metrics.e2e import score_e2e

        report = score_e2e(outputs, references, metrics=tuple(metrics))
    else:
        from peftrun.metrics import score

        report = score(dataset, outputs, references)
    return {name: float(report.scores[name]) for name in metrics}
