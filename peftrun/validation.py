"""A run's config checked before anything is written: read with overrides (phase one, in
peftrun.config), then against the model's architecture (phase two, no weights), and the trackers
it names installed."""

from __future__ import annotations

import json
from pathlib import Path

from peftrun import config as config_module
from peftrun.config import Config
from peftrun.data.chat import chat_turns, needs_decoder_only
from peftrun.errors import PeftrunError


def check_against_model(cfg: Config):
    """Phase two of validation: the config against the model's architecture (no weights)."""
    from peftrun import models

    arch = models.arch_summary(models.hf_config(cfg.model.name))
    cfg.method.check(arch)
    check_compile(cfg)
    chat = cfg.data.format == "chat"
    if chat:
        check_chat_layout(cfg, arch)
    if cfg.method.needs_tokenizer_check() or chat:
        try:
            tokenizer = models.cached_tokenizer(cfg.model.name)
        except PeftrunError:
            tokenizer = None  # not available here (a hub model offline): the run checks it later
        if tokenizer is not None:
            if cfg.method.needs_tokenizer_check():
                cfg.method.check_tokens(tokenizer)
            if chat:
                chat_turns(tokenizer, cfg.model.name)
    return arch


# train.compile: methods whose training forward dynamo cannot trace as one graph, and why. LoRA
# branches on how many of the batch's rows its gate selects (a data-dependent size): every LoRA
# layer breaks the graph, and the breaks recompile per layer until dynamo gives up on them.
NOT_COMPILED: dict[str, str] = {}  # method kind → why its training forward cannot compile


def check_compile(cfg: Config) -> None:
    """`train.compile` only for methods whose training forward compiles whole (`NOT_COMPILED`)."""
    why = NOT_COMPILED.get(cfg.method.kind)
    if cfg.train.compile and why is not None:
        raise PeftrunError(
            f"config error: train.compile cannot compile method.kind={cfg.method.kind}: {why}; "
            "set train.compile=false"
        )


def check_chat_layout(cfg: Config, arch) -> None:
    """`data.format: chat` is one conversation in one sequence: a decoder-only model, no infix
    (which sits between the plain layout's source and separator)."""
    if arch.is_encoder_decoder:
        raise needs_decoder_only(cfg.model.name)
    if getattr(cfg.method, "variant", None) == "infix":
        raise PeftrunError(
            "config error: method.variant=infix sits between the source and the separator of the plain "
            "layout; use data.format=plain"
        )


def resolve(config_path: str | Path, overrides: list[str], run_dir: str | None) -> Config:
    """The config file with its overrides (and `run_dir`, if given), checked in both phases."""
    if run_dir:
        overrides = [*overrides, f"output.run_dir={json.dumps(str(run_dir))}"]
    cfg = config_module.load(config_path, overrides)
    check_against_model(cfg)
    return cfg


def check_trackers(trackers: tuple[str, ...]) -> None:
    """Each configured tracker's package must be installed (one line saying which to install)."""
    if not trackers:
        return
    from accelerate import utils

    for tracker in trackers:
        if not getattr(utils, f"is_{tracker}_available")():
            raise PeftrunError(
                f"output.trackers: {tracker} needs the {tracker} package: pip install {tracker} "
                "(or remove it from output.trackers)"
            )
