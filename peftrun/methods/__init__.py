"""Tuning methods, by the `method.kind` a config names (one line each)."""

from peftrun.methods.adapter import Adapter
from peftrun.methods.finetune import BitFit, FeatureExtraction, Full, TopK
from peftrun.methods.icl import InContext
from peftrun.methods.lora import LoRA
from peftrun.methods.prefix import Prefix
from peftrun.methods.prompt import Prompt
from peftrun.methods.ptuning import PTuning

METHODS = {
    "full": Full,
    "prefix": Prefix,
    "top-k": TopK,
    "bitfit": BitFit,
    "feature-extraction": FeatureExtraction,
    "lora": LoRA,
    "adapter": Adapter,
    "prompt": Prompt,
    "ptuning": PTuning,
    "icl": InContext,
}
