"""The trained classifier behind one seam: fit, load, score, explain, save. The one module (with its
Spark sibling, kennel.model.distributed) that knows the model library is XGBoost.

A model folder holds MODEL_FILE (the library's own format: never pickled), the model card, the
resolved spec and CHECKSUMS_FILE (size and SHA-256 of those three, verified at load). Every
consumer — training, evaluation, the gate, monitoring, serving, the Bento — scores through `Model`,
so a model scores the same everywhere and thread settings apply everywhere.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from kennel.lake import sha256_of, write_atomically
from kennel.model import threads
from kennel.model.card import CARD_FILE, SPEC_FILE, ModelCard
from kennel.model.frame import FeatureEncoder, to_model_frame

if TYPE_CHECKING:
    import pandas as pd
    import xgboost

LIBRARY = "xgboost"  # shown as the model assets' kind in the UI
MODEL_FILE = "model.ubj"  # XGBoost's own binary format
# What a Bento must install to load and score a model (pinned to the versions installed here).
RUNTIME_DISTRIBUTIONS = ("xgboost",)
OBJECTIVE = "binary:logistic"  # the model's output is read as the positive-class probability
# Written last by Model.save: size and SHA-256 of each file below, so a file changed on disk after the
# save (bit rot, a truncated copy, a hand edit) is refused at load instead of scoring silently.
CHECKSUMS_FILE = "checksums.json"
CHECKSUMMED_FILES = (MODEL_FILE, CARD_FILE, SPEC_FILE)


class ModelIntegrityError(ValueError):
    """A model folder's file is not the one its checksum manifest recorded when the model was saved."""


def _file_checksum(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def write_checksums(folder: Path) -> None:
    """Record size and SHA-256 of the folder's CHECKSUMMED_FILES in CHECKSUMS_FILE (replaced atomically)."""
    manifest = {"files": {name: _file_checksum(folder / name) for name in CHECKSUMMED_FILES}}
    write_atomically(folder / CHECKSUMS_FILE, json.dumps(manifest, indent=2))


def verify_checksums(folder: str | Path) -> None:
    """Check every file CHECKSUMS_FILE lists against its recorded size and SHA-256; ModelIntegrityError
    names the first that differs. A folder without the manifest passes unchecked: folders saved before
    Kennel wrote one must still load."""
    folder = Path(folder)
    manifest_path = folder / CHECKSUMS_FILE
    if not manifest_path.is_file():
        return
    try:
        recorded = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise ModelIntegrityError(f"{manifest_path} is unreadable ({exc}); refusing to load the model") from None
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            raise ModelIntegrityError(
                f"{path} is missing, though {CHECKSUMS_FILE} lists it; refusing to load the model"
            )
        actual = _file_checksum(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"{path} is corrupted: sha256 {actual['sha256']} ({actual['bytes']} bytes), but {CHECKSUMS_FILE} "
                f"recorded sha256 {expected['sha256']} ({expected['bytes']} bytes) when the model was saved; "
                "refusing to load it (restore the folder or retrain)"
            )


def _library() -> Any:
    threads.configure_openmp()
    import xgboost

    return xgboost


def import_for_serving() -> None:
    """Import the library as if scikit-learn were absent (as it is in a built Bento's environment).

    xgboost imports scikit-learn, when installed, for its sklearn-style wrappers, which serving
    never uses: most of `import xgboost` (measured here 1.6-1.9 s without it, 9 s with it on a busy
    machine). A None entry in sys.modules makes that import fail cleanly; it is removed right
    after, so other code can still import scikit-learn, but xgboost's sklearn-style classes stay
    unusable in this process: call this only in serving processes.
    """
    if "xgboost" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        _library()
    finally:
        del sys.modules["sklearn"]


@functools.cache
def cuda_available() -> bool:
    """True when XGBoost is built with CUDA and a GPU answers; a one-row probe is the cheapest way."""
    xgb = _library()
    if not xgb.build_info().get("USE_CUDA"):
        return False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            probe = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0.0, 1.0]))
            xgb.train({"device": "cuda", "tree_method": "hist"}, probe, num_boost_round=1)
        except xgb.core.XGBoostError:
            return False
    return not any("GPU" in str(w.message) or "CUDA" in str(w.message) for w in caught)


def resolve_device(requested: str) -> str:
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    return requested


