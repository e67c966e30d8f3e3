"""Experiment config: typed sections, YAML plus dotted overrides, one-line errors with suggestions.

Config is data: every section is a pydantic model with `extra="forbid"`, so a misspelt key is an
error naming the closest valid key; YAML values such as `5e-5` (a string to PyYAML) are coerced
to the declared type. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from peftrun.errors import PeftrunError
from peftrun.later_keys import OMIT_AT_DEFAULT, later_field
from peftrun.methods import METHOD_KINDS, REGISTRY, AnyMethodOptions
from peftrun.methods.finetune_options import FullOptions

DATASETS = ("e2e", "xsum")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def dump_without_later_defaults(model: BaseModel) -> dict[str, Any]:
    """model_dump(mode="json") less the later-added keys that hold their default, at every depth."""
    out = model.model_dump(mode="json")
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = dump_without_later_defaults(value)
        elif field.json_schema_extra == OMIT_AT_DEFAULT and value == field.get_default(
            call_default_factory=True
        ):
            del out[name]
    return out


class ModelConfig(_Section):
    """The frozen (or fully trained) base model."""

    name: str = Field("tiny-gpt2", description="hub name, local path, or built-in tiny model")
    attention: Literal["sdpa", "eager"] = Field("sdpa", description="attention kernel")
    seed: int | None = Field(
        None, description="built-in tiny models: seed of their random weights (default: train.seed)"
    )


class DataConfig(_Section):
    """Which dataset, which references, how much of it."""

    dataset: Literal["e2e", "xsum"] = Field("e2e", description="E2E table-to-text or XSum summarisation")
    reference_style: Literal["raw", "tokenized"] = Field(
        "raw", description="E2E: CSV text (the challenge) or tokenised (the paper)"
    )
    data_dir: str | None = Field(None, description="E2E: folder of the official CSVs")
    files: dict[str, str] = Field(
        default_factory=dict, description="XSum: {train,dev,test} → local JSONL/parquet"
    )
    url_file: str | None = Field(None, description="XSum: the authors' archived-URL list")
    extrapolation: Literal["news-to-sports", "within-news"] | None = Field(
        None, description="XSum topic split of the paper's Table 4 (needs url_file)"
    )
    drop_sources: bool = Field(
        False, description="train a plain language model on the targets alone (sources dropped)"
    )
    train_size: int | None = Field(None, gt=0, description="seeded random subset of train pairs")
    subset_seed: int = Field(0, description="seed of the train_size subset")
    dev_loss_size: int | None = Field(
        None,
        gt=0,
        description="dev pairs used for dev loss (all if unset), drawn at random with subset_seed + 1; "
        "with decode.sample on dev, only from the dev pairs whose source it does not decode",
    )
    max_source_tokens: int | None = Field(
        None, gt=0, description="truncate sources (source_prefix and the chat instruction not counted)"
    )
    max_target_tokens: int | None = Field(None, gt=0, description="truncate training targets")
    source_prefix: str | None = later_field(
        None,
        "plain text put before every source (training, dev loss, decoding, demonstrations), e.g. "
        "'table-to-text:' (the paper's low-data fine-tuning baseline)",
        min_length=1,
    )
    format: Literal["plain", "chat"] = later_field(
        "plain",
        "token layout: plain (GPT-2 style ' source <eos> target <eos>'; BART: the source to the "
        "encoder) or chat (decoder-only instruct models: the source as a user message, the target "
        "as the assistant's reply, through the tokenizer's own chat template)",
    )
    instruction: str | None = later_field(
        None,
        "chat: the user message's instruction, before the source (default: E2E 'Write a "
        "one-sentence restaurant description from this table.', XSum 'Summarize this article in "
        "one sentence.')",
        min_length=1,
    )
    group_by_length: bool = later_field(
        False,
        "training batches of similar length (~1% padding on E2E instead of ~26-34%): seeded, "
        "shuffled mega-batches of 50 batches, sorted by length inside and cut into batches, the "
        "batches shuffled (~1.4x faster; with a token_mean loss it also weighs short pairs more); "
        "false: plain shuffled batches (the default, so runs made before this key resume unchanged)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.dataset == "e2e" and (self.files or self.url_file or self.extrapolation):
            raise ValueError(
                "data.files, data.url_file and data.extrapolation are XSum options; E2E reads data.data_dir"
            )
        if self.dataset == "xsum" and self.data_dir:
            raise ValueError("data.data_dir is the E2E folder; XSum reads data.files.{train,dev,test}")
        if self.extrapolation and not self.url_file:
            raise ValueError(
                f"data.extrapolation={self.extrapolation} needs data.url_file (the XSum URL list that "
                "gives each article's topic)"
            )
        if self.instruction is not None and self.format != "chat":
            raise ValueError("data.instruction is the chat format's user instruction: set data.format=chat")
        return self


# The metrics of a run's dev curve (train.decode_every), by dataset: the E2E suite without METEOR
# (it needs Java and takes seconds per call), XSum's ROUGE. Each is better higher.
CURVE_METRICS = {
    "e2e": ("BLEU", "NIST", "BLEU_py", "NIST_py", "ROUGE_L", "CIDEr"),
    "xsum": ("ROUGE-1", "ROUGE-2", "ROUGE-L"),
}


class TrainConfig(_Section):
    """The optimisation loop (one loop for every method)."""

    lr: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    epochs: int = Field(5, ge=0, description="passes over the training pairs (0: no training)")
    max_steps: int | None = Field(None, gt=0, description="stop after this many updates")
    batch_size: int = Field(10, gt=0, description="pairs per micro-batch")
    grad_accum: int = Field(1, gt=0, description="micro-batches per update")
    warmup_steps: int = Field(0, ge=0, description="linear warmup updates, then the lr_schedule")
    lr_schedule: Literal["linear", "constant"] = later_field(
        "linear",
        "after the warmup: linear decay to 0 at the last update, or constant (so the weights at update "
        "k are a fair 'trained k updates' point of a learning curve, whatever max_steps is)",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (None: off)")
    precision: Literal["fp32", "bf16", "bf16-frozen", "fp64"] = Field(
        "fp32",
        description="bf16: autocast the forward pass; bf16-frozen: the frozen base's weights in bf16, "
        "the trained parameters, their optimizer state and the loss in fp32 (methods that keep the "
        "base frozen; ~1.45x faster per update on a 2-core CPU); fp64: base model and method in float64, "
        "for exactness checks",
    )
    seed: int = Field(101, description="seed of initialisation, shuffling and dropout (paper: 101)")
    loss_reduction: Literal["sequence_sum", "token_mean"] = Field(
        "token_mean",
        description="sum token losses per sequence then mean over the batch (paper's GPT-2 "
        "prefix runs), or mean over all target tokens (its fine-tuning and BART runs)",
    )
    eval_every: int = Field(0, ge=0, description="dev loss every N updates (0: each epoch)")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N updates (0: each epoch)")
    select: Literal["last", "best"] = Field(
        "last", description="decode the last checkpoint or the best by dev loss (or by early_stopping_metric)"
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="stop after N dev evaluations without improvement"
    )
    decode_every: int = later_field(
        0, "decode the dev curve subset greedily and score it every N updates (0: off)", ge=0
    )
    decode_dev_size: int = later_field(
        64,
        "dev instances of the curve: the first N unique dev sources in file order, or with "
        "decode.sample N of its seeded draw (a subset of the dev sources decoded at the end)",
        gt=0,
    )
    early_stopping_metric: str = later_field(
        "dev_loss",
        "what early stopping and select=best watch: dev_loss (lower is better) or a dev curve "
        "metric, e.g. BLEU (higher is better; needs decode_every)",
    )
    log_every: int = Field(10, gt=0, description="train_log.jsonl line every N updates")
    compile: bool = later_field(
        False,
        "run the training forward and backward through torch.compile (CPU and CUDA; every method): "
        "faster steps after a warm-up paid once per run process; dev loss, decoding and packed runs "
        "stay eager",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")

    @model_validator(mode="before")
    @classmethod
    def _decode_every_none_is_off(cls, data: Any) -> Any:
        if isinstance(data, dict) and "decode_every" in data and data["decode_every"] is None:
            data = {**data, "decode_every": 0}
        return data

    @model_validator(mode="after")
    def _curve_metric(self) -> TrainConfig:
        if self.early_stopping_metric != "dev_loss" and not self.decode_every:
            raise ValueError(
                f"early_stopping_metric={self.early_stopping_metric} is scored on the dev curve: set "
                "train.decode_every > 0 (or watch dev_loss)"
            )
        return self


class DecodeConfig(_Section):
    """Beam search (num_beams=1: greedy). Every value explicit, none inherited from the model."""

    splits: tuple[Literal["dev", "test"], ...] = Field(
        ("dev", "test"), description="splits decoded after training"
    )
    limit: int | None = Field(None, gt=0, description="decode only the first N instances (file order)")
    sample: int | None = later_field(
        None,
        "decode N unique sources drawn at random (seed: sample_seed), kept in file order, instead of "
        "the first N (limit); the same N and seed give the same instances in every run",
        gt=0,
    )
    sample_seed: int = later_field(0, "seed of the decode.sample draw")
    batch_size: int = Field(16, gt=0, description="sources per generate() call")
    num_beams: int = Field(5, gt=0, description="beam size (1: greedy)")
    do_sample: bool = Field(False, description="sample instead of searching (with top_k, top_p, temperature)")
    top_k: int | None = Field(None, gt=0, description="sampling: keep the k most likely tokens")
    top_p: float | None = Field(None, gt=0, le=1, description="sampling: keep the top-p probability mass")
    temperature: float = Field(1.0, gt=0, description="sampling: divide the logits by this")
    max_new_tokens: int | None = Field(100, gt=0, description="most tokens generated")
    max_length: int | None = Field(
        None, gt=0, description="total length as HF counts it (BART: with the start token)"
    )
    min_length: int | None = Field(None, ge=0, description="as max_length")
    min_new_tokens: int | None = Field(
        None, ge=0, description="fewest tokens generated (the EOS is held back until then)"
    )
    length_penalty: float = Field(1.0, description="HF beam score = logprob sum / length**penalty")
    no_repeat_ngram_size: int = Field(0, ge=0, description="forbid repeating n-grams (0: off)")
    early_stopping: bool = Field(False, description="stop beam search once num_beams hypotheses end")
    forced_bos: bool = Field(False, description="force BOS as the first generated token (BART)")
    banned_strings: tuple[str, ...] = Field(
        ("\n", "\n\n"), description="strings never generated (looked up in the tokenizer)"
    )

    @model_validator(mode="after")
    def _one_subset(self) -> DecodeConfig:
        if self.limit is not None and self.sample is not None:
            raise ValueError(
                "decode.limit (the first N) and decode.sample (N at random) exclude each other; set one"
            )
        return self

    @model_validator(mode="after")
    def _lengths(self) -> DecodeConfig:
        if self.max_new_tokens is None and self.max_length is None:
            raise ValueError("set decode.max_new_tokens or decode.max_length (else outputs never end)")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(
                f"decode.min_length={self.min_length} exceeds decode.max_length={self.max_length}"
            )
        return self


class OutputConfig(_Section):
    """Where the run directory goes, and which experiment trackers also get the training log."""

    root: str = Field("runs", description="parent of derived run directories")
    run_dir: str | None = Field(None, description="explicit run directory (overrides root)")
    trackers: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = Field(
        (), description="also log train_log.jsonl's records to these trackers (through accelerate)"
    )


class Config(_Section):
    """A whole experiment."""

    name: str | None = Field(None, description="run name (default: dataset-model-method)")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: AnyMethodOptions = Field(default_factory=FullOptions)
    train: TrainConfig = TrainConfig()
    decode: DecodeConfig = DecodeConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _frozen_base(self) -> Config:
        if self.train.precision == "bf16-frozen" and self.method.trains_base_weights:
            raise PeftrunError(
                f"config error: train.precision=bf16-frozen keeps a frozen base in bf16, and method.kind="
                f"{self.method.kind} trains the base's own weights (they would have to stay fp32, and bf16 "
                "frozen weights would meet fp32 trained ones inside one layer); use train.precision=bf16"
            )
        return self

    @model_validator(mode="after")
    def _curve_metric_of_the_dataset(self) -> Config:
        metric, metrics = self.train.early_stopping_metric, CURVE_METRICS[self.data.dataset]
        if metric != "dev_loss" and metric not in metrics:
            raise PeftrunError(
                f"config error: train.early_stopping_metric={metric!r} is not a {self.data.dataset} dev "
                f"curve metric; choose dev_loss or one of: {', '.join(metrics)}"
            )
        return self

    def run_name(self) -> str:
        base = self.name or f"{self.data.dataset}-{Path(self.model.name).name}-{self.method.kind}"
        return f"{base}-{self.short_hash()}"

    def short_hash(self) -> str:
        """Hash of everything that changes results (not where outputs go)."""
        payload = {k: v for k, v in self.dump().items() if k != "output"}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return digest[:8]

    def base_seed(self) -> int:
        """The seed a built-in model's random weights come from (a hub model ignores it)."""
        return self.model.seed if self.model.seed is not None else self.train.seed

    def run_dir(self) -> Path:
        if self.output.run_dir:
            return Path(self.output.run_dir)
        return Path(self.output.root) / self.run_name()

    def dump(self) -> dict[str, Any]:
        """Every value, as plain data (later-added keys at their default left out: OMIT_AT_DEFAULT)."""
        return dump_without_later_defaults(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.dump(), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a config with both is a mistake."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text → data; a syntax error is one line naming `where`, the line and the column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if "\t" in problem or "'\\t'" in problem:
            problem += " (YAML indents with spaces, not tabs)"
        raise PeftrunError(f"YAML syntax error in {where}{at}: {problem}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, empty or unreadable file or a syntax error is a one-line
    PeftrunError."""
    from peftrun.files import read_utf8

    text = read_utf8(path, "config file")
    data = parse_yaml(text, str(path))
    if data is None:
        raise PeftrunError(f"config file {path} is empty; it needs at least model:, data: and method:")
    if not isinstance(data, dict):
        raise PeftrunError(
            f"{path} must be a YAML mapping of sections (model:, data:, ...), not a {type(data).__name__}"
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML (so `true`, `5e-5`, `[a]`)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PeftrunError(f"override {item!r} is not key=value (e.g. train.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise PeftrunError(
                f"override {item!r}: the value is not valid YAML ({problem}); quote it, e.g. {key}='\"...\"'"
            ) from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PeftrunError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def build(data: dict[str, Any]) -> Config:
    """Validate plain data into a Config, turning pydantic's report into one readable line."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise PeftrunError(_describe(err.errors()[0], data)) from None


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Phase one: the config file plus overrides, typed and validated (no model needed)."""
    return build(apply_overrides(read_yaml(Path(path)), overrides or []))


# --------------------------------------------------------------------------- error messages


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        valid = ", ".join(METHOD_KINDS)
        got = _lookup(data, loc + ["kind"])
        return f"config error: method.kind {got!r} is not a method; choose one of: {valid}"
    # Tagged unions put the tag in the location (method.prefix.prefix_len); drop it.
    if loc and loc[0] == "method" and len(loc) > 1 and loc[1] in METHOD_KINDS:
        loc = [loc[0]] + loc[2:]
    where = ".".join(loc)
    if kind == "extra_forbidden":
        return f"config error: {unknown_key(loc, data)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        if loc == ["data", "dataset"]:
            expected = ", ".join(DATASETS)
        return f"config error: {where} = {error.get('input')!r} is not valid; choose one of: {expected}"
    if kind == "value_error":  # our own validators' messages are complete sentences
        return f"config error: {where}: {error['msg'].removeprefix('Value error, ')}"
    return f"config error: {where}: {error['msg']} (got {error.get('input')!r})"


def _lookup(data: Any, loc: list[str]) -> Any:
    for part in loc:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def unknown_key(loc: list[str], data: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    """The message "unknown key 'a.b' (did you mean 'a.c'?)" for a key at `loc` that `model`
    (default: Config) has no field for: one wording of this mistake in run configs and sweep files."""
    suggestion = _closest(loc, data, model or Config)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return f"unknown key {'.'.join(loc)!r}{hint}"


def _closest(loc: list[str], data: dict[str, Any], model: type[BaseModel]) -> str | None:
    """The valid key nearest to the unknown one at `loc`."""
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if part == "method":
            entry = REGISTRY.get(_lookup(data, ["method", "kind"]))
            annotation = entry.options if entry else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    matches = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.5)
    if matches:
        return ".".join(loc[:-1] + [matches[0]])
    return None
