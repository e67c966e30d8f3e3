"""Text pairs → token batches, for decoder-only (GPT-2) and encoder-decoder (BART) models.

Decoder-only, as the Prefix-Tuning code formats E2E (docs/paper.md#token-formats):
    training text  " " + source + " <|endoftext|>" + " " + target + " <|endoftext|>"
    prompt         " " + source + " <|endoftext|>"
with the tokenizer's own EOS and pad token, its BOS first when it adds one itself, and no leading
space where the tokenizer marks a text's first word itself (SentencePiece; GPT-2-style BPE needs it).
SmolLM2: eos = pad = <|im_end|>, no BOS, the leading space as GPT-2.
Loss only on the target and its final EOS (everything up to and including the first EOS is
masked). Encoder-decoder: the tokenizer's own source ids (BART: <s> … </s>) go to the encoder;
the target ids (<s> … </s>) are the labels and the decoder reads them shifted right behind the
decoder start token, as `generate()` produces them.

`labels` are aligned with the logits (position i predicts labels[i]; -100 = no loss), so the
training loop computes one cross-entropy for every model family.

A method can ask for room in the sequences (`Room`, its `room` attribute):
positions it takes from the real tokens (a prefix's position offset), filler tokens at the start
of the source whose embeddings it replaces (soft prompts), or filler tokens between the source and
the separator whose keys/values it replaces (infix, decoder-only):

    decoder-only   [lead × n] " source" " " [infix × m] EOS " target" " " EOS
    encoder        [lead × n] <s> source </s>

`data.source_prefix` is plain text before the source, one space between, in every layout (so in
training, dev loss, decoding and in-context demonstrations alike); its tokens do not count in
`data.max_source_tokens`, which truncates the source's own:

    GPT-2          " table-to-text: name : Aromi | ..." " " EOS " target" " " EOS
    Llama-style    (BOS) "table-to-text: name : Aromi | ..." ...  (no leading space where the
                   tokenizer marks the first word itself; SmolLM2: as GPT-2)
    BART encoder   <s> "table-to-text: name : Aromi | ..." </s>

`data.format: chat` (decoder-only instruct models, `ChatFormat`): the source as the user message
(`data.instruction`, a blank line, the source) and the target as the assistant's reply, through
the tokenizer's own chat template (peftrun.data.chat), with no system message of ours: a template
that adds a default system line keeps it (SmolLM2's "You are a helpful AI assistant named SmolLM,
trained by Hugging Face"), as every user of the model gets it from `apply_chat_template`:

    prompt    [lead × n] <|im_start|>system\n…<|im_end|>\n
              <|im_start|>user\n{instruction}\n\n{source}<|im_end|>\n<|im_start|>assistant\n
    target    {target}<|im_end|>   (the template's end of turn, the EOS: loss on these only)

In-context demonstrations become earlier turns of the conversation (after the head, the template's
system line): <|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n{target}<|im_end|>\n.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from peftrun.data.chat import INSTRUCTIONS, chat_turns, needs_decoder_only, render, user_content
from peftrun.errors import PeftrunError

IGNORE = -100


def prefixed(prefix: str | None, source: str) -> str:
    """`source` after `data.source_prefix` and one space (the prefix alone for an empty source)."""
    if not prefix:
        return source
    return f"{prefix} {source}" if source else prefix


@dataclass(frozen=True)
class Room:
    """What a method needs in the token sequences (see the module docstring)."""

    reserved_positions: int = 0  # positions real tokens cannot use (a prefix's position offset)
    leading: int = 0  # filler tokens before the source, replaced by soft embeddings
    infix: int = 0  # filler tokens between the source and the separator (decoder-only)


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

    def __init__(
        self,
        tokenizer,
        max_positions: int,
        max_source: int | None,
        max_target: int | None,
        room: Room = Room(),
        source_prefix: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.max_positions = max_positions - room.reserved_positions  # what real tokens can use
        self.source_prefix = source_prefix
        self.max_source = max_source
        self.max_target = max_target
        self.room = room
        # The tokenizer's own conventions: padding with its pad token (else the EOS); its BOS when
        # it adds one itself (Llama's SentencePiece; GPT-2 and SmolLM2 add none); a leading space
        # before source and target only where words are marked by the space before them and the
        # tokenizer does not mark the first one itself (GPT-2 BPE: " word", as the original code).
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        bos = tokenizer.bos_token_id
        self.bos = [bos] if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else []
        self.space = "" if self._ids("a")[-1:] == self._ids(" a")[-1:] else " "
        space = self._ids(" ")
        # Fillers only hold places (a method replaces their embeddings or keys/values); the infix
        # filler must not be the EOS, which marks where the infix ends (`infix_positions`).
        self.filler = space[-1] if space else self.eos
        # The source prefix's tokens, which max_source_tokens does not count.
        self.prefix_length = len(self._ids(self.space + source_prefix)) if source_prefix else 0

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, source: str) -> list[int]:
        ids = self._ids(self.space + prefixed(self.source_prefix, source))
        lead, infix = [self.filler] * self.room.leading, [self.filler] * self.room.infix
        # Keep room for the EOS and at least some target within the model's positions.
        room = self.max_positions - len(lead) - len(self.bos) - len(infix)
        limit = min(self.prefix_length + self.max_source if self.max_source else len(ids), room // 2)
        return lead + self.bos + ids[:limit] + self._ids(" ") + infix + [self.eos]

    def target_ids(self, target: str) -> list[int]:
        ids = self._ids(self.space + target)
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
            "inputs": {"input_ids": _pad(inputs, self.pad), "attention_mask": _mask(inputs)},
            "labels": _pad(labels, IGNORE),
        }

    def prompt_batch(self, sources: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.pad_prompts([self.prompt_ids(source) for source in sources])

    def pad_prompts(self, prompts: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        # Left padding: every row's next token is generated at the same position.
        return {"input_ids": _pad(prompts, self.pad, left=True), "attention_mask": _mask(prompts, left=True)}

    def demonstration_ids(self, pair) -> list[int]:
        """A solved example for in-context prompts: its training text (without the BOS, which
        starts the whole context once)."""
        prompt = self.prompt_ids(pair.source)
        start = self.room.leading
        if self.bos:
            prompt = prompt[:start] + prompt[start + len(self.bos) :]
        return prompt + self.target_ids(pair.target)

    def with_context(self, context: list[int], prompt: list[int]) -> list[int]:
        """`prompt` (from prompt_ids) preceded by in-context examples (after its BOS, if any)."""
        start = self.room.leading + len(self.bos)
        return prompt[:start] + context + prompt[start:]

    def context_budget(self, decode_cfg) -> int:
        """Tokens a prompt may have and still leave room for the output (with only a total
        `max_length`, the prompt gets half of it, as sources get half the positions)."""
        budget = self.max_positions - (decode_cfg.max_new_tokens or 0)
        if decode_cfg.max_new_tokens is None and decode_cfg.max_length:
            budget = min(budget, decode_cfg.max_length // 2)
        return budget

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
        room: Room = Room(),
        source_prefix: str | None = None,
    ):
        if room.infix:
            raise ValueError("an infix needs the source and target in one sequence (decoder-only models)")
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.source_prefix = source_prefix
        positions = max_positions - room.reserved_positions
        # max_source_tokens counts the source's own tokens, not the prefix's.
        prefix = len(tokenizer(source_prefix, add_special_tokens=False)["input_ids"]) if source_prefix else 0
        self.max_source = min(max_source + prefix if max_source else positions, positions - room.leading)
        self.max_target = min(max_target or positions, positions)
        self.decoder_start = decoder_start
        self.room = room
        self.filler = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else self.eos

    def _encode(self, text: str, limit: int) -> list[int]:
        ids = self.tokenizer(text)["input_ids"]
        # Truncate inside the special tokens, so the sequence still ends with </s>.
        return ids if len(ids) <= limit else ids[: limit - 1] + [self.eos]

    def prompt_ids(self, source: str) -> list[int]:
        lead = [self.filler] * self.room.leading
        return lead + self._encode(prefixed(self.source_prefix, source), self.max_source)

    def training_batch(self, pairs) -> dict[str, torch.Tensor | dict]:
        sources = [self.prompt_ids(pair.source) for pair in pairs]
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
        return self.pad_prompts([self.prompt_ids(source) for source in sources])

    def pad_prompts(self, prompts: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        return {"input_ids": _pad(prompts, self.pad), "attention_mask": _mask(prompts)}

    def demonstration_ids(self, pair) -> list[int]:
        """A solved example for in-context prompts: source </s> target </s>."""
        plain = {"add_special_tokens": False}
        source = self.tokenizer(prefixed(self.source_prefix, pair.source), **plain)
        target = self.tokenizer(pair.target, **plain)
        return source["input_ids"] + [self.eos] + target["input_ids"] + [self.eos]

    def with_context(self, context: list[int], prompt: list[int]) -> list[int]:
        """`prompt` (from prompt_ids) with in-context examples after its <s>."""
        return prompt[:1] + context + prompt[1:]

    def context_budget(self, decode_cfg) -> int:
        """Tokens the encoder input may have (the output has positions of its own)."""
        return self.max_source

    def generated_ids(self, output: torch.Tensor, prompt: dict[str, torch.Tensor]) -> list[list[int]]:
        # output[:, 0] is the decoder start token (BART's is </s>, the EOS itself): skip it.
        return [_until_eos(row.tolist()[1:], self.eos) for row in output]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


class ChatFormat(DecoderOnlyFormat):
    """Decoder-only instruct models: the source as a user message, the target as the assistant's
    reply, through the tokenizer's own chat template (see the module docstring)."""

    def __init__(
        self,
        tokenizer,
        max_positions: int,
        max_source: int | None,
        max_target: int | None,
        room: Room = Room(),
        source_prefix: str | None = None,
        instruction: str = "",
        name: str = "this model",
    ):
        if room.infix:
            raise PeftrunError(
                "config error: an infix sits between the source and the separator of the plain layout; "
                "use data.format=plain"
            )
        self.turns = chat_turns(tokenizer, name)
        super().__init__(tokenizer, max_positions, max_source, max_target, room, source_prefix)
        self.bos = []  # a template that wants a BOS writes it itself
        self.instruction = instruction
        self.head = self._ids(self.turns.head)  # the system line: demonstrations go after it
        # Prompt tokens besides the source's (turns, system line, instruction, prefix): the source
        # gets at most half the positions less these, as the plain layout's source gets half.
        empty = {"role": "user", "content": user_content(instruction, prefixed(source_prefix, ""))}
        overhead = len(self._ids(render(tokenizer, [empty], True)))
        self.source_room = max(0, (self.max_positions - room.leading) // 2 - overhead)

    def _message(self, source: str) -> dict[str, str]:
        """The user message of `source`, truncated to max_source_tokens and the positions."""
        limit = min(self.max_source or self.source_room, self.source_room)
        ids = self._ids(source)
        if len(ids) > limit:
            source = self.tokenizer.decode(ids[:limit])
        return {
            "role": "user",
            "content": user_content(self.instruction, prefixed(self.source_prefix, source)),
        }

    def prompt_ids(self, source: str) -> list[int]:
        """The template's rendering of the user message, with its generation prompt."""
        text = render(self.tokenizer, [self._message(source)], True)
        return [self.filler] * self.room.leading + self._ids(text)

    def target_ids(self, target: str) -> list[int]:
        """The reply and the template's end of turn (the EOS)."""
        ids = self._ids(target)
        return (ids[: self.max_target] if self.max_target else ids) + [self.eos]

    def demonstration_ids(self, pair) -> list[int]:
        """A solved example as an earlier user turn and assistant reply."""
        turns = self.turns
        question = turns.user_open + self._message(pair.source)["content"] + turns.reply_open
        return self._ids(question) + self.target_ids(pair.target)[:-1] + self._ids(turns.reply_close)

    def with_context(self, context: list[int], prompt: list[int]) -> list[int]:
        """`prompt` with earlier turns (demonstration_ids) after the template's head."""
        start = self.room.leading + len(self.head)
        return prompt[:start] + context + prompt[start:]


def text_format(loaded, data_cfg, room: Room = Room()):
    """The format for this model family and `data.format`, with the room a method asked for."""
    positions = loaded.arch.max_positions
    sizes = (data_cfg.max_source_tokens, data_cfg.max_target_tokens)
    if data_cfg.format == "chat":
        if loaded.arch.is_encoder_decoder:
            raise needs_decoder_only(loaded.name)
        instruction = data_cfg.instruction or INSTRUCTIONS[data_cfg.dataset]
        return ChatFormat(
            loaded.tokenizer, positions, *sizes, room, data_cfg.source_prefix, instruction, loaded.name
        )
    if loaded.arch.is_encoder_decoder:
        start = loaded.model.config.decoder_start_token_id
        return Seq2SeqFormat(loaded.tokenizer, positions, *sizes, start, room, data_cfg.source_prefix)
    return DecoderOnlyFormat(loaded.tokenizer, positions, *sizes, room, data_cfg.source_prefix)


def first_visible(attention_mask: torch.Tensor | None, rows: int, device) -> torch.Tensor:
    """Index of each row's first real (unpadded) token: 0 with right padding."""
    if attention_mask is None:
        return torch.zeros(rows, dtype=torch.long, device=device)
    return attention_mask.long().argmax(dim=1)


def infix_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, eos: int, length: int):
    """Columns (rows, length) of the infix fillers: the `length` tokens before each row's first
    real EOS (the separator; see DecoderOnlyFormat.prompt_ids)."""
    real = input_ids == eos
    if attention_mask is not None:
        real &= attention_mask.bool()
    if not bool(real.any(dim=1).all()):
        raise ValueError("every row needs the source/target separator (EOS) to place the infix")
    separator = real.long().argmax(dim=1)
    return separator[:, None] - length + torch.arange(length, device=input_ids.device)
