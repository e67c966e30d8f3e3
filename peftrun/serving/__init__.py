"""One frozen base model, many adapters: mixed batches (`adapters`), `peftrun generate`, the
Python API (`peftrun.load`), and interop with HF peft (`peft_interop`: export to, and read
adapters of, the peft on-disk format)."""
