"""Continuous batching (peftrun.serving.live) in the engine itself, without HTTP: a request that
joins a running batch mid-way gets the text it gets alone (float64 runs), for prefix, prompt,
LoRA and base rows, on tiny-gpt2 and tiny-llama; and one greedy request's text is the same alone
and inside a batch of 16 different requests."""

from __future__ import annotations

import threading

import pytest
from serve_helpers import SOURCES, make_run

MODELS = ["tiny-gpt2", "tiny-llama"]
KINDS = ["prefix", "prompt", "lora"]


@pytest.fixture(scope="module", params=MODELS)
def served(request, tmp_path_factory):
    import peftrun

    root = tmp_path_factory.mktemp(f"live-{request.param}")
    runs = {kind: make_run(root / kind, request.param, kind, seed=401 + i) for i, kind in enumerate(KINDS)}
    return peftrun.load(*(f"{kind}={run}" for kind, run in runs.items())).adapters


class _Collector:
    def __init__(self) -> None:
        self.done: dict[int, tuple] = {}
        self.deltas = 0
        self.finished = threading.Event()
        self.choices = 1

    def __call__(self, event: tuple) -> None:
        if event[0] == "delta":
            self.deltas += 1
        elif event[0] == "done":
            self.done[event[1]] = event[2:]
            if len(self.done) == self.choices:
                self.finished.set()
        else:
            self.done[-1] = event
            self.finished.set()


def _request(engine, adapter, source, max_tokens=10, stream=False):
    from peftrun.serving.engine import Completion

    aset = engine.adapters
    decode = (aset.adapters[adapter].cfg if adapter else aset.default_cfg).decode
    decode = decode.model_copy(update={"max_new_tokens": max_tokens, "min_new_tokens": None})
    collector = _Collector()
    _, width = engine.measure(adapter, source)
    completion = Completion(adapter, [source], 1, decode, (), None, stream, collector, max_tokens,
                            widths=[width])  # fmt: skip
    return completion, collector


def _alone(aset, adapter, source, max_tokens):
    """What `peftrun generate` gives (its own generate() call, this row alone)."""
    from peftrun.decode import decode_rows
    from peftrun.methods.inject.rows import active_rows
    from peftrun.serving.adapters import source_text

    chosen = aset.adapters[adapter] if adapter else None
    cfg = (chosen.cfg if chosen else aset.default_cfg).decode
    cfg = cfg.model_copy(update={"max_new_tokens": max_tokens, "min_new_tokens": None})
    fmt = chosen.format if chosen else aset.base_format()
    text = source_text((chosen.cfg if chosen else aset.default_cfg).data, source)
    rows = chosen.rows if chosen else None
    model = aset.shared.model
    [out] = decode_rows(model, [fmt], [text], lambda chunk: active_rows(model, [rows]), cfg, aset.device)
    return out


def test_a_request_joining_mid_batch_gets_its_text_alone(served):
    """A long base request decodes; once it has streamed a token, one request per adapter (and
    one on the base) is submitted: they join its batch mid-way and each gets the text of its own
    generate() call alone."""
    from peftrun.serving.engine import Engine
    from peftrun.serving.metrics import ServeMetrics

    engine = Engine(served, ServeMetrics())
    engine.start()
    try:
        long, long_events = _request(engine, None, SOURCES[3], max_tokens=60, stream=True)
        engine.submit(long)
        while not long_events.deltas and not long_events.finished.is_set():
            threading.Event().wait(0.01)
        joined = []
        for i, adapter in enumerate([*KINDS, None]):
            completion, events = _request(engine, adapter, SOURCES[i], max_tokens=12)
            engine.submit(completion)
            joined.append((adapter, SOURCES[i], events))
        for _, _, events in joined:
            assert events.finished.wait(120)
        assert long_events.finished.wait(120)
    finally:
        engine.stop()
    assert not long_events.done[0][0] == "", "the long request ended before the others joined"
    for adapter, source, events in joined:
        assert events.done[0][0] == _alone(served, adapter, source, 12), adapter
    assert long_events.done[0][0] == _alone(served, None, SOURCES[3], 60)
    # They ran beside the long row: some decoding step held more than one row.
    text = engine.metrics.text().decode()
    assert 'peftrun_batch_rows_bucket{le="1.0"}' in text
    rows_sum = float(
        next(line.split()[-1] for line in text.splitlines() if line.startswith("peftrun_batch_rows_sum"))
    )
    steps = float(
        next(line.split()[-1] for line in text.splitlines() if line.startswith("peftrun_batch_rows_count"))
    )
    assert rows_sum > steps, "no step held two rows: nothing joined the running batch"