class Model:
    """A trained booster with its card: everything that scores or explains goes through here."""

    def __init__(self, booster: xgboost.Booster, card: ModelCard):
        self.booster, self.card = booster, card
        self.encoder = FeatureEncoder(card)
        booster.set_param({"nthread": 1})
        # Large batches are scored by a copy set to more threads (kennel.model.threads), made on first
        # use: changing the shared booster's thread count would race with concurrent requests.
        self._parallel: tuple[int, xgboost.Booster] | None = None
        self._parallel_lock = threading.Lock()

    def _booster_for(self, rows: int, *, explaining: bool = False) -> tuple[xgboost.Booster, int]:
        """The booster to score (or explain) `rows` rows with, and its thread count."""
        wanted = threads.prediction_threads(rows, explaining=explaining)
        if wanted == 1:
            return self.booster, 1
        with self._parallel_lock:
            if self._parallel is None or self._parallel[0] != wanted:
                parallel = self.booster.copy()
                parallel.set_param({"nthread": wanted})
                self._parallel = (wanted, parallel)
            return self._parallel[1], wanted

    @classmethod
    def load(cls, folder: str | Path) -> Model:
        """Load a model folder. Raises ModelIntegrityError when a file differs from its checksum
        manifest, and ValueError unless the objective gives probabilities and the booster takes exactly
        the card's features (scoring matrices relies on it): a wrong model fails at load, not per request."""
        folder = Path(folder)
        path = folder / MODEL_FILE
        # Before anything is parsed, so a damaged card is reported as damaged. A folder saved by code older
        # than the checksums has none and loads unchecked.
        verify_checksums(folder)
        card = ModelCard.load(folder)
        booster = _library().Booster(model_file=str(path))
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        if objective != OBJECTIVE:
            raise ValueError(f"{path}: objective is {objective}, Kennel needs {OBJECTIVE}")
        if booster.num_features() != len(card.features):
            raise ValueError(
                f"{path}: the booster takes {booster.num_features()} features, its card lists {len(card.features)}"
            )
        return cls(booster, card)

    def save(self, folder: str | Path, spec_yaml: str) -> Path:
        """Write the model folder: the booster, its card, the resolved spec it was trained for and, last,
        their checksums. A save cut short over an earlier one leaves the earlier manifest, which the new
        files then fail: a torn folder is refused at load rather than loaded half old, half new."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / MODEL_FILE))
        self.card.save(folder)
        (folder / SPEC_FILE).write_text(spec_yaml)
        write_checksums(folder)
        return folder

    # --- scoring: every input becomes the encoder's matrix, scored by one call ----------------------

    def score(self, data: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Positive-class probabilities for records or a frame (extra columns ignored)."""
        return self.score_matrix(self.encoder.encode_frame(data))

    def score_columns(self, columns: Mapping[str, Sequence[Any] | None], n_rows: int) -> np.ndarray:
        """For column lists of validated values (a JSON request)."""
        return self.score_matrix(self.encoder.encode(columns, n_rows))

    def score_numbers(self, values: Mapping[str, np.ndarray], n_rows: int) -> np.ndarray:
        """For columns already converted to numbers (an Arrow request)."""
        return self.score_matrix(self.encoder.encode_numbers(values, n_rows))

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        # The matrix width was checked against the booster at load, so the per-call check is skipped.
        booster, _ = self._booster_for(len(matrix))
        return np.asarray(booster.inplace_predict(matrix, validate_features=False), dtype=np.float64)

    # --- explanations ------------------------------------------------------------------------------------

    def explain(self, data: pd.DataFrame) -> pd.DataFrame:
        """Exact TreeSHAP contributions per row and feature (margin scale); the column `bias` holds the
        expected value, so each row sums to the model's margin."""
        import pandas as pd

        xgb = _library()
        frame = to_model_frame(data, self.card)
        booster, nthread = self._booster_for(len(frame), explaining=True)
        contributions = booster.predict(
            xgb.DMatrix(frame, enable_categorical=True, nthread=nthread), pred_contribs=True
        )
        return pd.DataFrame(contributions, columns=[*self.card.feature_names, "bias"], index=frame.index)

    def explain_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """`explain` for the encoder's float32 matrix (what `score_matrix` scores), without a pandas
        frame: float32 rows x (features + 1), the card's features in order, the last column the bias,
        so each row sums to the model's margin. XGBoost computes contributions only from a DMatrix, not
        in place: one record of the demo model (55 trees, depth 6) costs ~0.35 ms, ~4x `score_matrix`."""
        xgb = _library()
        # The booster's own feature types mark the categorical columns, whose cells are card codes, so
        # the DMatrix reads them as categories (as the training frame's Categoricals were), not numbers.
        # No feature names: their Python-side checks cost ~30 µs a call, and the width was checked
        # against the booster at load (as for score_matrix), so the per-call check is skipped.
        booster, nthread = self._booster_for(len(matrix), explaining=True)
        dmatrix = xgb.DMatrix(
            matrix,
            feature_types=self.booster.feature_types,
            enable_categorical=True,
            nthread=nthread,
        )
        return np.asarray(booster.predict(dmatrix, pred_contribs=True, validate_features=False))


