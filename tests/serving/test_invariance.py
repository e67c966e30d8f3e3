"""Batch invariance (docs/serving.md#batch-invariance): a greedy request gets the same text whatever
shares its batch, under a bf16-frozen base too: alone, and inside a batch of 16 different
requests, every one of 16 requests gets the same text (tiny-gpt2 in the suite; SmolLM2 where it is
available)."""

from __future__ import annotations

import random
import threading

from conftest import write_config

from peftrun import experiment

CONFIG = """
model: {name: tiny-gpt2, seed: 0}
data: {dataset: e2e, train_size: 16, dev_loss_size: 4}
method: METHOD
train: {lr: 1e-2, epochs: 1, max_steps: 2, batch_size: 8, seed: 7, precision: bf16-frozen}
decode: {splits: [], num_beams: 1, max_new_tokens: 24}
"""
METHODS = {
    "prefix": "{kind: prefix, prefix_len: 3, mlp_hidden: 16}",
    "prompt": "{kind: prompt, prompt_len: 3}",
    "lora": "{kind: lora, rank: 2}",
}
WORDS = ["Aromi", "The Punter", "Zizzi", "Cotto", "Blue Spice", "Alimentum", "Loch Fyne", "Wildwood"]


def sources(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    areas, foods = ["city centre", "riverside"], ["Thai", "Italian", "French", "English"]
    return [
        f"name[{rng.choice(WORDS)}], food[{rng.choice(foods)}], area[{rng.choice(areas)}]"
        + (", familyFriendly[yes]" * rng.randint(0, 1))
        for _ in range(n)
    ]


def answers(engine, requests: list[tuple[str | None, str]], together: bool) -> list[str]:
    """Each (adapter, source)'s greedy text: one at a time (alone), or all submitted at once."""
    from peftrun.serving.engine import Completion

    aset = engine.adapters
    texts: dict[int, str] = {}

    def submit(i: int, adapter, source) -> threading.Event:
        ended = threading.Event()

        def emit(event, i=i):
            if event[0] == "done":
                texts[i] = event[2]
                ended.set()
            elif event[0] == "error":
                texts[i] = f"ERROR {event[1]}"
                ended.set()

        decode = (aset.adapters[adapter].cfg if adapter else aset.default_cfg).decode
        decode = decode.model_copy(update={"max_new_tokens": 24, "num_beams": 1, "do_sample": False})
        _, width = engine.measure(adapter, source)
        engine.submit(Completion(adapter, [source], 1, decode, (), None, False, emit, 24, widths=[width]))
        return ended

    if together:
        events = [submit(i, a, s) for i, (a, s) in enumerate(requests)]
        for event in events:
            assert event.wait(300)
    else:
        for i, (a, s) in enumerate(requests):
            assert submit(i, a, s).wait(300)
    return [texts[i] for i in range(len(requests))]


def _check(aset, requests) -> None:
    from peftrun.serving.engine import Engine
    from peftrun.serving.metrics import ServeMetrics

    engine = Engine(aset, ServeMetrics(), max_rows=16)
    engine.start()
    try:
        alone = answers(engine, requests, together=False)
        together = answers(engine, requests, together=True)
        shuffled = list(range(len(requests)))
        random.Random(1).shuffle(shuffled)
        again = answers(engine, [requests[i] for i in shuffled], together=True)
    finally:
        engine.stop()
    assert not any(text.startswith("ERROR") for text in alone + together)
    assert together == alone
    assert [again[shuffled.index(i)] for i in range(len(requests))] == alone


def test_a_greedy_request_gets_its_text_alone_inside_a_batch_of_16_bf16_frozen(tmp_path):
    import peftrun

    runs = []
    for kind, method in METHODS.items():
        folder = tmp_path / kind
        folder.mkdir()
        run, _ = experiment.train(
            write_config(folder, CONFIG.replace("METHOD", method)), [], str(folder / "run")
        )
        runs.append(f"{kind}={run}")
    aset = peftrun.load(*runs).adapters
    names = [*METHODS, None]
    requests = [(names[i % len(names)], source) for i, source in enumerate(sources(16, seed=3))]
    _check(aset, requests)


def test_smollm2_bf16_frozen_greedy_text_is_the_same_alone_and_in_a_batch_of_16(smollm2_env):
    from peftrun import config
    from peftrun.serving.adapters import AdapterSet

    aset = AdapterSet("smollm2-135m")
    cfg = {
        "model": {"name": "smollm2-135m"},
        "method": {"kind": "lora"},
        "train": {"precision": "bf16-frozen"},
    }
    aset._load_base(config.build(cfg))
    _check(aset, [(None, source) for source in sources(16, seed=5)])
