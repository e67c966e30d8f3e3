"""Base models and tokenizers: hub names, local paths, and the built-in tiny models.

`tiny-gpt2` and `tiny-bart` are real HF `GPT2LMHeadModel` / `BartForConditionalGeneration`
models made from small configs with random weights, plus a byte-level BPE tokenizer the project
ships (scripts/build_tiny_tokenizer.py). They let tests and the quickstart run offline.
Architecture facts (layer counts, sizes) are known without weights, so configs validate and
parameter counts work offline at real sizes too (`KNOWN_CONFIGS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.method_options import ArchSummary

ASSETS = Path(__file__).parent / "assets" / "tiny"
TINY_SPECIAL_IDS = {"<|endoftext|>": 0, "<pad>": 1, "<s>": 2, "</s>": 3, "<unk>": 4, "<mask>": 5}

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
KNOWN_CONFIGS["openai-community/gpt2-medium"] = KNOWN_CONFIGS["gpt2-medium"]
KNOWN_CONFIGS["openai-community/gpt2"] = KNOWN_CONFIGS["gpt2"]

BUILTIN: dict[str, dict[str, Any]] = {
    # 4 layers x 256 wide: big enough to write readable restaurant descriptions in minutes on a CPU.
    "tiny-gpt2": dict(
        model_type="gpt2", vocab_size=2048, n_positions=512, n_layer=4, n_embd=256, n_head=4,
        bos_token_id=0, eos_token_id=0,
    ),
    "tiny-bart": dict(
        model_type="bart", vocab_size=2048, max_position_embeddings=1024, d_model=128, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=512,
        decoder_ffn_dim=512, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3,
        forced_bos_token_id=2,
    ),
}  # fmt: skip
FAMILIES = ("gpt2", "bart")


def hf_config(name: str):
    """The model's HF config: built-in, known, local path, or the hub (no weights)."""
    from transformers import AutoConfig

    spec = BUILTIN.get(name)
    if spec is None and not Path(name).exists():
        spec = KNOWN_CONFIGS.get(name)
    if spec is not None:
        spec = dict(spec)
        return AutoConfig.for_model(spec.pop("model_type"), **spec)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _unloadable(name, err) from None
    if config.model_type not in FAMILIES:
        raise PeftrunError(f"model {name!r} is a {config.model_type}; peftrun supports {', '.join(FAMILIES)}")
    return config


def summarize(config) -> ArchSummary:
    """The facts config validation needs, read off an HF config."""
    if config.model_type == "gpt2":
        return ArchSummary("gpt2", config.n_layer, 0, config.n_embd, config.n_head, config.n_positions)
    return ArchSummary(
        "bart",
        config.decoder_layers,
        config.encoder_layers,
        config.d_model,
        config.decoder_attention_heads,
        config.max_position_embeddings,
    )


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
            model = auto.from_pretrained(name, attn_implementation=attention)
        except OSError as err:
            raise _unloadable(name, err) from None
    tokenizer = load_tokenizer(name, config)
    return LoadedModel(model, tokenizer, summarize(config), name)


def load_tokenizer(name: str, config=None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if name in BUILTIN:
        family = BUILTIN[name]["model_type"]
        file = ASSETS / f"{family}-tokenizer.json"
        if family == "gpt2":
            specials = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
            specials["pad_token"] = "<|endoftext|>"
        else:
            specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
            specials["mask_token"] = "<mask>"
        return PreTrainedTokenizerFast(tokenizer_file=str(file), **specials)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _unloadable(name, err) from None
    if tokenizer.pad_token is None:  # GPT-2 has none; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _unloadable(name: str, err: Exception) -> PeftrunError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return PeftrunError(
        f"cannot load model {name!r} ({first[:160]}); offline, point model.name at a local copy "
        f"(a folder with config.json and weights) or use a built-in model: {', '.join(BUILTIN)}"
    )


def attention_sites(model) -> dict[str, list]:
    """Attention modules by kind, in layer order (where prefix-tuning adds keys/values)."""
    if model.config.model_type == "gpt2":
        return {"self": [block.attn for block in model.transformer.h]}
    core = model.model
    return {
        "encoder": [layer.self_attn for layer in core.encoder.layers],
        "decoder": [layer.self_attn for layer in core.decoder.layers],
        "cross": [layer.encoder_attn for layer in core.decoder.layers],
    }


def input_stack(model):
    """The module that turns input ids into hidden states (GPT-2's transformer, BART's encoder):
    where soft prompts enter."""
    return model.transformer if model.config.model_type == "gpt2" else model.model.encoder


def reads_from_start(args: tuple, kwargs: dict) -> bool:
    """Whether a forward call of the input stack reads each sequence from its first token (training,
    or generate()'s first step) rather than only the new tokens after a KV cache.

    Decided from the tensors of the call, not from how a transformers release names its cache
    argument: an attention mask covers the cached tokens as well as the new ones, so the call
    reads from the start exactly when it brings as many tokens as the mask covers. Without a
    mask, any cache-like argument that already holds tokens (whatever its name) says no."""
    tokens = _call_tokens(args, kwargs)
    mask = kwargs.get("attention_mask")
    if tokens is not None and getattr(mask, "dim", lambda: 0)() == 2:
        return tokens.shape[1] == mask.shape[1]
    for value in kwargs.values():
        seen = getattr(value, "get_seq_length", None)
        if callable(seen) and seen() > 0:
            return False
    return True


def _call_tokens(args: tuple, kwargs: dict):
    """The (B, T) ids or (B, T, d) embeddings a forward call brings, positional or by name."""
    for name in ("input_ids", "inputs_embeds"):
        if kwargs.get(name) is not None:
            return kwargs[name]
    return args[0] if args else None


def count_parameters(parameters) -> int:
    """Distinct parameters' sizes (tied weights, e.g. GPT-2's embedding and LM head, count once)."""
    return sum(p.numel() for p in {id(p): p for p in parameters}.values())


def skeleton(name: str) -> LoadedModel:
    """The model's architecture on the meta device (no weights, no memory, no tokenizer): enough to
    count parameters at real sizes offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = hf_config(name)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config)
    return LoadedModel(model, None, summarize(config), name)
