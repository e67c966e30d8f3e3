"""A base model with a method and a token format, assembled one way for training, decoding and
serving: `load_base` (the config's model, seed, attention, device and precision) and
`attach_method` (the method on it, and the format its prompts use)."""

from __future__ import annotations

from peftrun.config import Config


def pick_device(wanted: str):
    """The torch device for a `train.device` setting ("auto": cuda when available)."""
    import torch

    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


def base_dtype(cfg: Config):
    """The dtype of the base model's weights: float64 under `train.precision: fp64` (exactness
    checks; the method's too), bfloat16 under `bf16-frozen` (the frozen base only: a method makes
    its trained parameters in fp32, `methods.base.trained_dtype`), else the model's own (fp32;
    `bf16` autocasts only the forward pass)."""
    import torch

    return {"fp64": torch.float64, "bf16-frozen": torch.bfloat16}.get(cfg.train.precision)


def load_base(cfg: Config, device=None):
    """The config's base model (a built-in one with its random weights from `model.seed`), with
    its tokenizer, on `device` (default: `train.device`) and in `base_dtype`."""
    import torch

    from peftrun import models

    loaded = models.load(cfg.model.name, cfg.model.attention, seed=cfg.base_seed())
    loaded.model.to(device if device is not None else pick_device(cfg.train.device))
    dtype = base_dtype(cfg)
    if dtype == torch.float64:
        loaded.model.to(dtype)
    elif dtype is not None:
        # bf16-frozen: the weights only. Buffers (a rotary model's inv_freq) keep fp32: positions
        # far from 0 need more than bf16's 8 bits. The base is cast when loaded, so a method
        # attached to it later (runs packed on one base, adapters served on one) never sees it change.
        for parameter in loaded.model.parameters():
            parameter.data = parameter.data.to(dtype)
    return loaded


def attach_method(loaded, cfg: Config, options=None):
    """The method (`options`, default the config's) attached to `loaded`, and the token format of
    its prompts. Under fp64 its parameters are made float64 after they were drawn, so an fp64 run
    starts from the same values as the fp32 one; under bf16-frozen they stay fp32 beside the bf16
    base, and the joins cast (LoRA and adapters compute in their own dtype and cast their output
    back; prefix keys/values and soft prompts take the base's dtype)."""
    import torch

    from peftrun.data.formats import text_format
    from peftrun.methods.base import attach

    method = attach(loaded, options if options is not None else cfg.method)
    dtype = base_dtype(cfg)
    if dtype == torch.float64:  # (bf16-frozen: the method made its parameters fp32 itself)
        loaded.model.to(dtype)  # what the method placed inside the model
        for parameter in method.trainable_parameters():
            parameter.data = parameter.data.to(dtype)
    fmt = method.wrap_format(text_format(loaded, cfg.data, method.room), cfg.decode)
    return method, fmt
