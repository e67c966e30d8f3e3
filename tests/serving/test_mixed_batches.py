"""Rows with k different adapters (prefixes of different lengths, every-layer and embedding-only;
prompts and P-tuning prompts of different lengths; LoRAs of different ranks) and rows with none,
in one forward pass and one generate() call, equal each row run alone with its own adapter on a
model that has only that adapter (logits within 1e-5; greedy, beam and sampling outputs)."""

from __future__ import annotations

import pytest
import torch

from peftrun import models
from peftrun.config import DataConfig, DecodeConfig
from peftrun.data.formats import text_format
from peftrun.decode import decode_rows, generate
from peftrun.methods import options_for
from peftrun.methods.base import MethodBase, attach
from peftrun.methods.inject.rows import active_rows

SOURCES = [
    "name : Aromi | Type : pub | area : city centre",
    "name : The Punter | food : Thai",
    "name : Zizzi | price : cheap | near : The Bakers",
    "name : Cotto | area : riverside",
]
GPT2_ADAPTERS = [
    ("prefix", {"prefix_len": 2, "mlp_hidden": 16}),
    ("prefix", {"prefix_len": 5, "mlp_hidden": 16}),
    ("prefix", {"variant": "embedding-only", "prefix_len": 3, "mlp_hidden": 16}),
    ("prompt", {"prompt_len": 4, "init": "random"}),
    ("ptuning", {"prompt_len": 2, "encoder_hidden": 16}),
    ("lora", {"rank": 2}),
    ("lora", {"rank": 4, "targets": ["q", "k", "v"]}),
    None,
]
ADAPTERS = {
    "tiny-gpt2": GPT2_ADAPTERS,
    # The same on GQA prefixes (n_kv_head heads), rotary positions shifted per row; LoRA on every linear.
    "tiny-llama": [*GPT2_ADAPTERS[:6], ("lora", {"rank": 4, "targets": ["all-linear"]}), None],
    "tiny-bart": [
        ("prefix", {"prefix_len": 2, "mlp_hidden": 16}),
        ("prefix", {"prefix_len": 5, "mlp_hidden": 16}),
        ("prefix", {"variant": "embedding-only", "prefix_len": 3, "mlp_hidden": 16}),
        ("prompt", {"prompt_len": 4, "init": "random"}),
        ("lora", {"rank": 2}),
        ("lora", {"rank": 4}),
        None,
    ],
}


