"""Continuous (iteration-level) batching for `peftrun serve`: a decoding loop of peftrun's own over
a decoder-only base, where rows join and leave the running batch at every token.

Every row keeps what makes it its own:

    prompt      prefilled alone (a batch of one, no padding), under its own adapter
    KV cache    its real positions, joined to the batch's cache left-padded to the widest row
                (the batch's cache is realigned only when rows join or leave)
    positions   its own count of real tokens (a prefix's position offset is added by its hook)
    mask        its prefix columns (prefix attention) and its real cache columns only
    logits      its own processors over its own unpadded ids: banned strings, no_repeat_ngram,
                min_length / min_new_tokens, and (sampling) its own temperature, top_k, top_p
    stop        its EOS, its max_tokens, its stop strings, or its client leaving

so a row's output is the one it gets decoded alone, whatever joins or leaves beside it (float64:
exactly; lower precision: up to the last bits of the shared forward pass, see README "Batch
invariance"). Beam search, seeded sampling, encoder-decoder bases and adapters with a model of their
own keep the batch-at-a-time path (engine._decode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch


@dataclass
class LiveRow:
    row: object  # engine._Row
    inputs: object  # RowInputs or None (the base)
    prompt: list[int]
    limit: int  # new tokens at most
    cfg: object  # DecodeConfig
    generated: list[int] = field(default_factory=list)
    cache_len: int = 0  # real positions in the cache
    done: str | None = None  # "stop" or "length" once ended


class Processors:
    """What HF generate() applies to one row's scores, for one DecodeConfig, applied row by row."""

    def __init__(self, cfg, tokenizer) -> None:
        from transformers import (
            NoBadWordsLogitsProcessor,
            NoRepeatNGramLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        from peftrun.decode import banned_token_ids

        self.eos = tokenizer.eos_token_id
        self.cfg = cfg
        self.steps = []
        if cfg.no_repeat_ngram_size:
            self.steps.append(NoRepeatNGramLogitsProcessor(cfg.no_repeat_ngram_size))
        banned = banned_token_ids(tokenizer, cfg.banned_strings)
        if banned:
            self.steps.append(NoBadWordsLogitsProcessor(banned, eos_token_id=self.eos))
        self.sample = bool(cfg.do_sample)
        self.warpers = []
        if self.sample:
            if cfg.temperature is not None and cfg.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(cfg.temperature))
            if cfg.top_k:
                self.warpers.append(TopKLogitsWarper(cfg.top_k))
            if cfg.top_p is not None and cfg.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(cfg.top_p))

    def next_token(self, live: LiveRow, scores: torch.Tensor) -> int:
        """scores: (1, V) float32 logits of the row's next token."""
        cfg = self.cfg
        if self.steps:
            ids = torch.tensor([live.prompt + live.generated], device=scores.device)
            for step in self.steps:
                scores = step(ids, scores)
        too_short = (cfg.min_length or 0) > len(live.prompt) + len(live.generated)
        too_short = too_short or (cfg.min_new_tokens or 0) > len(live.generated)
        if too_short and self.eos is not None:
            scores = scores.clone()
            scores[:, self.eos] = -float("inf")
        if not self.sample:
            return int(scores.argmax(-1))
        ids = None
        for warper in self.warpers:
            scores = warper(ids, scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1))


