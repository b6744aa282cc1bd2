"""LLM side of hybridopt: model loading, peft adapters and the ZO/FO parameter split.

Importing this package is cheap; ``transformers``/``peft`` are imported on first use.
"""
from .models import (DTYPES, PRESETS, attach_peft, cache_dir, convert_smollm2, load_model,
                     model_summary, parameter_blocks, resolve_dtype, tiny_tokenizer)

__all__ = ["DTYPES", "PRESETS", "attach_peft", "cache_dir", "convert_smollm2", "load_model",
           "model_summary", "parameter_blocks", "resolve_dtype", "tiny_tokenizer"]
