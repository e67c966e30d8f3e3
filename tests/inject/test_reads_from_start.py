"""How hooks tell generate()'s first step from its later ones: from the call's tensors alone."""

from __future__ import annotations

import torch

from peftrun import models
from peftrun.methods.inject import reads_from_start


class FakeCache:
    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length


def test_decided_from_token_and_mask_lengths_whatever_the_cache_is_called():
    ids, mask = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5)
    assert reads_from_start((ids,), {"attention_mask": mask})
    assert reads_from_start((), {"input_ids": ids, "attention_mask": mask, "cache": FakeCache(0)})
    assert not reads_from_start((ids[:, :1],), {"attention_mask": torch.ones(2, 6)})
    embeds = torch.ones(2, 1, 8)
    assert not reads_from_start((), {"inputs_embeds": embeds, "attention_mask": torch.ones(2, 9)})
    # No mask: any cache-like argument that holds tokens, under any name.
    assert not reads_from_start((ids[:, :1],), {"past_key_values": FakeCache(4)})
    assert not reads_from_start((ids[:, :1],), {"cache": FakeCache(4)})
    assert reads_from_start((ids,), {})


def test_it_sees_generate_call_each_step_as_the_installed_transformers_makes_it():
    """The public behaviour the mechanisms rely on, observed on the installed transformers."""
    model = models.load("tiny-gpt2", seed=0).model
    seen: list[bool] = []
    model.transformer.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(reads_from_start(args, kwargs)), with_kwargs=True
    )
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    settings = dict(max_new_tokens=4, min_new_tokens=4, num_beams=2, pad_token_id=0)
    model.generate(input_ids=ids, attention_mask=mask, **settings)
    assert seen == [True, False, False, False]
    seen.clear()
    model(ids)
    model(ids, attention_mask=mask)
    assert seen == [True, True]
