"""Datasets, by the `data.dataset` a config names. Each module yields text-level `Pair`s (training)
and `Instance`s (one per unique source, with all its references, in official order)."""

from __future__ import annotations

import random

from peftrun.config import DataConfig
from peftrun.data.examples import Instance, Pair
from peftrun.errors import PeftrunError


def load_pairs(cfg: DataConfig, split: str) -> list[Pair]:
    """Training pairs of a split; `train_size` takes a seeded random subset of train."""
    if cfg.dataset == "e2e":
        from peftrun.data import e2e

        pairs = e2e.load_pairs(split, cfg.reference_style, _path(cfg.data_dir))
    else:
        from peftrun.data import xsum

        pairs = xsum.load_pairs(
            cfg.files or None, split, url_file=_path(cfg.url_file), extrapolation=cfg.extrapolation
        )
    _not_empty(pairs, cfg, split)
    if cfg.drop_sources:
        pairs = [Pair("", pair.target) for pair in pairs]
    if split == "train" and cfg.train_size is not None and cfg.train_size < len(pairs):
        pairs = random.Random(cfg.subset_seed).sample(pairs, cfg.train_size)
    if split == "dev" and cfg.dev_loss_size is not None and cfg.dev_loss_size < len(pairs):
        pairs = random.Random(cfg.subset_seed + 1).sample(pairs, cfg.dev_loss_size)
    return pairs


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
