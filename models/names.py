"""The registered model and KD-method names: they live torch-free in `kdpipe.schemas.model_names`
(this package's __init__ imports every model, so stages check names there at plan time)."""
from __future__ import annotations

from kdpipe.schemas.model_names import (
    KD_DECAYS,
    KD_METHODS,
    MODEL_NAMES,
    check_kd_terms,
    check_model_name,
    known_models,
)

__all__ = ["KD_DECAYS", "KD_METHODS", "MODEL_NAMES", "check_kd_terms", "check_model_name",
           "known_models"]
