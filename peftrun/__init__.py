"""peftrun: a command-line experiment runner for parameter-efficient fine-tuning of text generators."""

__version__ = "0.1.0"
