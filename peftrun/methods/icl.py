"""In-context learning (Brown et al. 2020): a few solved training examples before each input.

Nothing is trained. k demonstrations are drawn once from the training pairs the run hands to
`initialize` (the method never loads data itself), with `method.seed` (`method.draw: fixed`, the
default: every train.seed of a row sees the same draw) or with train.seed (`method.draw:
per-seed`: each seed its own draw; the seed is the one the run gives torch before attaching its
method, `Session`: train.seed), and put, in that order, before every input at decoding time, each
written as the model's own token format writes a training example (GPT-2: " table <|endoftext|>
text <|endoftext|>"; BART's encoder: "<s> source </s> target </s> … input </s>"; `data.format:
chat`: earlier user turns and assistant replies of the conversation, few-shot chat). When they do
not fit the model's positions (GPT-2: leaving room for the output; BART: the encoder's source
limit), the first ones that fit are used (in draw order, skipping any too long), and the run log
says how many for how many inputs. The drawn
demonstrations are written to the adapter folder (`icl.json`), so a later `peftrun decode` uses
the same ones.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from peftrun.data.examples import Pair
from peftrun.methods.base import MethodBase, ParamCounts
from peftrun.methods.icl_options import ICLOptions
from peftrun.methods.inject.rows import RowInputs
from peftrun.models import LoadedModel, base_size

FILE = "icl.json"


class InContext(MethodBase):
    reads_train_pairs = True  # the demonstrations come from them

    def __init__(self, loaded: LoadedModel, options: ICLOptions) -> None:
        self.model = loaded.model
        self.model.requires_grad_(False)
        self.options = options
        # The run's train.seed (Session seeds torch with it right before attaching the method).
        self.draw_seed = options.draw_seed(torch.initial_seed())
        self._demonstrations: list[Pair] | None = None
        self.used: Counter[int] = Counter()  # demonstrations used → inputs, since the last notes

    # Demonstrations --------------------------------------------------------------------------

    def initialize(self, train_pairs: Sequence[Pair]) -> None:
        """Draw the k demonstrations from the training pairs."""
        k = min(self.options.k, len(train_pairs))
        chosen = random.Random(self.draw_seed).sample(range(len(train_pairs)), k)
        self._demonstrations = [train_pairs[i] for i in chosen]

    @property
    def demonstrations(self) -> list[Pair]:
        if self._demonstrations is None:
            raise RuntimeError("icl has no demonstrations: initialize() it or load() saved ones")
        return self._demonstrations

    def wrap_format(self, text_format, decode_cfg):
        return Demonstrations(text_format, self, text_format.context_budget(decode_cfg))

    @classmethod
    def shares_base(cls, options) -> bool:
        return True

    def row_inputs(self) -> RowInputs:
        """Nothing is added to the model: a row only needs this method's prompts (its format)."""
        return RowInputs()

    def take_notes(self) -> list[str]:
        notes = []
        if self.used:
            spread = ", ".join(f"{n} for {c} inputs" for n, c in sorted(self.used.items(), reverse=True))
            notes.append(f"icl: demonstrations per input (k={self.options.k}, fewer if too long): {spread}")
        self.used.clear()
        return notes

    # The Method protocol (nothing trains) -----------------------------------------------------

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def set_training(self, training: bool) -> None:
        self.model.eval()

    def training_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def save(self, directory: Path) -> None:
        records = [{"source": d.source, "target": d.target} for d in self.demonstrations]
        payload = {"k": self.options.k, "seed": self.draw_seed, "demonstrations": records}
        if self.options.draw != "fixed":
            payload["draw"] = self.options.draw
        (directory / FILE).write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")

    def load(self, directory: Path) -> None:
        payload = json.loads((directory / FILE).read_text(encoding="utf-8"))
        self._demonstrations = [Pair(d["source"], d["target"]) for d in payload["demonstrations"]]

    def counts(self) -> ParamCounts:
        return ParamCounts(base=base_size(self.model), trainable=0, stored=0)


class Demonstrations:
    """A token format whose prompts start with as many of the demonstrations as fit."""

    def __init__(self, base, method: InContext, budget: int) -> None:
        self.base, self.method, self.budget = base, method, budget
        self._ids: tuple[list[Pair], list[list[int]]] | None = None  # (demonstrations, their tokens)

    def __getattr__(self, name):  # everything but prompts is the base format's
        return getattr(self.base, name)

    def prompt_ids(self, source: str) -> list[int]:
        prompt = self.base.prompt_ids(source)
        room = self.budget - len(prompt)
        demonstrations = self.method.demonstrations
        if self._ids is None or self._ids[0] is not demonstrations:  # tokenise each one once
            self._ids = (demonstrations, [self.base.demonstration_ids(pair) for pair in demonstrations])
        context: list[int] = []
        used = 0
        for ids in self._ids[1]:
            if len(context) + len(ids) <= room:
                context += ids
                used += 1
        self.method.used[used] += 1
        return self.base.with_context(context, prompt)

    def prompt_batch(self, sources: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.base.pad_prompts([self.prompt_ids(source) for source in sources])
