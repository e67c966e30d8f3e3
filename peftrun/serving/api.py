"""The Python API: one frozen base, many adapters, for notebooks and other programs.

    import peftrun
    lm = peftrun.load("runs/e2e-prefix-…", "lora=runs/e2e-lora-…")   # names: run dir names, or name=path
    lm.generate(["name[Alimentum], area[city centre]"], adapters="lora")   # or a list, one per input
    lm.logits(input_ids, attention_mask=None, adapter="lora")   # (B, T, V), token ids exactly as given
    lm.tokenizer, lm.model

`adapters` / `adapter` default to the first adapter loaded; None (or None in the list) means the
base model alone. Inputs are sources as the dataset holds them (E2E MRs, XSum documents).
"""

from __future__ import annotations

from collections.abc import Sequence

from peftrun.serving.adapters import FIRST_ADAPTER, AdapterSet, parse_adapter_args


class LanguageModel:
    """A base model with adapters loaded by name (see the module docstring)."""

    def __init__(self, adapters: AdapterSet) -> None:
        self.adapters = adapters

    @property
    def names(self) -> list[str]:
        return list(self.adapters.adapters)

    @property
    def tokenizer(self):
        return self.adapters.shared.tokenizer

    @property
    def model(self):
        """The frozen base (shared by every adapter that only adds to it)."""
        return self.adapters.shared.model

    def generate(self, inputs: str | Sequence[str], adapters=FIRST_ADAPTER) -> list[str]:
        """One output per input; `adapters`: one name (or None) for all, or one per input."""
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        chosen = self.adapters.named(adapters)
        names = list(chosen) if isinstance(chosen, (list, tuple)) else [chosen] * len(inputs)
        if len(names) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(names)} adapter names")
        return self.adapters.generate(inputs, names)

    def logits(self, input_ids, attention_mask=None, adapter=FIRST_ADAPTER, **model_inputs):
        """(B, T, V) logits of `input_ids` exactly as given (no token format applied)."""
        return self.adapters.logits(input_ids, attention_mask, self.adapters.named(adapter), **model_inputs)


def load(*adapters: str, base: str | None = None, device: str = "auto") -> LanguageModel:
    """Load a frozen base once and the adapters on it (`NAME=PATH` or `PATH`)."""
    aset = AdapterSet(base, device)
    for name, path in parse_adapter_args(adapters):
        aset.add(name, path)
    if aset.shared is None:
        if base is None:
            from peftrun.errors import PeftrunError

            raise PeftrunError("peftrun.load needs at least one adapter, or base=MODEL")
        from peftrun.config import Config, ModelConfig

        aset._load_base(Config(model=ModelConfig(name=base)))
    return LanguageModel(aset)
