"""Every attention kernel the config accepts (`model.attention`) gives the same outputs for every
method that injects into attention: prefix (every layer, embedding-only, infix, phrase-initialised)
on every family's tiny model. Run in float64, so the kernels may differ only by rounding."""

from __future__ import annotations

import typing
from types import SimpleNamespace

import pytest
import torch

from peftrun import models
from peftrun.config import DataConfig, DecodeConfig, ModelConfig
from peftrun.data.examples import Pair
from peftrun.data.formats import text_format
from peftrun.decode import generate
from peftrun.methods import options_for
from peftrun.methods.base import attach

SETTINGS = typing.get_args(ModelConfig.model_fields["attention"].annotation)
PAIRS = [
    Pair("name : Aromi | Type : pub | area : city centre", "Aromi is a pub in the city centre."),
    Pair("name : Zizzi | price : cheap", "Zizzi is cheap."),
]
CASES = {  # each injects keys/values into attention (the phrase fit also records them there)
    "every-layer": {"prefix_len": 3},
    "embedding-only": {"variant": "embedding-only", "prefix_len": 3},
    "infix": {"variant": "infix", "prefix_len": 3},
    "phrase": {"init_phrase": "table-to-text:", "reparametrize": False},  # P set to the phrase's K/V
}
RUN_CFG = SimpleNamespace(data=DataConfig(dataset="e2e"), decode=DecodeConfig(num_beams=2, max_new_tokens=5))


def outputs(model_name: str, attention: str, options: dict, state=None):
    loaded = models.load(model_name, attention=attention, seed=0)
    loaded.model.double()
    torch.manual_seed(0)
    method = attach(loaded, options_for("prefix", mlp_hidden=16, **options))
    if state is not None:
        method.load_training_state(state)
    method.initialize(PAIRS)
    fmt = method.wrap_format(text_format(loaded, RUN_CFG.data, method.room), RUN_CFG.decode)
    batch = fmt.training_batch(PAIRS)["inputs"]  # two rows of different lengths: padding masked
    method.set_training(False)
    with torch.no_grad(), method.active(len(PAIRS)):
        logits = loaded.model(**batch).logits
    texts = generate(
        loaded.model, method, fmt, [p.source for p in PAIRS], RUN_CFG.decode, torch.device("cpu")
    )
    return logits, texts, method


def test_the_config_accepts_more_than_one_kernel():
    assert {"sdpa", "eager"} <= set(SETTINGS)


@pytest.mark.parametrize("model_name", models.tiny_models())
@pytest.mark.parametrize("case", list(CASES))
def test_every_attention_setting_gives_the_same_outputs(case, model_name):
    arch = models.arch_summary(models.hf_config(model_name))
    if case == "infix" and arch.is_encoder_decoder:
        pytest.skip("infix is decoder-only (refused for encoder-decoder models: test_contract)")
    first, first_texts, method = outputs(model_name, SETTINGS[0], CASES[case])
    state = {name: value.clone() for name, value in method.training_state().items()}
    for setting in SETTINGS[1:]:
        logits, texts, _ = outputs(model_name, setting, CASES[case], state)
        # Llama's eager kernel takes its softmax in float32 even for a float64 model: its rounding.
        tolerance = 1e-6 if arch.family == "llama" else 1e-10
        torch.testing.assert_close(logits, first, atol=tolerance, rtol=tolerance)
        # Decoding pads on the left; Llama's eager kernel in float64 turns a fully padded query row
        # into NaN (float64's most negative mask value is -inf in its float32 softmax), and 0·NaN
        # reaches the real rows. A prefix keeps those rows finite (its columns are always visible);
        # an infix has none, so its texts are compared on the other kernels only.
        if not (arch.family == "llama" and setting == "eager" and case == "infix"):
            assert texts == first_texts, setting
    assert first.shape[0] == len(PAIRS)
