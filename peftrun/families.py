"""Model families: what peftrun knows of each transformer layout, in one table.

A `Family` says where a layout keeps its parts (attribute paths from the HF model object), how its
config names its sizes (layers, width, query and key/value heads, head size), how its projections
are stored (Conv1D or Linear, fused or not) and how wide each is, which norm it uses, how real
tokens are renumbered behind a prefix (a learned position table or the position_ids a rotary model
reads), and its special tokens. Methods and mechanisms find modules and shapes only through this,
so a new family is one entry here plus a tiny model and its parameter formula
(tests/methods/test_contract.py). `ArchSummary` is a model's shapes read off its config.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

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


def attention_sites(model) -> dict[str, list]:
    """Attention modules by kind, in layer order (where prefix-tuning adds keys/values)."""
    family = family_of(model)
    return {
        kind: [getattr(block, attribute) for block in family.blocks(model, stack)]
        for kind, (stack, attribute) in family.attention.items()
    }
