"""The method registry: `method.kind` → its options (validated with the config) and its
implementation (imported on first use).

This module imports neither torch nor transformers, so config validation and `peftrun --help`
stay light. A new method is two files (`<method>_options.py`, `<method>.py`) and one line in
`REGISTRY`; tests/methods/test_contract.py refuses a registered kind without a contract case.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Annotated, Union

from pydantic import Field

from peftrun.methods.adapter_options import BottleneckAdapterOptions
from peftrun.methods.finetune_options import BitFitOptions, FeatureExtractionOptions, FullOptions, TopKOptions
from peftrun.methods.icl_options import ICLOptions
from peftrun.methods.lora_options import LoRAOptions
from peftrun.methods.options import MethodOptions
from peftrun.methods.prefix_options import PrefixOptions
from peftrun.methods.prompt_options import PromptOptions
from peftrun.methods.ptuning_options import PTuningOptions


@dataclass(frozen=True)
class Registered:
    """One method: its options class (whose `kind` default names it) and "module:Class"."""

    options: type[MethodOptions]
    implementation: str

    @property
    def kind(self) -> str:
        return self.options.model_fields["kind"].default

    def load(self) -> type:
        module, name = self.implementation.split(":")
        return getattr(import_module(module), name)


_METHODS = (
    Registered(FullOptions, "peftrun.methods.finetune:Full"),
    Registered(PrefixOptions, "peftrun.methods.prefix:Prefix"),
    Registered(TopKOptions, "peftrun.methods.finetune:TopK"),
    Registered(BitFitOptions, "peftrun.methods.finetune:BitFit"),
    Registered(FeatureExtractionOptions, "peftrun.methods.finetune:FeatureExtraction"),
    Registered(LoRAOptions, "peftrun.methods.lora:LoRA"),
    Registered(BottleneckAdapterOptions, "peftrun.methods.adapter:BottleneckAdapter"),
    Registered(PromptOptions, "peftrun.methods.prompt:Prompt"),
    Registered(PTuningOptions, "peftrun.methods.ptuning:PTuning"),
    Registered(ICLOptions, "peftrun.methods.icl:InContext"),
)
REGISTRY: dict[str, Registered] = {entry.kind: entry for entry in _METHODS}
METHOD_KINDS: tuple[str, ...] = tuple(REGISTRY)
AnyMethodOptions = Annotated[
    Union[tuple(entry.options for entry in _METHODS)],  # noqa: UP007
    Field(discriminator="kind"),
]


def options_for(kind: str, **values) -> MethodOptions:
    """The validated options of `kind` (for code that builds a method without a config file)."""
    return REGISTRY[kind].options(kind=kind, **values)