# --- training ---------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """A freshly trained model (cut to its best iteration) and the facts of its training."""

    model: Model
    device: str
    params: dict[str, Any]
    best_iteration: int
    num_boosted_rounds: int
    seconds: float
    train_rows: int
    gain_shares: dict[str, float] = field(default_factory=dict)  # feature → share of total gain, largest first
    distributed: bool = False


def booster_params(
    *,
    learning_rate: float,
    max_depth: int,
    min_child_weight: float,
    subsample: float,
    colsample_bytree: float,
    reg_lambda: float,
    seed: int,
    nthread: int,
    device: str,
    scale_pos_weight: float | None = None,
) -> dict[str, Any]:
    """The library's parameters, the same for single-node and distributed training."""
    params: dict[str, Any] = {
        "objective": OBJECTIVE,
        # Early stopping watches the last metric: log loss, a proper score, so stopping also guards calibration.
        "eval_metric": ["auc", "logloss"],
        "tree_method": "hist",
        "device": device,
        "learning_rate": learning_rate,
        "max_depth": max_depth,
        "min_child_weight": min_child_weight,
        "subsample": subsample,
        "colsample_bytree": colsample_bytree,
        "reg_lambda": reg_lambda,
        "seed": seed,
        "nthread": threads.training_threads(nthread),
    }
    if scale_pos_weight is not None:
        params["scale_pos_weight"] = scale_pos_weight
    return params


def finish_fit(
    booster: xgboost.Booster,
    card: ModelCard,
    *,
    device: str,
    params: dict[str, Any],
    seconds: float,
    train_rows: int,
    distributed: bool = False,
) -> FitResult:
    """Cut the booster to its best iteration so every consumer scores exactly the model early stopping
    chose, without having to know about iteration ranges."""
    best_iteration = int(booster.best_iteration)
    booster = booster[: best_iteration + 1]
    # With total_gain every value is one number (lists come only from other importance types).
    gains = {name: float(cast(float, value)) for name, value in booster.get_score(importance_type="total_gain").items()}
    total_gain = sum(gains.values()) or 1.0
    return FitResult(
        model=Model(booster, card),
        device=device,
        params=params,
        best_iteration=best_iteration,
        num_boosted_rounds=int(booster.num_boosted_rounds()),
        seconds=round(seconds, 3),
        train_rows=train_rows,
        gain_shares={k: v / total_gain for k, v in sorted(gains.items(), key=lambda kv: -kv[1])},
        distributed=distributed,
    )


def fit(
    card: ModelCard,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    params: dict[str, Any],
    *,
    rounds: int,
    early_stopping_rounds: int,
) -> FitResult:
    """Train on `train` with early stopping on `validation` (both with a 0/1 `label` column)."""
    xgb = _library()
    x_train, y_train = to_model_frame(train, card), train["label"].to_numpy(dtype=np.float32)
    x_valid, y_valid = to_model_frame(validation, card), validation["label"].to_numpy(dtype=np.float32)
    started = time.perf_counter()
    # QuantileDMatrix builds the histogram bins once; validation reuses the training bins.
    nthread = params.get("nthread")
    dtrain = xgb.QuantileDMatrix(x_train, label=y_train, enable_categorical=True, nthread=nthread)
    dvalid = xgb.QuantileDMatrix(x_valid, label=y_valid, enable_categorical=True, ref=dtrain, nthread=nthread)
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    return finish_fit(
        booster,
        card,
        device=params["device"],
        params=params,
        seconds=time.perf_counter() - started,
        train_rows=len(train),
    )
