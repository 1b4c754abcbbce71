"""Models: the built-ins and their offline cache (`builtins`, `vision`), model kinds (`kinds`), processors without
torchvision (`processors`) and loading the policy (`loading`)."""

from gpgrl.models.builtins import BUILTIN_MODELS, MARKER_FILE, ModelLoadError, cache_root, ensure_builtin
from gpgrl.models.kinds import vision_parameters
from gpgrl.models.loading import (
    frozen_copy,
    load_policy,
    load_processing,
    load_reference,
    load_tokenizer,
    prepare_loaded,
    resolve_model_source,
    save_final,
)

__all__ = ["BUILTIN_MODELS", "MARKER_FILE", "ModelLoadError", "cache_root", "ensure_builtin", "frozen_copy",
           "load_policy",
           "load_processing", "load_reference", "load_tokenizer", "prepare_loaded", "resolve_model_source",
           "save_final", "vision_parameters"]
