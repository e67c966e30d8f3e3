"""peftrun: a command-line experiment runner for parameter-efficient fine-tuning of text generators."""

__version__ = "0.1.0"


def load(*adapters: str, base: str | None = None, device: str = "auto"):
    """One frozen base, many adapters: see peftrun.serving.api (imported here on first use, so
    `import peftrun` stays light)."""
    from peftrun.serving.api import load as load_adapters

    return load_adapters(*adapters, base=base, device=device)
