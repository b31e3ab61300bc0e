"""Time-based training-set split and XGBoost training (device chosen at run time, fixed seed), with an
optional budgeted hyperparameter search. Distributed training on Spark lives in kennel.distributed."""

from __future__ import annotations

import functools
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from kennel.evaluation import log_loss, roc_auc
from kennel.features import ModelCard, to_model_frame
from kennel.hyperparameters import TrainConfig
from kennel.spec import PROJECT_ROOT, DatasetSpec

SPLITS = ("train", "validation", "test")


class NotEnoughData(ValueError):
    """The validated data does not cover enough days for the spec's split."""


@dataclass
class SplitWindows:
    train: list[str]
    validation: list[str]
    test: list[str]

    def of(self, name: str) -> list[str]:
        return getattr(self, name)


def split_windows(days: list[str], spec: DatasetSpec) -> SplitWindows:
    """The most recent test_days are test, the validation_days before them validation, and up to
    train_days before those train. Time order, never random: the model is judged on its future."""
    days = sorted(set(days))
    need = spec.split.validation_days + spec.split.test_days + 1
    if len(days) < need:
        raise NotEnoughData(
            f"{len(days)} validated day(s) available ({', '.join(days) or 'none'}); the split needs at least "
            f"{need}: {spec.split.test_days} test + {spec.split.validation_days} validation + 1 train"
        )
    test = days[-spec.split.test_days:]
    validation = days[-(spec.split.test_days + spec.split.validation_days):-spec.split.test_days]
    train_end = len(days) - spec.split.test_days - spec.split.validation_days
    train = days[max(0, train_end - spec.split.train_days):train_end]
    return SplitWindows(train=train, validation=validation, test=test)


@dataclass
class TrainResult:
    device: str
    params: dict[str, Any]
    best_iteration: int
    num_boosted_rounds: int
    train_seconds: float
    validation_logloss: float
    validation_auc: float | None
    threshold: float
    train_rows: int
    feature_importance: dict[str, float] = field(default_factory=dict)
    distributed: bool = False


@dataclass
class SearchTrial:
    """One hyperparameter-search trial: what was tried and how it scored on validation."""

    trial: int
    params: dict[str, Any]
    validation_logloss: float
    validation_auc: float | None
    best_iteration: int
    seconds: float


