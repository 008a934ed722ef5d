from trainforge.models.loading import load_causal_lm, load_language_model, load_tokenizer
from trainforge.models.registry import ALIASES, cache_dir, resolve_model

__all__ = ["ALIASES", "cache_dir", "load_causal_lm", "load_language_model", "load_tokenizer", "resolve_model"]
