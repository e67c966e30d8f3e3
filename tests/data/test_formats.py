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


SOURCE, TARGET = "name : Aromi | area : city centre", "Aromi is in the city centre."


def own_space_bos_tokenizer():
    """A word-level tokenizer with SentencePiece's conventions, as Llama's: every word starts with
    "▁" (the first one too: the tokenizer marks it itself) and a BOS is added."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = sorted(set((SOURCE + " " + TARGET + " x").split()))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, **{"▁" + w: i + 4 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


def test_gpt2_format_is_the_original_codes_text():
    """' ' + source + ' ' + EOS, then ' ' + target + ' ' + EOS; no BOS; padded with EOS."""
    gpt2 = models.load("tiny-gpt2", seed=0)
    fmt, tok = text_format(gpt2, DataConfig(dataset="e2e")), gpt2.tokenizer
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert fmt.prompt_ids(SOURCE) == ids(" " + SOURCE) + ids(" ") + [tok.eos_token_id]
    assert fmt.target_ids(TARGET) == ids(" " + TARGET) + ids(" ") + [tok.eos_token_id]
    assert fmt.prompt_batch([SOURCE, "x"])["input_ids"][1, 0] == tok.eos_token_id


def test_tiny_llama_format_follows_smollm2_conventions():
    """eos = pad = <|im_end|>, no BOS added; byte-level BPE words carry their space, as GPT-2's."""
    llama = models.load("tiny-llama", seed=0)
    fmt, tok = text_format(llama, DataConfig(dataset="e2e")), llama.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == tok.pad_token_id == end and llama.model.config.eos_token_id == end
    prompt = fmt.prompt_ids(SOURCE)
    assert prompt[-1] == end and tok.convert_tokens_to_ids("<|im_start|>") not in prompt
    assert tok.decode(prompt) == " " + SOURCE + " <|im_end|>"
    padded = fmt.training_batch([Pair(SOURCE, TARGET), Pair("x", "y")])["inputs"]["input_ids"]
    assert padded[1, -1] == end


def test_a_tokenizer_that_marks_the_first_word_and_adds_a_bos_gets_neither_twice():
    """Where the tokenizer marks a text's first word itself and adds a BOS: the prompt is its own
    encoding of the source (BOS included, no extra space), then the separator and EOS; in-context
    examples come after the one BOS."""
    tok = own_space_bos_tokenizer()
    llama = models.load("tiny-llama", seed=0)
    llama.tokenizer = tok
    fmt = text_format(llama, DataConfig(dataset="e2e"))
    assert tok(SOURCE)["input_ids"][0] == tok.bos_token_id  # the tokenizer adds it, this one says so
    assert tok.unk_token_id not in tok(SOURCE + " " + TARGET)["input_ids"]
    assert fmt.prompt_ids(SOURCE) == tok(SOURCE)["input_ids"] + fmt._ids(" ") + [tok.eos_token_id]
    assert fmt.target_ids(TARGET) == tok(TARGET, add_special_tokens=False)["input_ids"] + fmt._ids(" ") + [
        tok.eos_token_id
    ]
    assert fmt.target_ids(TARGET)[0] != tok.bos_token_id
    context = fmt.demonstration_ids(Pair(SOURCE, TARGET))
    assert tok.bos_token_id not in context
    prompt = fmt.with_context(context, fmt.prompt_ids("x"))
    assert prompt[0] == tok.bos_token_id and prompt.count(tok.bos_token_id) == 1
    assert prompt[1 : 1 + len(context)] == context
