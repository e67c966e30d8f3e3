"""Decoding (docs/paper.md#e2e-decoding): stop at the first EOS, and never generate a banned string.

An output is cut at its first EOS whatever a model or beam returns after it, for both token
formats (GPT-2: the prompt is followed by the output; BART: the decoder output starts with the
decoder start token). Banned strings are looked up in the tokenizer and never appear in an
output, even from a model pushed hard towards them."""

from __future__ import annotations

import pytest
import torch

from peftrun import models
from peftrun.config import DataConfig, DecodeConfig
from peftrun.data.formats import text_format
from peftrun.decode import generate
from peftrun.methods import FullOptions
from peftrun.methods.base import attach

MODELS = ("tiny-gpt2", "tiny-bart")
CPU = torch.device("cpu")


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def setup(model_name: str):
    loaded = models.load(model_name, seed=0)
    return loaded, attach(loaded, FullOptions()), text_format(loaded, DataConfig(dataset="e2e"))


# --------------------------------------------------------------------------- first EOS


def model_output(loaded, fmt, prompt: dict, continuations: list[list[int]]) -> torch.Tensor:
    """What a model's generate() returns for these new tokens: GPT-2 the prompt then the tokens;
    BART the decoder start token then the tokens. Rows are right-padded with the pad token."""
    if loaded.arch.is_encoder_decoder:
        rows = [[loaded.model.config.decoder_start_token_id, *c] for c in continuations]
    else:
        rows = [prompt["input_ids"][i].tolist() + c for i, c in enumerate(continuations)]
    width = max(len(r) for r in rows)
    pad = loaded.tokenizer.pad_token_id
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("model_name", MODELS)
def test_generated_ids_stop_at_the_first_eos(model_name):
    loaded, _, fmt = setup(model_name)
    tok, eos = loaded.tokenizer, loaded.tokenizer.eos_token_id
    words, more = ids(tok, " restaurant food"), ids(tok, " cat world")
    prompt = fmt.prompt_batch(["name : Aromi", "name : Cocum", "name : Wildwood"])
    continuations = [
        words + [eos] + more + [eos] + more,  # continues after the EOS: cut at the first
        [eos] + words,  # EOS first: empty output
        words + more,  # no EOS at all (ran out of tokens): everything
    ]
    got = fmt.generated_ids(model_output(loaded, fmt, prompt, continuations), prompt)
    pad = tok.pad_token_id
    assert got[0] == words
    assert got[1] == []
    assert [t for t in got[2] if t != pad] == words + more


class ContinuesAfterEos:
    """A stand-in model whose generate() keeps producing text after the EOS (as a beam might)."""

    def __init__(self, loaded, fmt, continuation: list[int]):
        self.loaded, self.fmt, self.continuation = loaded, fmt, continuation
        self.config = loaded.model.config

    def generate(self, input_ids, attention_mask, generation_config):
        prompt = {"input_ids": input_ids, "attention_mask": attention_mask}
        rows = [self.continuation] * input_ids.shape[0]
        return model_output(self.loaded, self.fmt, prompt, rows)


@pytest.mark.parametrize("model_name", MODELS)
def test_generate_cuts_an_output_that_continues_after_eos(model_name):
    loaded, method, fmt = setup(model_name)
    tok, eos = loaded.tokenizer, loaded.tokenizer.eos_token_id
    continuation = ids(tok, " restaurant food") + [eos] + ids(tok, " cat world") + [eos]
    model = ContinuesAfterEos(loaded, fmt, continuation)
    cfg = DecodeConfig(num_beams=2, max_new_tokens=len(continuation), batch_size=2)
    outputs = generate(model, method, fmt, ["name : Aromi", "name : Cocum | food : Indian", "x"], cfg, CPU)
    assert outputs == ["restaurant food"] * 3


# --------------------------------------------------------------------------- banned strings


