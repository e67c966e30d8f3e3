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
exactly; lower precision: up to the last bits of the shared forward pass, see
docs/serving.md#batch-invariance). Beam search, seeded sampling, encoder-decoder bases and adapters
with a model of their own keep the batch-at-a-time path (engine._decode).
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
    """The running rows and their cache on one model (the engine's thread only), in `slots` fixed
    slots: every decoding step runs all of them (a free slot reads a pad token and sees only
    itself), so a row's matrix products have the same shapes whatever else runs, and its
    attention is row-wise (peftrun.methods.inject.rowwise): its answer is its own."""

    def __init__(self, model, tokenizer, device, slots: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.slots: list[LiveRow | None] = [None] * slots
        self.ended: list[LiveRow] = []  # rows that ended at their prefill
        self.cache = None  # DynamicCache over the slots, left-padded to self.width
        self.mask = None  # (slots, width) 1 at each row's real positions
        self.width = 0
        self.processors: dict[str, Processors] = {}
        self._cache_name: str | None = None
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def rows(self) -> list[LiveRow]:
        return [live for live in self.slots if live is not None]

    def _cache(self, cache) -> dict:
        """The cache argument by the name this transformers release's forward() takes."""
        import inspect

        if self._cache_name is None:
            names = inspect.signature(self.model.forward).parameters
            self._cache_name = "cache" if "cache" in names else "past_key_values"
        return {self._cache_name: cache}

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
        """Prefill each newcomer alone, take its first token, and put its cache in a free slot."""
        from transformers import DynamicCache

        from peftrun.methods.inject.rows import active_rows

        for live in newcomers:
            ids = torch.tensor([live.prompt], device=self.device)
            cache = DynamicCache(config=self.model.config)
            with torch.no_grad(), active_rows(self.model, [live.inputs]):
                out = self.model(
                    input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **self._cache(cache)
                )
            live.cache_len = len(live.prompt)
            self._logits_to_token(live, out.logits[0, -1])
            if live.done is None:
                self._place(live, cache)  # (filled in place)
            else:  # ended at its first token: it never decodes with the others
                self.ended.append(live)

    def _place(self, live: LiveRow, cache) -> None:
        from transformers import DynamicCache

        slot = self.slots.index(None)
        n = live.cache_len
        count = len(self.slots)
        if self.cache is None:
            self.cache, self.width = DynamicCache(config=self.model.config), n
            for index, layer in enumerate(cache.layers):
                keys = layer.keys.new_zeros(count, *layer.keys.shape[1:])
                values = layer.values.new_zeros(count, *layer.values.shape[1:])
                self.cache.update(keys, values, index)
            self.mask = torch.zeros(count, n, dtype=torch.long, device=self.device)
        if n > self.width:  # realign: every slot left-padded to the newcomer's width
            for layer in self.cache.layers:
                layer.keys, layer.values = _left_pad(layer.keys, n), _left_pad(layer.values, n)
            self.mask, self.width = _left_pad_mask(self.mask, n), n
        for layer, new in zip(self.cache.layers, cache.layers, strict=True):
            layer.keys[slot] = _left_pad(new.keys, self.width)[0]
            layer.values[slot] = _left_pad(new.values, self.width)[0]
        self.mask[slot] = 0
        self.mask[slot, self.width - n :] = 1
        self.slots[slot] = live

    def finished(self) -> list[LiveRow]:
        """Rows that ended (their token limit, EOS, a stop string or a cancel), taken out; cache
        columns no row uses any more are dropped."""
        ended = [live for live in self.slots if live is not None and live.done is not None]
        for live in ended:
            slot = next(i for i, other in enumerate(self.slots) if other is live)
            self.slots[slot] = None
            self.mask[slot] = 0
        if ended:
            rows = self.rows
            if not rows:
                self.cache, self.mask, self.width = None, None, 0
            else:
                width = max(live.cache_len for live in rows)
                if width < self.width:
                    start = self.width - width
                    for layer in self.cache.layers:
                        layer.keys = layer.keys[:, :, start:].contiguous()
                        layer.values = layer.values[:, :, start:].contiguous()
                    self.mask, self.width = self.mask[:, start:].contiguous(), width
        ended, self.ended = self.ended + ended, []
        return ended

    def step(self) -> None:
        """One token for every running row (and a pad token in every free slot)."""
        from peftrun.methods.inject import rowwise
        from peftrun.methods.inject.rows import active_rows

        if not self.rows:
            return
        last = [[live.generated[-1] if live else self.pad] for live in self.slots]
        positions = [[live.cache_len if live else 0] for live in self.slots]
        mask = torch.cat(
            [self.mask, torch.ones(len(self.slots), 1, dtype=self.mask.dtype, device=self.device)], 1
        )
        with torch.no_grad(), active_rows(self.model, [live.inputs if live else None for live in self.slots]):
            with rowwise.fixed_shapes():
                out = self.model(
                    input_ids=torch.tensor(last, device=self.device),
                    attention_mask=mask,
                    position_ids=torch.tensor(positions, device=self.device),
                    use_cache=True,
                    **self._cache(self.cache),
                )
        self.mask, self.width = mask, self.width + 1  # (the cache is filled in place)
        for slot, (live, logits) in enumerate(zip(self.slots, out.logits[:, -1], strict=True)):
            if live is None:
                self.mask[slot] = 0  # a free slot sees only its own pad token
            else:
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
