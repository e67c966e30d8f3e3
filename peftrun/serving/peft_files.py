"""An HF peft adapter folder as it is on disk, for both directions (peft_export writes it,
peft_import reads it): its two file names, and how its tensors name the wrapped model's modules."""

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_MODULE_PREFIX = "base_model.model."  # peft's wrapper in front of every HF module path
