"""Text pairs → token batches, for decoder-only (GPT-2) and encoder-decoder (BART) models.

Decoder-only, as the Prefix-Tuning code formats E2E (PAPER.md, Data):
    training text  " " + source + " <|endoftext|>" + " " + target + " <|endoftext|>"
    prompt         " " + source + " <|endoftext|>"
Loss only on the target and its final EOS (everything up to and including the first EOS is
masked). Encoder-decoder: the tokenizer's own source ids (BART: <s> … </s>) go to the encoder;
the target ids (<s> … </s>) are the labels and the decoder reads them shifted right behind the
decoder start token, as `generate()` produces them.

`labels` are aligned with the logits (position i predicts labels[i]; -100 = no loss), so the
training loop computes one cross-entropy for every model family.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(row) for row in rows)
    padded = [
        ([value] * (width - len(row)) + list(row)) if left else (list(row) + [value] * (width - len(row)))
        for row in rows
    ]
    return torch.tensor(padded, dtype=torch.long)


def _mask(rows: Sequence[Sequence[int]], left: bool = False) -> torch.Tensor:
    return _pad([[1] * len(row) for row in rows], 0, left)


class DecoderOnlyFormat:
    """GPT-2 style: prompt and target in one sequence."""

    def __init__(self, tokenizer, max_positions: int, max_source: int | None, max_target: int | None):
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.max_positions = max_positions
        self.max_source = max_source
        self.max_target = max_target

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, source: str) -> list[int]:
        ids = self._ids(" " + source)
        # Keep room for the EOS and at least some target within the model's positions.
        limit = min(self.max_source or len(ids), self.max_positions // 2)
        return ids[:limit] + self._ids(" ") + [self.eos]

    def target_ids(self, target: str) -> list[int]:
        ids = self._ids(" " + target)
        if self.max_target:
            ids = ids[: self.max_target]
        return ids + self._ids(" ") + [self.eos]

    def training_batch(self, pairs) -> dict[str, torch.Tensor | dict]:
        inputs, labels = [], []
        for pair in pairs:
            prompt, target = self.prompt_ids(pair.source), self.target_ids(pair.target)
            ids = (prompt + target)[: self.max_positions]
            # Position i predicts token i+1: only target tokens (and the final EOS) carry loss.
            shifted = [IGNORE] * (len(prompt) - 1) + target + [IGNORE]
            inputs.append(ids)
            labels.append(shifted[: len(ids) - 1] + [IGNORE])
        return {
            "inputs": {"input_ids": _pad(inputs, self.eos), "attention_mask": _mask(inputs)},
            "labels": _pad(labels, IGNORE),
        }

    def prompt_batch(self, sources: Sequence[str]) -> dict[str, torch.Tensor]:
        prompts = [self.prompt_ids(source) for source in sources]
        # Left padding: every row's next token is generated at the same position.
        return {"input_ids": _pad(prompts, self.eos, left=True), "attention_mask": _mask(prompts, left=True)}

    def generated_ids(self, output: torch.Tensor, prompt: dict[str, torch.Tensor]) -> list[list[int]]:
        return [_until_eos(row.tolist(), self.eos) for row in output[:, prompt["input_ids"].shape[1] :]]


class Seq2SeqFormat:
    """BART style: source to the encoder, target to the decoder."""

    def __init__(
        self,
        tokenizer,
        max_positions: int,
        max_source: int | None,
        max_target: int | None,
        decoder_start: int,
    ):
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.max_source = min(max_source or max_positions, max_positions)
        self.max_target = min(max_target or max_positions, max_positions)
        self.decoder_start = decoder_start

    def _encode(self, text: str, limit: int) -> list[int]:
        ids = self.tokenizer(text)["input_ids"]
        # Truncate inside the special tokens, so the sequence still ends with </s>.
        return ids if len(ids) <= limit else ids[: limit - 1] + [self.eos]

    def training_batch(self, pairs) -> dict[str, torch.Tensor | dict]:
        sources = [self._encode(pair.source, self.max_source) for pair in pairs]
        targets = [self._encode(pair.target, self.max_target) for pair in pairs]
        decoder_inputs = [[self.decoder_start] + target[:-1] for target in targets]
        return {
            "inputs": {
                "input_ids": _pad(sources, self.pad),
                "attention_mask": _mask(sources),
                "decoder_input_ids": _pad(decoder_inputs, self.pad),
                "decoder_attention_mask": _mask(decoder_inputs),
            },
            "labels": _pad(targets, IGNORE),
        }

    def prompt_batch(self, sources: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = [self._encode(source, self.max_source) for source in sources]
        return {"input_ids": _pad(encoded, self.pad), "attention_mask": _mask(encoded)}

    def generated_ids(self, output: torch.Tensor, prompt: dict[str, torch.Tensor]) -> list[list[int]]:
        # output[:, 0] is the decoder start token (BART's is </s>, the EOS itself): skip it.
        return [_until_eos(row.tolist()[1:], self.eos) for row in output]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def text_format(loaded, data_cfg, reserved_positions: int = 0):
    """The format for this model family; `reserved_positions` are taken by a method (a prefix's
    position offset) and unavailable to real tokens."""
    positions = loaded.arch.max_positions - reserved_positions
    if loaded.arch.is_encoder_decoder:
        start = loaded.model.config.decoder_start_token_id
        return Seq2SeqFormat(
            loaded.tokenizer, positions, data_cfg.max_source_tokens, data_cfg.max_target_tokens, start
        )
    return DecoderOnlyFormat(
        loaded.tokenizer, positions, data_cfg.max_source_tokens, data_cfg.max_target_tokens
    )