@functools.cache
def cuda_available() -> bool:
    """True when XGBoost is built with CUDA and a GPU answers; a one-row probe is the cheapest way."""
    import xgboost as xgb

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


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on the given (validation) rows."""
    order = np.argsort(-scores, kind="stable")
    y_sorted, s_sorted = y[order], scores[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    positives = max(y.sum(), 1)
    f1 = 2 * tp / (tp + fp + positives)
    best = int(np.argmax(f1))
    return float(s_sorted[best])


def booster_params(config: TrainConfig, device: str, positives: float, rows: int) -> dict[str, Any]:
    """XGBoost parameters for `config`, the same for single-node and distributed training (`positives`
    and `rows` count the training labels, for class balancing)."""
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        # Early stopping watches the last metric: log loss, a proper score, so stopping also guards calibration.
        "eval_metric": ["auc", "logloss"],
        "tree_method": "hist",
        "device": device,
        "learning_rate": config.learning_rate,
        "max_depth": config.max_depth,
        "min_child_weight": config.min_child_weight,
        "subsample": config.subsample,
        "colsample_bytree": config.colsample_bytree,
        "reg_lambda": config.reg_lambda,
        "seed": config.seed,
        "nthread": config.nthread,
    }
    if config.balance_classes:
        params["scale_pos_weight"] = (rows - positives) / max(positives, 1.0)
    return params


def require_two_classes(positives: float, rows: int) -> None:
    if positives == 0 or positives == rows:
        raise ValueError("the training window holds only one label value; a classifier cannot be trained")


def finish_training(
    booster: Any, card: ModelCard, validation: pd.DataFrame, *, device: str, params: dict[str, Any],
    seconds: float, train_rows: int, distributed: bool = False,
) -> tuple[Any, TrainResult]:
    """Cut the booster to its best iteration and describe it: what every trainer returns."""
    best_iteration = int(booster.best_iteration)
    # Keep only the trees up to the best iteration so every consumer (evaluation, the Bento) scores
    # with exactly the model early stopping chose, without having to know about iteration ranges.
    booster = booster[: best_iteration + 1]
    valid_scores = predict_scores(booster, card, validation)
    y_valid = validation["label"].to_numpy(dtype=np.float32)
    gains = booster.get_score(importance_type="total_gain")
    total_gain = sum(gains.values()) or 1.0
    result = TrainResult(
        device=device,
        params=params,
        best_iteration=best_iteration,
        num_boosted_rounds=int(booster.num_boosted_rounds()),
        train_seconds=round(seconds, 3),
        validation_logloss=log_loss(y_valid, valid_scores),
        validation_auc=roc_auc(y_valid, valid_scores),
        threshold=best_f1_threshold(y_valid, valid_scores),
        train_rows=train_rows,
        feature_importance={k: v / total_gain for k, v in sorted(gains.items(), key=lambda kv: -kv[1])},
        distributed=distributed,
    )
    return booster, result


def train_model(
    card: ModelCard, train: pd.DataFrame, validation: pd.DataFrame, config: TrainConfig
) -> tuple[Any, TrainResult]:
    """Train a binary XGBoost classifier with early stopping on validation; same inputs, same model."""
    import xgboost as xgb

    device = resolve_device(config.device)
    x_train, y_train = to_model_frame(train, card), train["label"].to_numpy(dtype=np.float32)
    x_valid, y_valid = to_model_frame(validation, card), validation["label"].to_numpy(dtype=np.float32)
    require_two_classes(float(y_train.sum()), len(y_train))
    params = booster_params(config, device, float(y_train.sum()), len(y_train))
    started = time.perf_counter()
    # QuantileDMatrix builds the histogram bins once; validation reuses the training bins.
    dtrain = xgb.QuantileDMatrix(x_train, label=y_train, enable_categorical=True)
    dvalid = xgb.QuantileDMatrix(x_valid, label=y_valid, enable_categorical=True, ref=dtrain)
    booster = xgb.train(
        params, dtrain, num_boost_round=config.n_estimators, evals=[(dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds, verbose_eval=False,
    )
    return finish_training(booster, card, validation, device=device, params=params,
                           seconds=time.perf_counter() - started, train_rows=len(train))


# Where the search looks, around values that suit tabular data; (low, high, log scale).
SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (0.02, 0.3, True),
    "max_depth": (3, 10, False),
    "min_child_weight": (0.5, 20.0, True),
    "subsample": (0.6, 1.0, False),
    "colsample_bytree": (0.5, 1.0, False),
    "reg_lambda": (0.1, 20.0, True),
}


def _sample_config(config: TrainConfig, rng: np.random.Generator) -> TrainConfig:
    values: dict[str, Any] = {}
    for name, (low, high, log) in SEARCH_SPACE.items():
        value = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if log else float(rng.uniform(low, high))
        values[name] = int(round(value)) if name == "max_depth" else round(value, 4)
    return config.model_copy(update=values)


def search_hyperparameters(
    train_once: Callable[[TrainConfig], tuple[Any, TrainResult]], config: TrainConfig,
) -> tuple[Any, TrainResult, list[SearchTrial]]:
    """Budgeted random search: trial 0 is `config` itself, then up to `search_trials` - 1 seeded draws
    from SEARCH_SPACE; no trial starts once `search_time_budget_s` is spent. The winner has the lowest
    validation log loss (the early-stopping metric), so the test window never influences the choice.
    With search_trials = 0 this is one ordinary training run."""
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    trials: list[SearchTrial] = []
    best: tuple[Any, TrainResult] | None = None
    for trial in range(max(config.search_trials, 1)):
        if trial and time.perf_counter() - started >= config.search_time_budget_s:
            break
        candidate = config if trial == 0 else _sample_config(config, rng)
        trial_started = time.perf_counter()
        booster, result = train_once(candidate)
        trials.append(SearchTrial(
            trial=trial,
            params={name: getattr(candidate, name) for name in SEARCH_SPACE},
            validation_logloss=result.validation_logloss,
            validation_auc=result.validation_auc,
            best_iteration=result.best_iteration,
            seconds=round(time.perf_counter() - trial_started, 3),
        ))
        if best is None or result.validation_logloss < best[1].validation_logloss:
            best = (booster, result)
    assert best is not None
    return best[0], best[1], trials


def predict_scores(booster: Any, card: ModelCard, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(booster.inplace_predict(to_model_frame(frame, card)), dtype=np.float64)


def code_version() -> str:
    """The git commit the code was run from (with "-dirty" when the work tree differs), else "unknown"."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit or "unknown"