class LiveBatch:
    """The running rows and their cache on one model (the engine's thread only)."""

    def __init__(self, model, tokenizer, device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.rows: list[LiveRow] = []
        self.ended: list[LiveRow] = []  # rows that ended at their prefill
        self.cache = None  # DynamicCache over self.rows, left-padded to self.width
        self.mask = None  # (B, width) 1 at real positions
        self.width = 0
        self.processors: dict[str, Processors] = {}

    def _processors(self, cfg) -> Processors:
        key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
        if key not in self.processors:
            self.processors[key] = Processors(cfg, self.tokenizer)
        return self.processors[key]

    def _logits_to_token(self, live: LiveRow, logits: torch.Tensor) -> None:
        """Record the row's next token (or its end) from its (V,) logits."""
        scores = logits[None].to(dtype=torch.float32)  # as generate() does
        token = self._processors(live.cfg).next_token(live, scores)
        if token == self.tokenizer.eos_token_id:
            live.done = "stop"
            return
        live.generated.append(token)
        if len(live.generated) >= live.limit:
            live.done = "length"

    def join(self, newcomers: list[LiveRow]) -> None:
        """Prefill each newcomer alone, take its first token, and join its cache to the batch's."""
        from transformers import DynamicCache

        from peftrun.methods.inject.rows import active_rows

        for live in newcomers:
            ids = torch.tensor([live.prompt], device=self.device)
            cache = DynamicCache(config=self.model.config)
            with torch.no_grad(), active_rows(self.model, [live.inputs]):
                out = self.model(
                    input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache, use_cache=True
                )
            live.cache_len = len(live.prompt)
            self._logits_to_token(live, out.logits[0, -1])
            if live.done is None:
                self._append(live, out.past_key_values)
            else:  # ended at its first token: it never decodes with the others
                self.ended.append(live)

    def _append(self, live: LiveRow, cache) -> None:
        from transformers import DynamicCache

        n = live.cache_len
        if self.cache is None:
            self.cache, self.width = cache, n
            self.mask = torch.ones(1, n, dtype=torch.long, device=self.device)
            self.rows = [live]
            return
        width = max(self.width, n)
        merged = DynamicCache(config=self.model.config)
        for index, (old, new) in enumerate(zip(self.cache.layers, cache.layers, strict=True)):
            keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
            merged.update(keys, values, index)
        mask_new = torch.ones(1, n, dtype=torch.long, device=self.device)
        self.mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(mask_new, width)])
        self.cache, self.width = merged, width
        self.rows.append(live)

    def _drop(self, leaving: list[LiveRow]) -> None:
        """Take rows out of the batch; trim cache columns no row uses any more."""
        from transformers import DynamicCache

        if not leaving:
            return
        keep = [i for i, r in enumerate(self.rows) if all(r is not x for x in leaving)]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep or self.cache is None:
            self.cache, self.mask, self.width = None, None, 0
            self.rows = []
            return
        index = torch.tensor(keep, device=self.device)
        width = max(r.cache_len for r in self.rows)
        start = self.width - width
        trimmed = DynamicCache(config=self.model.config)
        for layer_index, layer in enumerate(self.cache.layers):
            keys = layer.keys.index_select(0, index)[:, :, start:]
            values = layer.values.index_select(0, index)[:, :, start:]
            trimmed.update(keys.contiguous(), values.contiguous(), layer_index)
        self.mask = self.mask.index_select(0, index)[:, start:]
        self.cache, self.width = trimmed, width

    def finished(self) -> list[LiveRow]:
        """Rows that ended (their token limit, EOS, a stop string or a cancel), taken out."""
        ended = [r for r in self.rows if r.done is not None]
        self._drop(ended)
        ended, self.ended = self.ended + ended, []
        return ended

    def step(self) -> None:
        """One token for every running row."""
        from peftrun.methods.inject.rows import active_rows

        rows = self.rows
        if not rows:
            return
        last = torch.tensor([[r.generated[-1]] for r in rows], device=self.device)
        positions = torch.tensor([[r.cache_len] for r in rows], device=self.device)
        mask = torch.cat([self.mask, torch.ones(len(rows), 1, dtype=self.mask.dtype, device=self.device)], 1)
        with torch.no_grad(), active_rows(self.model, [r.inputs for r in rows]):
            out = self.model(
                input_ids=last,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
            )
        self.cache, self.mask, self.width = out.past_key_values, mask, self.width + 1
        for live, logits in zip(rows, out.logits[:, -1], strict=True):
            live.cache_len += 1
            self._logits_to_token(live, logits)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, n, hd) → (B, H, width, hd), zeros in front."""
    missing = width - tensor.shape[2]
    if missing <= 0:
        return tensor
    pad = tensor.new_zeros(tensor.shape[0], tensor.shape[1], missing, tensor.shape[3])
    return torch.cat([pad, tensor], dim=2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    if missing <= 0:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
