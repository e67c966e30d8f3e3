"""Tuning methods, by the `method.kind` a config names (one line each)."""

from peftrun.methods.finetune import Full
from peftrun.methods.prefix import Prefix

METHODS = {
    "full": Full,
    "prefix": Prefix,
}
