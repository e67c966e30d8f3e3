"""`train.compile`: the training forward (and so its backward) through `torch.compile`.

On a 2-core CPU the warm-up is not paid back: SmolLM2-135M's prefix step compiled in ~5 min and
then ran slower than eager, its LoRA step in ~4 min and then 1.16× faster (scripts/bench_vs_peft.py,
benchmarks/RESULTS.md); tiny models never gain. It is meant for long runs of real models on a GPU.
Every method compiles without a graph break (tests/test_compile.py); a method that could not would
be refused at validation (`NOT_COMPILED`).
"""

from __future__ import annotations

from collections.abc import Callable

# The torch.compile backend of train.compile (tests may swap in a cheaper one).
COMPILE_BACKEND = "inductor"


def compiled_forward(model) -> Callable:
    """inputs → logits through `torch.compile` (train.compile), the method's additions traced with
    the model (they hang off its modules). The model itself is not wrapped: state-dict keys,
    adapters and checkpoints are those of an eager run. Lengths and batch sizes vary from batch to
    batch: the first call compiles for its shapes, the first different one once more with dynamic
    sizes (dynamo's automatic dynamic shapes), and no other length recompiles. Ops whose output
    size depends on data (a soft prompt's per-row placement) are traced, not graph breaks."""
    import torch._dynamo.config
    import torch._functorch.config

    def logits(**inputs):
        return model(**inputs).logits

    compiled = torch.compile(logits, backend=COMPILE_BACKEND)

    def forward(**inputs):
        # AOTAutograd's on-disk cache off: a second process that hit it (torch 2.13, a prefix)
        # got logits without a grad_fn. Inductor's own kernel cache still serves later runs.
        with (
            torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True, capture_scalar_outputs=True),
            torch._functorch.config.patch(enable_autograd_cache=False),
        ):
            return compiled(**inputs)

    return forward
