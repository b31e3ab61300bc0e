"""Training hyperparameters, kept apart from kennel.training so the orchestrator can declare its
config without importing pandas or numpy at load time."""

from pydantic import BaseModel, Field


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
    early_stopping_rounds: int = Field(30, gt=0, description="Rounds without validation improvement before stopping")
    balance_classes: bool = Field(
        False, description="Reweight positives by negatives/positives; off by default because it skews the "
                           "served probabilities away from calibration")
    seed: int = 42
    nthread: int = Field(2, gt=0)
