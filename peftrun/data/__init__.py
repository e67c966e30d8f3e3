"""Datasets, by the `data.dataset` a config names. Each module yields text-level `Pair`s (training)
and `Instance`s (one per unique source, with all its references, in official order).

The subsets a run uses:
- train: all pairs, or `data.train_size` of them drawn with `data.subset_seed`;
- dev loss: all dev pairs, or `data.dev_loss_size` of them drawn with `data.subset_seed + 1`; when
  `decode.sample` also holds dev instances, only from the dev pairs whose source is not among them
  (`decoded_sources`), so the pairs that steer training (dev loss, `train.select=best`) and the
  instances that are scored never share a source;
- decoding (`decode_instances`): all instances, the first `decode.limit`, or `decode.sample` drawn
  with `decode.sample_seed` and kept in file order.
"""

from __future__ import annotations

import random

from peftrun.config import DataConfig, DecodeConfig
from peftrun.data.examples import Instance, Pair
from peftrun.errors import PeftrunError


def load_pairs(cfg: DataConfig, split: str, decode: DecodeConfig | None = None) -> list[Pair]:
    """Training pairs of a split; `train_size` takes a seeded random subset of train,
    `dev_loss_size` one of dev (apart from `decode`'s sample, if any: see the module docstring)."""
    if cfg.dataset == "e2e":
        from peftrun.data import e2e

        pairs = e2e.load_pairs(split, cfg.reference_style, _path(cfg.data_dir))
    else:
        from peftrun.data import xsum

        pairs = xsum.load_pairs(
            cfg.files or None, split, url_file=_path(cfg.url_file), extrapolation=cfg.extrapolation
        )
    _not_empty(pairs, cfg, split)
    if split == "dev" and cfg.dev_loss_size is not None and decode is not None:
        decoded = decoded_sources(cfg, decode, "dev")
        if decoded:
            pairs = [pair for pair in pairs if pair.source not in decoded]
            if not pairs:
                raise PeftrunError(
                    f"decode.sample={decode.sample} takes every dev source, so data.dev_loss_size has "
                    "no dev pairs left apart from it: lower decode.sample or unset data.dev_loss_size"
                )
    if cfg.drop_sources:
        pairs = [Pair("", pair.target) for pair in pairs]
    if split == "train" and cfg.train_size is not None and cfg.train_size < len(pairs):
        pairs = random.Random(cfg.subset_seed).sample(pairs, cfg.train_size)
    if split == "dev" and cfg.dev_loss_size is not None and cfg.dev_loss_size < len(pairs):
        pairs = random.Random(cfg.subset_seed + 1).sample(pairs, cfg.dev_loss_size)
    return pairs


def decode_instances(cfg: DataConfig, decode: DecodeConfig, split: str) -> list[Instance]:
    """The instances a run decodes and scores on `split`: all, the first `decode.limit`, or
    `decode.sample` of them drawn at random with `decode.sample_seed`, in file order. The draw
    depends only on the split's instances, N and the seed, so runs with the same ones decode the
    same instances (their rows pair by instance id); a sample contains every smaller sample of the
    same seed (the first N of one seeded permutation)."""
    instances = load_instances(cfg, split)
    if decode.sample is None:
        return instances[: decode.limit]
    order = list(range(len(instances)))
    random.Random(decode.sample_seed).shuffle(order)
    return [instances[i] for i in sorted(order[: decode.sample])]


def decoded_sources(cfg: DataConfig, decode: DecodeConfig, split: str) -> set[str]:
    """The sources `decode.sample` decodes on `split` (empty when there is no sample there)."""
    if decode.sample is None or split not in decode.splits:
        return set()
    return {instance.source for instance in decode_instances(cfg, decode, split)}


def load_instances(cfg: DataConfig, split: str) -> list[Instance]:
    if cfg.dataset == "e2e":
        from peftrun.data import e2e

        instances = e2e.load_instances(split, cfg.reference_style, _path(cfg.data_dir))
    else:
        from peftrun.data import xsum

        instances = xsum.load_instances(
            cfg.files or None, split, url_file=_path(cfg.url_file), extrapolation=cfg.extrapolation
        )
    return _not_empty(instances, cfg, split)


def _not_empty(items: list, cfg: DataConfig, split: str) -> list:
    """An empty split (an empty file, a header without rows) is an error, not a run of nothing."""
    if not items:
        where = cfg.files.get(split) if cfg.dataset == "xsum" else (cfg.data_dir or "the packaged files")
        raise PeftrunError(
            f"{cfg.dataset} {split}: no examples in {where or 'the hub split'}; check the file"
        )
    return items


def _path(value: str | None):
    from pathlib import Path

    return Path(value) if value else None
