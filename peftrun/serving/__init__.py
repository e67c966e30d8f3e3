"""One frozen base model, many adapters: mixed batches (`adapters`), `peftrun generate`, the
Python API (`peftrun.load`), and interop with HF peft's on-disk adapter folders
(`peft_export`, `peft_import`)."""
