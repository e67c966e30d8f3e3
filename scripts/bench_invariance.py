"""Batch invariance of `peftrun serve`'s engine: how many greedy requests get a different text
inside a batch than alone (docs/serving.md#batch-invariance).

Each of N requests (E2E dev MRs over k adapters and the base) is decoded alone, one at a time,
then all N are submitted at once in a shuffled order, twice (every batch then holds up to
--max-batch different rows, joining and leaving at every token). A request flips when either
batched text differs from its text alone. The engine runs in process (no HTTP: the same engine
`peftrun serve` runs).

    python scripts/bench_invariance.py                                   # tiny-gpt2, bf16-frozen
    python scripts/bench_invariance.py --model smollm2-135m --requests 200
    python scripts/bench_invariance.py --engine batch                    # one generate() per batch

--engine batch is the batch-at-a-time engine (one generate() call per batch) for comparison.
Adapters are trained (2 updates, as scripts/bench_serve.py does) into --work unless there already.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def answers(engine, requests, order, max_tokens: int) -> dict[int, str]:
    """{request index: text} for the requests in `order`, submitted at once (or one at a time
    when `order` is None)."""
    from peftrun.serving.engine import Completion

    aset = engine.adapters
    texts: dict[int, str] = {}

    def submit(i: int) -> threading.Event:
        adapter, source = requests[i]
        ended = threading.Event()

        def emit(event):
            if event[0] in ("done", "error"):
                texts[i] = event[2] if event[0] == "done" else f"ERROR {event[1]}"
                ended.set()

        decode = (aset.adapters[adapter].cfg if adapter else aset.default_cfg).decode
        decode = decode.model_copy(update={"max_new_tokens": max_tokens, "num_beams": 1, "do_sample": False})
        _, width = engine.measure(adapter, source)
        engine.submit(
            Completion(adapter, [source], 1, decode, (), None, False, emit, max_tokens, widths=[width])
        )
        return ended

    if order is None:
        for i in range(len(requests)):
            submit(i).wait()
    else:
        for event in [submit(i) for i in order]:
            event.wait()
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-gpt2", help="tiny-gpt2 (default) or smollm2-135m")
    parser.add_argument("--precision", default="bf16-frozen", help="the adapters' train.precision")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("-k", type=int, default=4, help="adapters (prefix, prompt, lora, ptuning, ...)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--engine", choices=["continuous", "batch"], default="continuous")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "peftrun-bench-serve")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import bench_serve

    import peftrun
    from peftrun.serving.engine import Engine
    from peftrun.serving.metrics import ServeMetrics

    train = bench_serve.TRAIN.get(args.model, bench_serve.TRAIN["tiny-gpt2"])
    for precision in ("fp32", "bf16-frozen", "fp64"):
        train = train.replace(f"precision: {precision}", f"precision: {args.precision}")
    bench_serve.TRAIN[args.model] = train
    adapters = bench_serve.make_adapters(args.model, args.k, args.work)
    aset = peftrun.load(*(f"{name}={run}" for name, run in adapters)).adapters
    names = [name for name, _ in adapters] + [None]
    mrs = bench_serve.dev_mrs(args.requests)
    requests = [(names[i % len(names)], mrs[i % len(mrs)]) for i in range(args.requests)]

    engine = Engine(aset, ServeMetrics(), max_rows=args.max_batch, continuous=args.engine == "continuous")
    engine.start()
    started = time.perf_counter()
    try:
        alone = answers(engine, requests, None, args.max_tokens)
        shuffled = [list(range(len(requests))) for _ in range(2)]
        for seed, order in enumerate(shuffled):
            random.Random(seed).shuffle(order)
        batched = [answers(engine, requests, order, args.max_tokens) for order in shuffled]
    finally:
        engine.stop()
    errors = [t for t in alone.values() if t.startswith("ERROR")]
    if errors:
        sys.exit(f"bench_invariance: a request failed: {errors[0]}")
    flips = [i for i in range(len(requests)) if any(b[i] != alone[i] for b in batched)]
    rate = len(flips) / len(requests)
    print(
        f"{args.model} ({args.precision}), engine {args.engine}, --max-batch {args.max_batch}, "
        f"{args.threads} thread(s), {args.max_tokens} tokens: {len(flips)} of {len(requests)} requests "
        f"flip between alone and batched ({rate:.1%}); {time.perf_counter() - started:.0f}s"
    )
    for i in flips[:5]:
        print(f"  {requests[i][0] or 'base'}: {requests[i][1]!r}\n    alone:   {alone[i]!r}\n    batched: "
              f"{[b[i] for b in batched]!r}")  # fmt: skip


if __name__ == "__main__":
    main()
