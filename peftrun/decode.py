"""Decoding: batched beam search (or greedy) with every setting explicit in the config.

The paper's E2E settings: beam 5, at most 100 new tokens, newline tokens banned, stop at the first
EOS, strip. Banned strings are looked up in the tokenizer, so they hold for any vocabulary (for
GPT-2, "\\n" and "\\n\\n" are ids 198 and 628, the ids the original banned). A fresh
`GenerationConfig` is built from our config alone, so nothing is inherited from a model's
generation_config.json. Method-specific behaviour comes only through `method.active`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from peftrun import interrupts
from peftrun.config import DecodeConfig
from peftrun.methods.base import Method


def banned_token_ids(tokenizer, strings: Sequence[str]) -> list[list[int]]:
    banned = []
    for text in strings:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids and ids not in banned:
            banned.append(ids)
    return banned


def generation_config(cfg: DecodeConfig, tokenizer, model_config) -> GenerationConfig:
    values = dict(
        num_beams=cfg.num_beams,
        do_sample=cfg.do_sample,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        temperature=cfg.temperature,
        length_penalty=cfg.length_penalty,
        no_repeat_ngram_size=cfg.no_repeat_ngram_size,
        early_stopping=cfg.early_stopping,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bad_words_ids=banned_token_ids(tokenizer, cfg.banned_strings) or None,
        decoder_start_token_id=getattr(model_config, "decoder_start_token_id", None),
        forced_bos_token_id=tokenizer.bos_token_id if cfg.forced_bos else None,
        max_new_tokens=cfg.max_new_tokens,
        max_length=cfg.max_length,
        min_length=cfg.min_length or 0,
    )
    if cfg.min_new_tokens is not None:  # (HF warns when min_length is given beside it)
        values["min_new_tokens"] = cfg.min_new_tokens
        if not cfg.min_length:
            del values["min_length"]
    return GenerationConfig(**values)


def generate(
    model,
    method: Method,
    text_format,
    sources: Sequence[str],
    cfg: DecodeConfig,
    device,
    done: dict[int, str] | None = None,
    on_batch: Callable[[dict[int, str]], None] | None = None,
) -> list[str]:
    """One output per source, in the order given. `done` holds outputs already decoded (by source
    index) by an interrupted call with the same sources: their batches are skipped, and every other
    batch is the one an uninterrupted call decodes (same members, same padding), so the outputs
    are the same. `on_batch` gets each new batch's outputs (to save them as they come)."""
    method.set_training(False)
    return decode_rows(
        model, [text_format] * len(sources), sources, lambda chunk: method.active(len(chunk)), cfg, device,
        done, on_batch,
    )  # fmt: skip


def decode_rows(
    model,
    formats: Sequence,
    sources: Sequence[str],
    context: Callable[[list[int]], AbstractContextManager],
    cfg: DecodeConfig,
    device,
    done: dict[int, str] | None = None,
    on_batch: Callable[[dict[int, str]], None] | None = None,
) -> list[str]:
    """Like `generate`, row by row: source i is written by `formats[i]` (its adapter's token
    format) and a batch of rows runs inside `context(rows)` (their adapters, row by row)."""
    gen_cfg = generation_config(cfg, formats[0].tokenizer, model.config)
    # Decode in length order (less padding), then restore the caller's order.
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: dict[int, str] = dict(done or {})
    with tqdm(total=len(sources), desc="decode", unit="ex", dynamic_ncols=True, disable=None) as bar:
        for start in range(0, len(order), cfg.batch_size):
            chunk = order[start : start + cfg.batch_size]
            if all(i in outputs for i in chunk):
                bar.update(len(chunk))
                continue
            with context(chunk):
                generated = decode_batch(
                    model, [formats[i] for i in chunk], [sources[i] for i in chunk], gen_cfg, device
                )
            new = {i: output_text(formats[i].tokenizer, ids) for i, ids in zip(chunk, generated, strict=True)}
            outputs.update(new)
            if on_batch is not None:
                on_batch(new)
            bar.update(len(chunk))
            interrupts.check(f"while decoding ({len(outputs)} of {len(sources)} done and saved)")
    return [outputs[i] for i in range(len(sources))]


def decode_batch(
    model,
    formats: Sequence,
    sources: Sequence[str],
    gen_cfg: GenerationConfig,
    device,
    stopping: Callable[[dict], object] | None = None,
) -> list[list[int]]:
    """One generate() call: the generated token ids of each row, up to (not with) its EOS. Row i
    is written by `formats[i]`; the caller holds the rows' adapters active. `stopping(prompt)`:
    HF stopping criteria for the padded prompt (a row they stop ends there, as at its EOS)."""
    first = formats[0]
    prompt = {
        k: v.to(device)
        for k, v in first.pad_prompts(
            [f.prompt_ids(s) for f, s in zip(formats, sources, strict=True)]
        ).items()
    }
    limit = min((getattr(f, "max_positions", None) or 1 << 30) for f in formats)
    extra = {"stopping_criteria": stopping(prompt)} if stopping else {}
    with torch.no_grad():
        generated = model.generate(
            **prompt, generation_config=_fit_positions(gen_cfg, prompt, limit), **extra
        )
    return first.generated_ids(generated, prompt)


def output_text(tokenizer, ids: Sequence[int]) -> str:
    """The text of generated ids, as every output file holds it."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def _fit_positions(gen_cfg: GenerationConfig, prompt, limit: int) -> GenerationConfig:
    """A decoder-only model cannot run past its positions: cap the new tokens (never crash)."""
    if gen_cfg.max_new_tokens is None:
        return gen_cfg
    room = max(1, limit - prompt["input_ids"].shape[1])
    if gen_cfg.max_new_tokens <= room:
        return gen_cfg
    capped = GenerationConfig(**gen_cfg.to_dict())
    capped.max_new_tokens = room
    return capped