def randomise(method, seed: int) -> None:
    """Adapters far from their (often zero) initialisation, so each row's adapter matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.3)


class NoAdapter(MethodBase):
    """The base model alone."""

    def __init__(self, model) -> None:
        self.model = model

    def set_training(self, training: bool) -> None:
        self.model.eval()


@pytest.fixture(scope="module", params=list(ADAPTERS))
def setup(request, tmp_path_factory):
    """A shared base with every adapter attached, and each adapter alone on a fresh model."""
    name = request.param
    # float64: what is left of a difference is the method's, not float32 summation order
    shared = models.load(name, seed=0)
    shared.model.double().eval()
    data = DataConfig(dataset="e2e")
    rows, alone = [], []
    for index, spec in enumerate(ADAPTERS[name]):
        fresh = models.load(name, seed=0)
        fresh.model.double().eval()
        if spec is None:
            rows.append((None, text_format(shared, data)))
            alone.append((fresh, None, text_format(fresh, data)))
            continue
        kind, options = spec
        method = attach(shared, options_for(kind, **options))
        randomise(method, index)
        folder = tmp_path_factory.mktemp(f"{name}-{index}")
        method.save(folder)
        method.load(folder)  # serve what is stored (a prefix drops its MLP)
        method.set_training(False)
        with torch.no_grad():
            rows.append((method.row_inputs(), text_format(shared, data, method.room)))
        own = attach(fresh, options_for(kind, **options))
        own.load(folder)
        own.set_training(False)
        alone.append((fresh, own, text_format(fresh, data, own.room)))
    return name, shared, rows, alone


def test_mixed_logits_equal_each_row_alone(setup):
    name, shared, rows, alone = setup
    source = SOURCES[0]
    ids = [fmt.prompt_ids(source) for _, fmt in rows]
    width = max(map(len, ids))
    batch = torch.tensor([row + [1] * (width - len(row)) for row in ids])  # right padding
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    extra = {}
    if shared.arch.is_encoder_decoder:
        extra["decoder_input_ids"] = torch.tensor([[3, 40, 41, 42]] * len(rows))
    with torch.no_grad(), active_rows(shared.model, [inputs for inputs, _ in rows]):
        mixed = shared.model(input_ids=batch, attention_mask=mask, **extra).logits
    for r, (model, method, _) in enumerate(alone):
        one = torch.tensor([ids[r]])
        one_extra = {k: v[r : r + 1] for k, v in extra.items()}
        context = method.active(1) if method is not None else torch.no_grad()
        with torch.no_grad(), context:
            expected = model.model(input_ids=one, **one_extra).logits
        if shared.arch.is_encoder_decoder:
            torch.testing.assert_close(mixed[r], expected[0], atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(mixed[r, : len(ids[r])], expected[0], atol=1e-5, rtol=1e-5)
    # The no-adapter row is the base model itself, and the adapters really differ from it.
    assert (mixed[0] - mixed[-1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "settings",
    [
        {"num_beams": 1},
        {"num_beams": 3},
        {"num_beams": 1, "do_sample": True, "top_k": 1},  # sampling's code path; top-1 is deterministic
    ],
    ids=["greedy", "beam", "sampling"],
)
def test_one_generate_call_equals_each_row_alone(setup, settings):
    name, shared, rows, alone = setup
    cfg = DecodeConfig(max_new_tokens=6, batch_size=64, banned_strings=[], **settings)
    sources = [SOURCES[i % len(SOURCES)] for i in range(len(rows))]
    formats = [fmt for _, fmt in rows]
    inputs = [row_inputs for row_inputs, _ in rows]

    def context(chunk):
        return active_rows(shared.model, [inputs[i] for i in chunk])

    mixed = decode_rows(shared.model, formats, sources, context, cfg, torch.device("cpu"))
    for r, (model, method, fmt) in enumerate(alone):
        if method is None:
            method = NoAdapter(model.model)
        expected = generate(model.model, method, fmt, [sources[r]], cfg, torch.device("cpu"))
        assert mixed[r] == expected[0], (r, ADAPTERS[name][r])
    assert len(set(mixed)) > 1


def test_beam_search_rows_are_hfs_own_beam_search(setup):
    """`num_beams` reaches generate() for every family, encoder-decoders too: each row of a mixed
    beam batch is what HF's generate(num_beams=3) gives for that row alone, called here directly
    (the batch-vs-alone test above decodes both sides with peftrun's own settings)."""
    from contextlib import nullcontext

    from transformers import GenerationConfig

    from peftrun.decode import output_text

    name, shared, rows, alone = setup
    cfg = DecodeConfig(num_beams=3, max_new_tokens=6, batch_size=64, banned_strings=[])
    sources = [SOURCES[i % len(SOURCES)] for i in range(len(rows))]
    inputs = [row_inputs for row_inputs, _ in rows]

    def decoded(settings: DecodeConfig) -> list[str]:
        context = lambda chunk: active_rows(shared.model, [inputs[i] for i in chunk])  # noqa: E731
        return decode_rows(
            shared.model, [fmt for _, fmt in rows], sources, context, settings, torch.device("cpu")
        )

    beams = decoded(cfg)
    for r, (model, method, fmt) in enumerate(alone):
        prompt = fmt.prompt_batch([sources[r]])
        hf = GenerationConfig(
            num_beams=3, do_sample=False, max_new_tokens=6, eos_token_id=fmt.tokenizer.eos_token_id,
            pad_token_id=fmt.tokenizer.pad_token_id,
            decoder_start_token_id=getattr(model.model.config, "decoder_start_token_id", None),
        )  # fmt: skip
        with torch.no_grad(), method.active(1) if method is not None else nullcontext():
            output = model.model.generate(**prompt, generation_config=hf)
        assert beams[r] == output_text(fmt.tokenizer, fmt.generated_ids(output, prompt)[0]), r
    assert beams != decoded(cfg.model_copy(update={"num_beams": 1})), "beams found other outputs than greedy"
