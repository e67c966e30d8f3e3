"""Base models and tokenizers: hub names, local paths, and the built-in tiny models.

`tiny-gpt2` and `tiny-bart` are real HF `GPT2LMHeadModel` / `BartForConditionalGeneration`
models made from small configs with random weights, plus a byte-level BPE tokenizer the project
ships (scripts/build_tiny_tokenizer.py). They let tests and the quickstart run offline.
Architecture facts (layer counts, sizes) are known without weights, so configs validate and
parameter counts work offline at real sizes too (`KNOWN_CONFIGS`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError

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


# --------------------------------------------------------------------------- model families


@dataclass(frozen=True)
class Family:
    """Where one model family keeps its parts, as attribute paths from the HF model object, and
    how its config names its sizes. Methods and mechanisms find modules only through this, so a
    new family (T5, a Llama-style decoder) is one entry here plus tests.

    Stacks are the lists of transformer blocks ("encoder", "decoder"); attention kinds are where a
    prefix adds keys/values, each (stack, attribute of a block). Projections name the attention
    module's q/k/v/o layers; names shared by q, k and v mean one fused layer whose output is
    [q | k | v] (GPT-2's `c_attn`)."""

    name: str
    sizes: dict[str, str | None]  # ArchSummary field → HF config attribute (None: 0)
    stacks: dict[str, str]
    attention: dict[str, tuple[str, str]]
    projections: dict[str, str]
    sublayers: dict[str, str]  # "attention" / "ffn" → the block's sublayer module (its output, pre-residual)
    input_stack: str  # turns input ids into hidden states: where soft prompts enter
    decoder_stack: str  # runs the decoder (GPT-2: the whole transformer)
    encoder_stack: str | None
    token_embedding: str
    position_embedding: str | None  # learned absolute positions a prefix's offset can shift
    final_norm: str | None  # the decoder's norm after its last block (absent in BART)
    embedding_norm: str | None  # a decoder-side norm outside the blocks, when there is no final one
    lm_head: str = "lm_head"
    conv1d: bool = False  # TEMP shim (wt-family): weights stored (in, out), as GPT-2's Conv1D
    encoder_decoder: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_decoder", self.encoder_stack is not None)

    def get(self, model, path: str | None):
        """The module at `path` (None when the path is None or the model has no such module)."""
        if path is None:
            return None
        try:
            return operator.attrgetter(path)(model)
        except AttributeError:
            return None

    def blocks(self, model, stack: str) -> list:
        return list(self.get(model, self.stacks[stack]))

    def projection_slices(self, hidden: int) -> dict[str, tuple[str, int, int]]:
        """q/k/v/o → (attribute of the attention module, first and end output column)."""
        fused = self.projections["q"] == self.projections["k"] == self.projections["v"]
        out = {}
        for index, target in enumerate(("q", "k", "v", "o")):
            if fused and target != "o":
                out[target] = (self.projections[target], index * hidden, (index + 1) * hidden)
            else:
                out[target] = (self.projections[target], 0, hidden)
        return out


FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        sizes=dict(n_layer="n_layer", n_encoder_layer=None, hidden="n_embd", n_head="n_head",
                   max_positions="n_positions"),
        stacks={"decoder": "transformer.h"},
        attention={"self": ("decoder", "attn")},
        projections={"q": "c_attn", "k": "c_attn", "v": "c_attn", "o": "c_proj"},
        sublayers={"attention": "attn", "ffn": "mlp"},
        input_stack="transformer",
        decoder_stack="transformer",
        encoder_stack=None,
        token_embedding="transformer.wte",
        position_embedding="transformer.wpe",
        final_norm="transformer.ln_f",
        embedding_norm=None,
        conv1d=True,  # TEMP shim (wt-family)
    ),
    "bart": Family(
        name="bart",
        sizes=dict(n_layer="decoder_layers", n_encoder_layer="encoder_layers", hidden="d_model",
                   n_head="decoder_attention_heads", max_positions="max_position_embeddings"),
        stacks={"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"},
        attention={"encoder": ("encoder", "self_attn"), "decoder": ("decoder", "self_attn"),
                   "cross": ("decoder", "encoder_attn")},
        projections={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"},
        sublayers={"attention": "self_attn", "ffn": "fc2"},
        input_stack="model.encoder",
        decoder_stack="model.decoder",
        encoder_stack="model.encoder",
        token_embedding="model.shared",
        position_embedding=None,  # BART's learned positions: the original code never shifted them
        final_norm="model.decoder.layer_norm",  # mBART-style models have it; BART has not
        embedding_norm="model.decoder.layernorm_embedding",
    ),
}  # fmt: skip


def family_of(model) -> Family:
    return FAMILIES[model.config.model_type]


@dataclass(frozen=True)
class ArchSummary:
    """What validation needs to know of a model, read from its config (no weights)."""

    family: str  # a key of FAMILIES
    n_layer: int  # decoder layers (GPT-2: all layers)
    n_encoder_layer: int  # 0 for decoder-only models
    hidden: int
    n_head: int
    max_positions: int

    @property
    def is_encoder_decoder(self) -> bool:
        return self.n_encoder_layer > 0

    @property
    def n_kv_head(self) -> int:  # TEMP shim (wt-family)
        return self.n_head

    @property
    def head_dim(self) -> int:  # TEMP shim (wt-family)
        return self.hidden // self.n_head

    @property
    def shifts_positions(self) -> bool:
        """Whether real tokens' positions can be offset (the family has learned absolute positions
        and is decoder-only, as the original prefix code's GPT-2)."""
        return FAMILIES[self.family].position_embedding is not None


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
    family = FAMILIES[config.model_type]
    sizes = {name: getattr(config, key) if key else 0 for name, key in family.sizes.items()}
    return ArchSummary(family.name, **sizes)


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
            model = auto.from_pretrained(name, attn_implementation=attention)
        except OSError as err:
            raise _unloadable(name, err) from None
    tokenizer = load_tokenizer(name, config)
    return LoadedModel(model, tokenizer, summarize(config), name)


@lru_cache(maxsize=8)
def cached_tokenizer(name: str):
    """One tokenizer per model name and process (validation of many sweep points); from local
    files only (validation must not wait on the network)."""
    return load_tokenizer(name, local_only=True)


def load_tokenizer(name: str, config=None, local_only: bool = False):
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
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
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
    family = family_of(model)
    return {
        kind: [getattr(block, attribute) for block in family.blocks(model, stack)]
        for kind, (stack, attribute) in family.attention.items()
    }


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
    return LoadedModel(model, None, summarize(config), name)
