"""Time-based training-set split and XGBoost training (device chosen at run time, fixed seed)."""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kennel.features import ModelCard, to_model_frame
from kennel.hyperparameters import TrainConfig
from kennel.spec import DatasetSpec

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
    threshold: float
    feature_importance: dict[str, float] = field(default_factory=dict)


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


def train_model(
    card: ModelCard, train: pd.DataFrame, validation: pd.DataFrame, config: TrainConfig
) -> tuple[Any, TrainResult]:
    """Train a binary XGBoost classifier with early stopping on validation; same inputs, same model."""
    import xgboost as xgb

    device = resolve_device(config.device)
    x_train, y_train = to_model_frame(train, card), train["label"].to_numpy(dtype=np.float32)
    x_valid, y_valid = to_model_frame(validation, card), validation["label"].to_numpy(dtype=np.float32)
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training window holds only one label value; a classifier cannot be trained")
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
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
        positives = float(y_train.sum())
        params["scale_pos_weight"] = (len(y_train) - positives) / max(positives, 1.0)
    started = time.perf_counter()
    # QuantileDMatrix builds the histogram bins once; validation reuses the training bins.
    dtrain = xgb.QuantileDMatrix(x_train, label=y_train, enable_categorical=True)
    dvalid = xgb.QuantileDMatrix(x_valid, label=y_valid, enable_categorical=True, ref=dtrain)
    booster = xgb.train(
        params, dtrain, num_boost_round=config.n_estimators, evals=[(dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds, verbose_eval=False,
    )
    elapsed = time.perf_counter() - started
    best_iteration = int(booster.best_iteration)
    best_logloss = float(booster.attributes().get("best_score", "nan"))
    # Keep only the trees up to the best iteration so every consumer (evaluation, the Bento) scores
    # with exactly the model early stopping chose, without having to know about iteration ranges.
    booster = booster[: best_iteration + 1]
    valid_scores = predict_scores(booster, card, validation)
    gains = booster.get_score(importance_type="total_gain")
    total_gain = sum(gains.values()) or 1.0
    result = TrainResult(
        device=device,
        params=params,
        best_iteration=best_iteration,
        num_boosted_rounds=int(booster.num_boosted_rounds()),
        train_seconds=round(elapsed, 3),
        validation_logloss=best_logloss,
        threshold=best_f1_threshold(y_valid, valid_scores),
        feature_importance={k: v / total_gain for k, v in sorted(gains.items(), key=lambda kv: -kv[1])},
    )
    return booster, result


def predict_scores(booster: Any, card: ModelCard, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(booster.inplace_predict(to_model_frame(frame, card)), dtype=np.float64)

