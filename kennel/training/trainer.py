"""Time-based training-set split and training (device chosen at run time, fixed seed), single-node or on
a Spark cluster, with an optional budgeted hyperparameter search. The model library is behind kennel.model."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kennel.model import (
    FitResult,
    Model,
    ModelCard,
    booster_params,
    fit,
    resolve_device,
)
from kennel.spec import PROJECT_ROOT, DatasetSpec
from kennel.training.config import TrainConfig
from kennel.training.evaluation import log_loss, roc_auc

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


def window_shortfall(windows: SplitWindows, spec: DatasetSpec, failed_days: Sequence[str]) -> str | None:
    """Why the train window holds fewer days than the spec asks for, naming the days that failed
    validation before the validation window (each would have been a train day), or None when it
    holds them all. Validation and test never shrink: too few days for them is NotEnoughData."""
    asked, got = spec.split.train_days, len(windows.train)
    if got >= asked:
        return None
    before = windows.validation[0]
    lost = sorted(day for day in failed_days if day < before)
    why = (
        f"{len(lost)} day(s) before {before} failed validation and were left out: {', '.join(lost)}"
        if lost
        else f"only {got} validated day(s) come before {before}"
    )
    return f"the train window holds {got} of the {asked} days the spec asks for: {why}"


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
    test = days[-spec.split.test_days :]
    validation = days[-(spec.split.test_days + spec.split.validation_days) : -spec.split.test_days]
    train_end = len(days) - spec.split.test_days - spec.split.validation_days
    train = days[max(0, train_end - spec.split.train_days) : train_end]
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


def require_two_classes(positives: float, rows: int) -> None:
    if positives == 0 or positives == rows:
        raise ValueError("the training window holds only one label value; a classifier cannot be trained")


def model_params(config: TrainConfig, device: str, positives: float, rows: int) -> dict[str, Any]:
    """The model library's parameters for `config` (`positives` and `rows` count the training labels,
    for class balancing)."""
    return booster_params(
        learning_rate=config.learning_rate,
        max_depth=config.max_depth,
        min_child_weight=config.min_child_weight,
        subsample=config.subsample,
        colsample_bytree=config.colsample_bytree,
        reg_lambda=config.reg_lambda,
        seed=config.seed,
        nthread=config.nthread,
        device=device,
        scale_pos_weight=(rows - positives) / max(positives, 1.0) if config.balance_classes else None,
    )


def describe(fitted: FitResult, validation: pd.DataFrame) -> TrainResult:
    """What every trainer reports: the fit's facts plus validation metrics and the F1 threshold."""
    valid_scores = fitted.model.score(validation)
    y_valid = validation["label"].to_numpy(dtype=np.float32)
    validation_logloss = log_loss(y_valid, valid_scores)
    if validation_logloss is None:
        raise ValueError("the validation window holds no rows: early stopping and the threshold need some")
    return TrainResult(
        device=fitted.device,
        params=fitted.params,
        best_iteration=fitted.best_iteration,
        num_boosted_rounds=fitted.num_boosted_rounds,
        train_seconds=fitted.seconds,
        validation_logloss=validation_logloss,
        validation_auc=roc_auc(y_valid, valid_scores),
        threshold=best_f1_threshold(y_valid, valid_scores),
        train_rows=fitted.train_rows,
        feature_importance=fitted.gain_shares,
        distributed=fitted.distributed,
    )


def train_model(
    card: ModelCard, train: pd.DataFrame, validation: pd.DataFrame, config: TrainConfig
) -> tuple[Model, TrainResult]:
    """Train a binary classifier with early stopping on validation; same inputs, same model."""
    device = resolve_device(config.device)
    positives = float(train["label"].sum())
    require_two_classes(positives, len(train))
    fitted = fit(
        card,
        train,
        validation,
        model_params(config, device, positives, len(train)),
        rounds=config.n_estimators,
        early_stopping_rounds=config.early_stopping_rounds,
    )
    return fitted.model, describe(fitted, validation)


def train_distributed(
    spark: Any,
    card: ModelCard,
    train_path: str | Path,
    validation_path: str | Path,
    validation: pd.DataFrame,
    config: TrainConfig,
) -> tuple[Model, TrainResult]:
    """Train on the Spark cluster behind `spark` from the train/validation Parquet files (paths the
    executors can read); `validation` (the same rows, in pandas) picks the threshold on the driver."""
    from pyspark.sql import functions as F

    from kennel.model.distributed import fit_on_spark

    device = resolve_device(config.device)
    counts = (
        spark.read.parquet(str(train_path))
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("label").alias("positives"))
        .first()
    )
    rows, positives = int(counts["rows"]), float(counts["positives"] or 0)
    require_two_classes(positives, rows)
    fitted = fit_on_spark(
        spark,
        card,
        train_path,
        validation_path,
        model_params(config, device, positives, rows),
        rounds=config.n_estimators,
        early_stopping_rounds=config.early_stopping_rounds,
        num_workers=config.num_workers,
        train_rows=rows,
    )
    return fitted.model, describe(fitted, validation)


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
    train_once: Callable[[TrainConfig], tuple[Model, TrainResult]],
    config: TrainConfig,
) -> tuple[Model, TrainResult, list[SearchTrial]]:
    """Budgeted random search: trial 0 is `config` itself, then up to `search_trials` - 1 seeded draws
    from SEARCH_SPACE; no trial starts once `search_time_budget_s` is spent. The winner has the lowest
    validation log loss (the early-stopping metric), so the test window never influences the choice.
    With search_trials = 0 this is one ordinary training run."""
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    trials: list[SearchTrial] = []
    best: tuple[Model, TrainResult] | None = None
    for trial in range(max(config.search_trials, 1)):
        if trial and time.perf_counter() - started >= config.search_time_budget_s:
            break
        candidate = config if trial == 0 else _sample_config(config, rng)
        trial_started = time.perf_counter()
        model, result = train_once(candidate)
        trials.append(
            SearchTrial(
                trial=trial,
                params={name: getattr(candidate, name) for name in SEARCH_SPACE},
                validation_logloss=result.validation_logloss,
                validation_auc=result.validation_auc,
                best_iteration=result.best_iteration,
                seconds=round(time.perf_counter() - trial_started, 3),
            )
        )
        if best is None or result.validation_logloss < best[1].validation_logloss:
            best = (model, result)
    assert best is not None
    return best[0], best[1], trials


def code_version() -> str:
    """The git commit the code was run from (with "-dirty" when the work tree differs), else "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit or "unknown"
