"""Token formats: truncation never overflows the model's positions; empty sources do not crash."""

from __future__ import annotations

import torch

from peftrun import models
from peftrun.config import DataConfig, DecodeConfig
from peftrun.data.examples import Pair
from peftrun.data.formats import IGNORE, text_format
from peftrun.decode import _fit_positions, generate, generation_config
from peftrun.methods import FullOptions
from peftrun.methods.base import attach

LONG = "The council said the road would close for repairs next week. " * 200  # ~2,400 tokens


def test_bart_sources_truncate_to_the_configured_length_and_keep_their_end_token():
    bart = models.load("tiny-bart", seed=0)
    fmt = text_format(bart, DataConfig(dataset="xsum", max_source_tokens=512, max_target_tokens=60))
    batch = fmt.training_batch([Pair(LONG, LONG), Pair("", "Empty article.")])
    ids = batch["inputs"]["input_ids"]
    assert ids.shape[1] == 512
    assert ids[0, -1] == bart.tokenizer.eos_token_id and ids[0, 0] == bart.tokenizer.bos_token_id
    assert ids[1, :2].tolist() == [
        bart.tokenizer.bos_token_id,
        bart.tokenizer.eos_token_id,
    ]  # the empty document
    assert (batch["labels"][0] != IGNORE).sum() == 60
    unlimited = text_format(bart, DataConfig(dataset="xsum"))
    assert (
        unlimited.training_batch([Pair(LONG * 2, "x")])["inputs"]["input_ids"].shape[1] == 1024
    )  # BART's positions
    with torch.no_grad():
        bart.model(**batch["inputs"])  # runs: nothing past the position table


def test_gpt2_prompt_and_target_fit_the_positions_and_decoding_never_crashes():
    gpt2 = models.load("tiny-gpt2", seed=0)
    fmt = text_format(gpt2, DataConfig(dataset="e2e"))
    batch = fmt.training_batch([Pair(LONG, LONG)])
    assert batch["inputs"]["input_ids"].shape[1] <= 512
    prompt = fmt.prompt_batch([LONG])
    assert prompt["input_ids"].shape[1] <= 512 // 2 + 2
    gen_cfg = generation_config(DecodeConfig(max_new_tokens=400), gpt2.tokenizer, gpt2.model.config)
    room = 512 - prompt["input_ids"].shape[1]
    capped = _fit_positions(gen_cfg, prompt, fmt.max_positions)
    assert capped.max_new_tokens == room  # capped, never past the positions
    method = attach(gpt2, FullOptions())
    outputs = generate(
        gpt2.model,
        method,
        fmt,
        ["", "name : Aromi"],
        DecodeConfig(num_beams=2, max_new_tokens=5),
        torch.device("cpu"),
    )
    assert len(outputs) == 2


def test_decoder_only_labels_cover_exactly_the_target_and_final_eos():
    gpt2 = models.load("tiny-gpt2", seed=0)
    fmt = text_format(gpt2, DataConfig(dataset="e2e"))
    pair = Pair("name : Aromi | area : city centre", "Aromi is in the city centre.")
    batch = fmt.training_batch([pair])
    ids, labels = batch["inputs"]["input_ids"][0].tolist(), batch["labels"][0].tolist()
    prompt, target = fmt.prompt_ids(pair.source), fmt.target_ids(pair.target)
    assert ids == prompt + target and prompt[-1] == target[-1] == gpt2.tokenizer.eos_token_id
    # Position i predicts token i+1: the labels are the target tokens, from the end of the prompt on.
    assert [t for t in labels if t != IGNORE] == target
    assert labels[len(prompt) - 1] == target[0]
