"""Tuning methods, by the `method.kind` a config names (one line each)."""

from peftrun.methods.adapter import Adapter
from peftrun.methods.finetune import BitFit, FeatureExtraction, Full, TopK
from peftrun.methods.lora import LoRA
from peftrun.methods.prefix import Prefix

METHODS = {
    "full": Full,
    "prefix": Prefix,
    "top-k": TopK,
    "bitfit": BitFit,
    "feature-extraction": FeatureExtraction,
    "lora": LoRA,
    "adapter": Adapter,
}
