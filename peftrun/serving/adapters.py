"""One frozen base model, many adapters: the paper's mixed-batch promise (Li & Liang Sec. 1).

A prefix, a soft prompt, P-tuning's prompt or a LoRA only adds to a frozen base, so one base can
serve rows of many adapters in the same batch (peftrun.methods.inject.rows). `AdapterSet` loads
the base once, attaches every such adapter to it, and decodes rows of any adapters (or none) in
mixed batches. Methods that change the base itself (full, top-k, BitFit, feature extraction, our
bottleneck adapters, an infix inside the token sequence) get a model of their own and their rows
are decoded in groups, one adapter at a time; so are rows whose decoding settings differ (one
generate() call has one set). Both are said once, on stderr.

An adapter is a peftrun run directory or its `adapter/` folder (the run's resolved config gives its
method, token format, truncation and decoding settings), or an HF peft adapter folder (imported by
peftrun.serving.peft_import).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from peftrun.errors import PeftrunError
from peftrun.models import base_identity
from peftrun.runs import ADAPTER, ADAPTER_META
from peftrun.serving.peft_files import PEFT_CONFIG

# Where no adapter is named (`peftrun.load`'s default, a generate line without "adapter"): the
# first adapter loaded. None, by contrast, names the base model alone.
FIRST_ADAPTER = object()


@dataclass
class Adapter:
    """One loaded adapter: where it came from, its config, its method (attached to the shared
    base or to a model of its own), its token format and its decoding settings."""

    name: str
    path: Path
    cfg: object  # peftrun.config.Config
    method: object
    format: object
    shared: bool
    model: object  # the shared base, or the adapter's own model

    def decode_key(self) -> str:
        return json.dumps(self.cfg.decode.model_dump(mode="json"), sort_keys=True)


def run_config(path: Path):
    """The resolved config of a run directory, or of the run an `adapter/` folder belongs to."""
    from peftrun import config as config_module
    from peftrun.runs import RESOLVED

    for folder in (path, path.parent):
        if (folder / RESOLVED).is_file():
            return folder, config_module.load(folder / RESOLVED)
    raise PeftrunError(
        f"{path} is not a peftrun run directory or adapter folder (no {RESOLVED} at or above it)"
    )


def parse_adapter_args(items: Sequence[str]) -> list[tuple[str, Path]]:
    """`NAME=PATH` or `PATH` (named after its run directory) → (name, path); names are unique."""
    out: list[tuple[str, Path]] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            path = item
            name = Path(item).resolve().name
            if name == ADAPTER:
                name = Path(item).resolve().parent.name
        if not name or not path:
            raise PeftrunError(f"adapter {item!r}: write NAME=RUN_DIR or RUN_DIR")
        if name in {n for n, _ in out}:
            raise PeftrunError(f"adapter name {name!r} is given twice; name them NAME=RUN_DIR")
        out.append((name, Path(path)))
    return out


def source_text(data_cfg, raw: str) -> str:
    """A source as the dataset holds it → as the token format reads it (E2E: the linearised MR)."""
    if data_cfg.dataset == "e2e":
        from peftrun.data.e2e import linearize_mr

        return linearize_mr(raw)
    return raw.strip()


class AdapterSet:
    """A frozen base loaded once, and adapters by name (`add`), decoded row by row in mixed batches."""

    def __init__(self, base: str | None = None, device: str = "auto", decode_overrides: Sequence[str] = ()):
        self.base_name = base
        self.device_name = device
        self.decode_overrides = list(decode_overrides)
        self.adapters: dict[str, Adapter] = {}
        self.shared = None  # models.LoadedModel, loaded with the first adapter (or `base`)
        self.identity: str | None = None
        self.default_cfg = None  # format and decoding of rows without an adapter
        self.said: set[str] = set()

    # Loading --------------------------------------------------------------------------------

    def _load_base(self, cfg) -> None:
        from peftrun.assembly import load_base, pick_device

        self.device = pick_device(self.device_name if self.device_name != "auto" else cfg.train.device)
        self.shared = load_base(cfg, self.device)
        self.shared.model.eval()
        if not self.shared.arch.is_encoder_decoder:  # before any prefix wraps attention
            from peftrun.methods.inject import rowwise

            rowwise.install(self.shared.model)
        self.identity = base_identity(cfg)
        self.default_cfg = self._with_overrides(cfg)

    def _with_overrides(self, cfg):
        """The adapter's config with the command line's decode.*=... overrides."""
        from peftrun import config as config_module

        if not self.decode_overrides:
            return cfg
        bad = [o for o in self.decode_overrides if not o.startswith("decode.")]
        if bad:
            raise PeftrunError(f"override {bad[0]!r}: only decode.* settings can be changed here")
        return config_module.build(
            config_module.apply_overrides(cfg.model_dump(mode="json"), self.decode_overrides)
        )

    def add(self, name: str, path: str | Path) -> Adapter:
        from peftrun.assembly import attach_method, load_base
        from peftrun.methods import REGISTRY

        path = Path(path)
        if name in self.adapters:
            raise PeftrunError(f"an adapter named {name!r} is loaded already")
        if (path / PEFT_CONFIG).is_file() and not (path / ADAPTER_META).is_file():
            return self._add_peft(name, path)
        run_dir, cfg = run_config(path)
        cfg = self._with_overrides(cfg)
        if self.shared is None:
            if self.base_name is not None and self.base_name != cfg.model.name:
                raise PeftrunError(
                    f"adapter {name} was trained on {base_identity(cfg)}, not on the base {self.base_name}"
                )
            self._load_base(cfg)
        elif base_identity(cfg) != self.identity:
            raise PeftrunError(
                f"adapter {name} was trained on {base_identity(cfg)}; the base here is {self.identity}"
            )
        adapter_dir = run_dir / ADAPTER
        if not (adapter_dir / ADAPTER_META).is_file():
            raise PeftrunError(
                f"{run_dir} has no finished adapter ({ADAPTER}/{ADAPTER_META}); finish its training"
            )
        method_class = REGISTRY[cfg.method.kind].load()
        shared = method_class.shares_base(cfg.method)
        options = method_class.options_for_shared_rows(cfg.method) if shared else cfg.method
        loaded = self.shared if shared else load_base(cfg, self.device)
        method, fmt = attach_method(loaded, cfg, options)
        method.load(adapter_dir)
        method.set_training(False)
        adapter = Adapter(name, run_dir, cfg, method, fmt, shared, loaded.model)
        if shared:
            import torch

            from peftrun.methods.inject.rows import active_rows

            # Computed once (a stored adapter does not change), on the base alone: an
            # embedding-only prefix runs the model to get its keys and values, and outside
            # active_rows every LoRA already attached would apply to that forward pass.
            with torch.no_grad(), active_rows(self.shared.model, [None]):
                adapter.rows = method.row_inputs()
        self.adapters[name] = adapter
        return adapter

    def _add_peft(self, name: str, path: Path) -> Adapter:
        """An HF peft adapter folder (prefix, prompt or LoRA) on the shared base."""
        from dataclasses import replace

        from peftrun.config import Config, ModelConfig
        from peftrun.data.formats import text_format
        from peftrun.serving.peft_import import read_peft

        peft = read_peft(path)
        if self.shared is None:
            self._load_base(Config(model=ModelConfig(name=self.base_name or peft.base_model)))
        elif peft.base_model and self.base_name is None and peft.base_model != self.identity:
            raise PeftrunError(
                f"peft adapter {name} names its base {peft.base_model}; the base here is {self.identity} "
                "(give --base / base= to use it anyway)"
            )
        cfg, model = self.default_cfg, self.shared.model
        peft = peft.to(self.device)
        rows = peft.rows
        if peft.lora:
            rows = replace(rows, lora=self._wrap_lora(model, peft.lora))
        adapter = Adapter(name, path, cfg, None, text_format(self.shared, cfg.data, peft.room), True, model)
        adapter.rows = rows
        self.adapters[name] = adapter
        return adapter

    def _wrap_lora(self, model, updates) -> object:
        """Wrap each updated module of the shared base in a LoRA layer applied to this adapter's
        rows only; returns the layers' owner (what `RowInputs.lora` names)."""
        import torch

        from peftrun.methods.lora import LoRALayer, lora_layers

        owner = object()
        for update in updates:
            parent_path, _, attr = update.module.rpartition(".")
            parent = model.get_submodule(parent_path)
            rank = update.A.shape[0]
            layer = LoRALayer(getattr(parent, attr), {"peft": (update.start, update.end)}, rank, 1.0, 0.0)
            layer.scale = update.scale
            with torch.no_grad():
                layer.lora_A["peft"].copy_(update.A)
                layer.lora_B["peft"].copy_(update.B)
            layer.requires_grad_(False)
            layer.owner = owner
            setattr(parent, attr, layer.to(self.device))
            lora_layers(model).append(layer)  # at once: a failure further on can take it off again
        return owner

    def remove(self, name: str) -> None:
        """Unload an adapter: its name, and whatever it attached to the shared base."""
        from peftrun.methods.lora import detach_lora

        adapter = self._get(name)
        del self.adapters[name]
        owner = getattr(getattr(adapter, "rows", None), "lora", None)
        if adapter.shared and owner is not None:
            detach_lora(self.shared.model, owner)

    def base_format(self):
        from peftrun.data.formats import text_format

        return text_format(self.shared, self.default_cfg.data)

    # Decoding -------------------------------------------------------------------------------

    def generate(self, sources: Sequence[str], names: Sequence[str | None], echo=None) -> list[str]:
        """One output per (source, adapter name or None), in order; `sources` as the dataset
        holds them. Shareable adapters' rows are decoded together, in mixed batches."""
        from peftrun.decode import decode_rows
        from peftrun.methods.inject.rows import active_rows

        groups: dict[tuple[str, str], list[int]] = {}
        for i, name in enumerate(names):
            adapter = self._get(name)
            where = "shared" if adapter is None or adapter.shared else f"own:{adapter.name}"
            decode = adapter.decode_key() if adapter else self.default_key()
            groups.setdefault((where, decode), []).append(i)
        self._explain(groups, names, echo)
        outputs: list[str | None] = [None] * len(sources)
        for (where, _), rows in groups.items():
            row_adapters = [self._get(names[i]) for i in rows]
            cfg = (row_adapters[0].cfg if row_adapters[0] else self.default_cfg).decode
            formats = [a.format if a else self.base_format() for a in row_adapters]
            texts = [
                source_text((a.cfg if a else self.default_cfg).data, sources[i])
                for a, i in zip(row_adapters, rows, strict=True)
            ]
            if where == "shared":
                model = self.shared.model
                inputs = [a.rows if a else None for a in row_adapters]

                def context(chunk, inputs=inputs, model=model):
                    return active_rows(model, [inputs[j] for j in chunk])
            else:
                model, method = row_adapters[0].model, row_adapters[0].method

                def context(chunk, method=method):
                    return method.active(len(chunk))

            for i, out in zip(
                rows, decode_rows(model, formats, texts, context, cfg, self.device), strict=True
            ):
                outputs[i] = out
        return outputs

    def default_key(self) -> str:
        return json.dumps(self.default_cfg.decode.model_dump(mode="json"), sort_keys=True)

    def named(self, name):
        """`name` itself, or for FIRST_ADAPTER the first adapter loaded (None if there is none)."""
        return next(iter(self.adapters), None) if name is FIRST_ADAPTER else name

    def _get(self, name: str | None) -> Adapter | None:
        if name is None:
            return None
        if name not in self.adapters:
            raise PeftrunError(f"unknown adapter {name!r}; loaded: {', '.join(self.adapters) or 'none'}")
        return self.adapters[name]

    def _explain(self, groups, names, echo) -> None:
        """Say once why rows are not all in one mixed batch."""
        if echo is None or len(groups) < 2:
            return
        own = sorted({w.split(":", 1)[1] for w, _ in groups if w != "shared"})
        line = ""
        if own:
            line = (
                f"adapters {', '.join(own)} change the base model: their rows are decoded apart, per adapter"
            )
        decodes = {d for w, d in groups if w == "shared"}
        if len(decodes) > 1:
            line += (
                "; " if line else ""
            ) + "rows whose decoding settings differ are decoded in separate groups"
        if line and line not in self.said:
            self.said.add(line)
            echo(line)

    # Forward --------------------------------------------------------------------------------

    def logits(self, input_ids, attention_mask=None, adapter: str | None = None, **model_inputs):
        """(B, T, V) logits of the token ids exactly as given, with `adapter` active (None: base);
        encoder-decoder models also take `decoder_input_ids`."""
        import torch

        from peftrun.methods.inject.rows import active_rows

        chosen = self._get(adapter)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **model_inputs}
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        with torch.no_grad():
            if chosen is not None and not chosen.shared:
                with chosen.method.active(input_ids.shape[0]):
                    return chosen.model(**inputs).logits
            with active_rows(self.shared.model, [chosen.rows if chosen else None]):
                return self.shared.model(**inputs).logits
