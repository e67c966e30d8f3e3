"""Serving: one frozen base, many adapters. A trained run's adapter (or one from another library,
through `peft_interop`) is a small description laid out as peftrun's methods store it; serving puts
several of them on one shared, frozen base model at once (mixed batches, `generate`, Python API).
"""
