"""The model: one seam for everything that trains, loads, scores, explains or saves a classifier.

Only kennel/model/booster.py and kennel/model/distributed.py know the model library (XGBoost); an
import test holds every other module to that. Switching to another gradient-boosting library means
rewriting those two files (and the pins in pyproject.toml), nothing else.
"""

from kennel.model.booster import (
    CHECKSUMS_FILE,
    LIBRARY,
    MODEL_FILE,
    RUNTIME_DISTRIBUTIONS,
    FitResult,
    Model,
    ModelIntegrityError,
    booster_params,
    cuda_available,
    fit,
    import_for_serving,
    resolve_device,
    verify_checksums,
)
from kennel.model.card import CARD_FILE, SPEC_FILE, CardFeature, ModelCard
from kennel.model.frame import FeatureEncoder, record_columns, to_model_frame

__all__ = [
    "CARD_FILE",
    "CHECKSUMS_FILE",
    "LIBRARY",
    "MODEL_FILE",
    "RUNTIME_DISTRIBUTIONS",
    "SPEC_FILE",
    "CardFeature",
    "FeatureEncoder",
    "FitResult",
    "Model",
    "ModelCard",
    "ModelIntegrityError",
    "booster_params",
    "cuda_available",
    "fit",
    "import_for_serving",
    "record_columns",
    "resolve_device",
    "to_model_frame",
    "verify_checksums",
]
