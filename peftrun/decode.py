"""Decoding: batched beam search (or greedy) with every setting explicit in the config.

The paper's E2E settings: beam 5, at most 100 new tokens, newline tokens banned, stop at the first
EOS, strip. Banned strings are looked up in the tokenizer, so they hold for any vocabulary (for
GPT-2, "\\n" and "\\n\\n" are ids 198 and 628, the ids the original banned). A fresh
`GenerationConfig` is built from our config alone, so nothing is inherited from a model's
generation_config.json. Method-specific behaviour comes only through `method.active`.

Each output comes with its length in generated tokens (up to, not with, its EOS) and whether it
was cut by the token limit (max_new_tokens / max_length reached before any EOS): `Generation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from peftrun import interrupts
from peftrun.config import DecodeConfig
from peftrun.methods.base import Method


@dataclass(frozen=True)
class Generation:
    """One decoded output: its text, its generated tokens (EOS excluded) and whether generation
    hit the token limit without an EOS (`truncated`). Tokens and truncation are None for an
    output saved before they were recorded (a decode resumed from an older partial file)."""

    text: str
    tokens: int | None = None
    truncated: bool | None = None

    def fields(self) -> dict:
        """As a prediction record holds it: output, output_tokens, truncated."""
        return {"output": self.text, "output_tokens": self.tokens, "truncated": self.truncated}

    @classmethod
    def from_fields(cls, fields: dict) -> Generation:
        return cls(fields["output"], fields.get("output_tokens"), fields.get("truncated"))


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


def generations(
    model,
    method: Method,
    text_format,
    sources: Sequence[str],
    cfg: DecodeConfig,
    device,
    done: dict[int, Generation] | None = None,
    on_batch: Callable[[dict[int, Generation]], None] | None = None,
) -> list[Generation]:
    """`generate`, each output with its token count and truncation (`Generation`)."""
    method.set_training(False)
    return decode_row_generations(
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
    done_generations = {i: Generation(text) for i, text in (done or {}).items()}
    report = None if on_batch is None else lambda new: on_batch({i: g.text for i, g in new.items()})
    generated = decode_row_generations(
        model, formats, sources, context, cfg, device, done_generations, report
    )
    return [g.text for g in generated]


def decode_row_generations(
    model,
    formats: Sequence,
    sources: Sequence[str],
    context: Callable[[list[int]], AbstractContextManager],
    cfg: DecodeConfig,
    device,
    done: dict[int, Generation] | None = None,
    on_batch: Callable[[dict[int, Generation]], None] | None = None,
) -> list[Generation]:
    """`decode_rows` with each output's token count and truncation; `done` and `on_batch` as in
    `generate`."""
    gen_cfg = generation_config(cfg, formats[0].tokenizer, model.config)
    # Decode in length order (less padding), then restore the caller's order.
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: dict[int, Generation] = dict(done or {})
    with tqdm(total=len(sources), desc="decode", unit="ex", dynamic_ncols=True, disable=None) as bar:
        for start in range(0, len(order), cfg.batch_size):
            chunk = order[start : start + cfg.batch_size]
            if all(i in outputs for i in chunk):
                bar.update(len(chunk))
                continue
            with context(chunk):
                rows, cut = _generate_batch(
                    model, [formats[i] for i in chunk], [sources[i] for i in chunk], gen_cfg, device
                )
            new = {
                i: Generation(output_text(formats[i].tokenizer, ids), len(ids), truncated)
                for i, ids, truncated in zip(chunk, rows, cut, strict=True)
            }
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
    return _generate_batch(model, formats, sources, gen_cfg, device, stopping)[0]


def _generate_batch(
    model,
    formats: Sequence,
    sources: Sequence[str],
    gen_cfg: GenerationConfig,
    device,
    stopping: Callable[[dict], object] | None = None,
) -> tuple[list[list[int]], list[bool]]:
    """`decode_batch`, and for each row whether the token limit cut it: no EOS among its generated
    positions (generate() stops a row only at its EOS or at the limit: max_new_tokens, max_length
    or the positions; or by `stopping`), or, for a model whose generation config forces the EOS
    as the last token (BART: forced_eos_token_id), its EOS exactly there when the batch ran to the
    limit (a forced EOS cannot be told from a chosen one; it is counted as cut)."""
    first = formats[0]
    prompt = {
        k: v.to(device)
        for k, v in first.pad_prompts(
            [f.prompt_ids(s) for f, s in zip(formats, sources, strict=True)]
        ).items()
    }
    limit = min((getattr(f, "max_positions", None) or 1 << 30) for f in formats)
    extra = {"stopping_criteria": stopping(prompt)} if stopping else {}
    fitted = _fit_positions(gen_cfg, prompt, limit)
    with torch.no_grad():
        generated = model.generate(**prompt, generation_config=fitted, **extra)
    rows = first.generated_ids(generated, prompt)
    # How many generated positions each row holds, asked of the format itself (decoder-only: after
    # the prompt; encoder-decoder: after the start token): the ids it returns for a row with no EOS.
    eos = first.tokenizer.eos_token_id
    no_eos = torch.full_like(generated[:1], 1 if eos == 0 else 0)
    width = len(first.generated_ids(no_eos, {k: v[:1] for k, v in prompt.items()})[0])
    if fitted.max_new_tokens is not None:
        at_limit = width >= fitted.max_new_tokens
    else:
        at_limit = fitted.max_length is not None and generated.shape[1] >= fitted.max_length
    forced = fitted.forced_eos_token_id
    if forced is None:  # generate() takes what our config leaves unset from the model's own
        forced = getattr(getattr(model, "generation_config", None), "forced_eos_token_id", None)
    forces_eos = eos in (forced if isinstance(forced, (list, tuple)) else [forced])
    cut = [len(ids) >= width or (at_limit and forces_eos and len(ids) == width - 1) for ids in rows]
    return rows, cut


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
