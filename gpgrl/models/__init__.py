"""Models: the built-in models and their offline cache (`builtins`), loading the policy (`loading`)."""

from gpgrl.models.builtins import BUILTIN_MODELS, MARKER_FILE, ModelLoadError, cache_root, ensure_builtin
from gpgrl.models.loading import (
    load_policy,
    load_reference,
    load_tokenizer,
    resolve_model_source,
    save_final,
)

__all__ = ["BUILTIN_MODELS", "MARKER_FILE", "ModelLoadError", "cache_root", "ensure_builtin", "load_policy",
           "load_reference", "load_tokenizer", "resolve_model_source", "save_final"]
