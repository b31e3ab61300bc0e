"""Training hyperparameters and promotion-gate settings, kept apart from kennel.training.trainer and
kennel.training.gate so the orchestrator can declare its config without importing numpy or pandas at load time."""

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class TrainConfig(BaseModel):
    """XGBoost hyperparameters; the Dagster `model` asset takes these as its run config."""

    device: str = Field("auto", description="auto (CUDA when XGBoost sees a GPU, else CPU), cpu or cuda")
    n_estimators: int = Field(400, gt=0, description="Upper bound on boosting rounds; early stopping picks fewer")
    learning_rate: float = Field(0.08, gt=0)
    max_depth: int = Field(6, gt=0)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(0.9, gt=0, le=1)
    colsample_bytree: float = Field(0.9, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(
        30, gt=0, description="Rounds without validation log-loss improvement before stopping"
    )
    balance_classes: bool = Field(
        False,
        description="Reweight positives by negatives/positives; off by default because it skews the "
        "served probabilities away from calibration",
    )
    seed: int = 42
    nthread: int = Field(
        0,
        ge=0,
        description="Threads for single-node training; 0 = one per core this process "
        "may use (distributed training uses one Spark task per worker)",
    )
    num_workers: int = Field(
        2,
        gt=0,
        description="XGBoost workers (Spark tasks) when training on a Spark "
        "cluster; at most the cluster's free task slots",
    )
    search_trials: int = Field(
        0, ge=0, description="Hyperparameter search: trials to run (0 = off; the configured values are always trial 0)"
    )
    search_time_budget_s: float = Field(
        600.0, gt=0, description="Hyperparameter search: no new trial starts after this many seconds"
    )


class GateConfig(BaseModel):
    """When a challenger may replace the champion; the `model_evaluation` asset takes these as its run config.

    Every threshold here ends up in the decision record next to the number it was compared with.
    """

    primary_metric: Literal["roc_auc", "pr_auc"] = Field(
        "roc_auc", description="The metric the challenger must improve on the champion's"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="One-sided confidence level of the paired bootstrap")
    bootstrap_samples: int = Field(1000, ge=100, description="Paired bootstrap resamples of the test rows")
    min_improvement: float = Field(
        0.0,
        description="The lower confidence bound of (challenger − champion) on the primary metric must be "
        "above this. 0 = must be better; a small negative value = must not be worse by more "
        "than that (non-inferiority)",
    )
    fairness_tolerance: float = Field(
        0.02,
        ge=0,
        description="How much any demographic-parity or equalized-odds gap may widen against the "
        "champion's on the same rows",
    )
    min_group_rows: int = Field(
        50,
        ge=1,
        description="A group's rate enters a fairness gap only when it rests on at least this many test "
        "rows (positives for TPR, negatives for FPR); smaller groups are reported but too "
        "noisy to gate on",
    )
    floor_primary_metric: float = Field(
        0.65, description="First model only (no champion): the primary metric must reach this"
    )
    max_fairness_gap: float = Field(
        0.25, ge=0, description="First model only (no champion): no fairness gap may exceed this"
    )
    min_score_std: float = Field(
        0.005,
        ge=0,
        description="Sanity: a score standard deviation below this means the model has collapsed "
        "to (nearly) one answer",
    )
    max_latency_ms: float = Field(
        25.0,
        gt=0,
        description="Sanity: 95th-percentile latency of one single-record prediction through the "
        "serving code path, in milliseconds",
    )
    latency_samples: int = Field(200, ge=20, description="Single-record predictions timed for the latency check")
    seed: int = 0
    shadow: bool = Field(
        False,
        description="A challenger that passes (against a champion) is first served in shadow beside the "
        "champion; it becomes champion only after a passed shadow evaluation on live traffic",
    )
    shadow_max_days: float = Field(
        7.0, gt=0, description="Shadow: a shadow still without a verdict after this many days ends as expired"
    )
    shadow_min_requests: int = Field(
        500, ge=1, description="Shadow: requests scored by both models before the shadow evaluation may judge"
    )
    shadow_min_labelled: int = Field(
        300,
        ge=2,
        description="Shadow: labelled requests (both label values present) before the paired bootstrap on "
        "live traffic runs; it uses primary_metric, bootstrap_samples, confidence, min_improvement and seed",
    )

    @model_validator(mode="after")
    def _floor_in_range(self) -> "GateConfig":
        if not 0 <= self.floor_primary_metric <= 1:
            raise ValueError(f"floor_primary_metric must lie in [0, 1], got {self.floor_primary_metric}")
        return self