def push_towards(model, first: int, then: int, bias: float = 40.0):
    """Make the model generate `first`, then `then`, then `first` ... : each step's logits get
    `bias` on `then` if the last token is `first`, else on `first`."""

    def hook(module, args, kwargs, output):
        tokens = kwargs["decoder_input_ids"] if "decoder_input_ids" in kwargs else kwargs["input_ids"]
        favoured = torch.where(tokens[:, -1] == first, then, first)
        output.logits[torch.arange(len(favoured)), -1, favoured] += bias
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


SOURCES = ["name : Aromi | Type : pub", "name : Cocum"]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize(
    ("banned", "first", "then"),
    [
        (("\n", "\n\n"), " restaurant", "\n"),  # the paper's E2E bans (the default)
        ((" restaurant",), " restaurant", " food"),  # a word
    ],
    ids=["newlines", "word"],
)
def test_banned_strings_are_never_generated(model_name, banned, first, then):
    loaded, method, fmt = setup(model_name)
    tok = loaded.tokenizer
    (first_id,), (then_id,) = ids(tok, first), ids(tok, then)
    push_towards(loaded.model, first_id, then_id)
    cfg = DecodeConfig(num_beams=3, max_new_tokens=6, batch_size=2)
    unbanned = generate(
        loaded.model, method, fmt, SOURCES, cfg.model_copy(update={"banned_strings": ()}), CPU
    )
    text = banned[0]
    assert all(text in out for out in unbanned), unbanned  # the model does generate it ...
    outputs = generate(
        loaded.model, method, fmt, SOURCES, cfg.model_copy(update={"banned_strings": banned}), CPU
    )
    assert not any(b in out for out in outputs for b in banned), outputs  # ... unless it is banned
    assert outputs != unbanned


# --------------------------------------------------------------------------- output lengths


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("beams", [1, 3])
def test_output_tokens_and_truncation_follow_the_token_limit(model_name, beams):
    """A model pushed to write one word and then its EOS: with room for both, every output is one
    token and not truncated; with max_new_tokens=1 it is cut before its EOS (truncated). A model
    that never ends fills the limit: truncated. BART forces its EOS as the last token at the limit
    (bart-large's forced_eos_token_id, set here as there): that EOS is not counted, and the output
    is still truncated."""
    from peftrun.decode import generations

    loaded, method, fmt = setup(model_name)
    tok, eos = loaded.tokenizer, loaded.tokenizer.eos_token_id
    forced = loaded.arch.is_encoder_decoder
    if forced:
        loaded.model.generation_config.forced_eos_token_id = eos
    (word,) = ids(tok, " restaurant")
    hook = push_towards(loaded.model, word, eos, bias=80.0)  # word, then EOS
    cfg = DecodeConfig(num_beams=beams, max_new_tokens=8, batch_size=2, banned_strings=())
    sources = [*SOURCES, "name : Wildwood | food : Indian"]

    def decoded(**settings) -> list[tuple[str, int | None, bool | None]]:
        outputs = generations(loaded.model, method, fmt, sources, cfg.model_copy(update=settings), CPU)
        return [(g.text, g.tokens, g.truncated) for g in outputs]

    assert decoded() == [("restaurant", 1, False)] * 3
    assert decoded(max_new_tokens=1) == [("", 0, True) if forced else ("restaurant", 1, True)] * 3
    # `generate` gives the same texts (what every older caller reads).
    assert generate(loaded.model, method, fmt, sources, cfg, CPU) == ["restaurant"] * 3
    hook.remove()
    (other,) = ids(tok, " food")
    push_towards(loaded.model, word, other, bias=80.0)  # never an EOS
    endless = decoded(max_new_tokens=3)
    assert [(tokens, cut) for _, tokens, cut in endless] == [(2 if forced else 3, True)] * 3
    if forced:  # a total length (BART: with the start token) is a limit too
        assert [row[1:] for row in decoded(max_new_tokens=None, max_length=4)] == [(2, True)] * 3
