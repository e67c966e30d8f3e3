"""Fine-tuning baselines: the base model's own weights are trained.

`Full` trains every weight (standard fine-tuning; Li & Liang Table 1's "FT"). The others train a
subset of the base model's own parameters and store only that subset (safetensors):

- `TopK` (Li & Liang Table 2's FT-top2): the top k layers + the final norm. GPT-2:
  `transformer.h[-k:]` + `transformer.ln_f`. BART: the top k *decoder* layers
  (`model.decoder.layers[-k:]`) + `model.decoder.layer_norm` when the model has one (BART has none;
  mBART-style models do); the encoder stays frozen. `train_embeddings` (default on, as the paper's
  FT-top2 did) also trains the token embedding — GPT-2 ties it to the LM head (and BART to the LM
  head and both embed_tokens), so this trains the tied head too.
- `BitFit` (Ben Zaken et al. 2022): every parameter whose name ends with "bias".
- `FeatureExtraction`: the network is frozen; the LM head is replaced by a new `nn.Linear` untied
  from the input embedding and initialised as a copy of the pretrained head, and it trains with
  the final norm (GPT-2: `transformer.ln_f`; BART: `model.decoder.layer_norm` when present, else
  `model.decoder.layernorm_embedding`, BART's only decoder-side norm outside the layers).

These put the model in train mode while training (dropout on), as full fine-tuning does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from peftrun.errors import PeftrunError
from peftrun.families import family_of
from peftrun.methods.base import MethodBase, ParamCounts, copy_into, save_tensors
from peftrun.methods.finetune_options import BitFitOptions, FeatureExtractionOptions, FullOptions, TopKOptions
from peftrun.models import LoadedModel, count_parameters

WEIGHTS = "model.safetensors"
SUBSET_WEIGHTS = "trained.safetensors"


class Full(MethodBase):
    """Every weight trains; the stored adapter is the whole model."""

    def __init__(self, loaded: LoadedModel, options: FullOptions) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.options = options
        self.model.requires_grad_(True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list({id(p): p for p in self.model.parameters()}.values())

    def set_training(self, training: bool) -> None:
        self.model.train(training)

    def training_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def save(self, directory: Path) -> None:
        # A standard HF model folder: later runs can name it as their `model.name`.
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def load(self, directory: Path) -> None:
        # save_pretrained leaves tied weights (GPT-2's LM head) out of the file; re-tie them.
        self.model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=False)
        self.model.tie_weights()

    def counts(self) -> ParamCounts:
        base = count_parameters(self.model.parameters())
        return ParamCounts(base=base, trainable=base, stored=base)


class _Subset(MethodBase):
    """A subset of the base model's own parameters trains; only that subset is stored."""

    def __init__(self, loaded: LoadedModel, options) -> None:
        self.model = loaded.model
        self.options = options
        self.base = count_parameters(self.model.parameters())  # before any change to the model
        self.model.requires_grad_(False)
        self._prepare(loaded)
        # Names as named_parameters() gives them (tied weights appear once, under their first name).
        self.names = [name for name, p in self.model.named_parameters() if p.requires_grad]

    def _prepare(self, loaded: LoadedModel) -> None:
        """Change the model if needed and set requires_grad on what trains."""
        raise NotImplementedError

    def _named(self) -> dict[str, nn.Parameter]:
        params = dict(self.model.named_parameters())
        return {name: params[name] for name in self.names}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self._named().values())

    def set_training(self, training: bool) -> None:
        self.model.train(training)

    def training_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self._named().items()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        copy_into(self._named(), state, "trained weights")

    def save(self, directory: Path) -> None:
        save_tensors(self.training_state(), directory / SUBSET_WEIGHTS)

    def load(self, directory: Path) -> None:
        self.load_training_state(load_file(str(directory / SUBSET_WEIGHTS), device=str(self.model.device)))

    def counts(self) -> ParamCounts:
        trainable = count_parameters(self.trainable_parameters())
        return ParamCounts(base=self.base, trainable=trainable, stored=trainable)


class TopK(_Subset):
    """Only the top k layers (+ final norm, + optionally the tied token embedding) train."""

    def __init__(self, loaded: LoadedModel, options: TopKOptions) -> None:
        super().__init__(loaded, options)

    def _prepare(self, loaded: LoadedModel) -> None:
        family = family_of(self.model)
        modules = family.blocks(self.model, "decoder")[-self.options.k :]
        norm = family.get(self.model, family.final_norm)
        if norm is not None:
            modules.append(norm)
        if self.options.train_embeddings:
            modules.append(family.get(self.model, family.token_embedding))  # tied to the LM head: trains both
        for module in modules:
            module.requires_grad_(True)


class BitFit(_Subset):
    """Only bias terms train (every parameter whose name ends with "bias")."""

    def __init__(self, loaded: LoadedModel, options: BitFitOptions) -> None:
        super().__init__(loaded, options)

    def _prepare(self, loaded: LoadedModel) -> None:
        biases = [p for name, p in self.model.named_parameters() if name.endswith("bias")]
        if not biases:  # Llama-style decoders: a run would quietly train nothing
            raise PeftrunError(
                f"method.kind=bitfit trains bias terms and {type(self.model).__name__} "
                f"(family {family_of(self.model).name}) has none; choose another method"
            )
        for p in biases:
            p.requires_grad_(True)


class FeatureExtraction(_Subset):
    """Frozen network; a new, untied copy of the LM head + the final norm train."""

    def __init__(self, loaded: LoadedModel, options: FeatureExtractionOptions) -> None:
        super().__init__(loaded, options)

    def _prepare(self, loaded: LoadedModel) -> None:
        family = family_of(self.model)
        old = family.get(self.model, family.lm_head)
        head = nn.Linear(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        with torch.no_grad():
            head.weight.copy_(old.weight)
            if old.bias is not None:
                head.bias.copy_(old.bias)
        setattr(self.model, family.lm_head, head)
        # Keep a later tie_weights() from re-tying the new head to the input embedding.
        self.model.config.tie_word_embeddings = False
        norm = family.get(self.model, family.final_norm)
        if norm is None:  # BART: its only decoder-side norm outside the blocks
            norm = family.get(self.model, family.embedding_norm)
        head.requires_grad_(True)
        norm.requires_grad_(True)
