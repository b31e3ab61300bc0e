"""The typed records Kennel keeps in the lake: what a day's data, a model's gate and the monitoring loop
concluded. Modules exchange these, never raw JSON dictionaries.

Every record carries a schema version. A reader accepts every version written so far (fields added
later have defaults; unknown fields are ignored), so a lake written by older code stays readable;
tests/data/lake_records/ holds records written by earlier versions that must keep loading.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """Base of every lake record: frozen once read, tolerant of fields written by newer code."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# --- data quality: one per data set and day, written by ingestion -----------------------------------


class SchemaDrift(Record):
    extra_columns: dict[str, list[str]] = {}  # file → columns the spec does not know
    missing_columns: dict[str, list[str]] = {}  # file → required columns it lacks
    unreadable_files: dict[str, str] = {}  # file → why it could not be read


class RowCount(Record):
    clean: int
    trailing_mean: float | None = None
    trailing_days: int = 0
    ratio: float | None = None  # clean rows / trailing mean


class ExpectationResult(Record):
    check: str  # the Dagster check it reports to: gx_<group>
    severity: Literal["error", "warn"] = "error"
    expectation: str
    column: str | None = None
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_sample: list[Any] = []


class FileDigest(Record):
    """A file a record vouches for: readers check its size and SHA-256 before they use it."""

    file: str  # path relative to the lake root (quality records before version 3: a name in the day's folder)
    bytes: int
    sha256: str


class QualityRecord(Record):
    """Whether a day's clean table may be used (every error-severity check passed), and why."""

    # The schema version: 2 since outputs carry digests, 3 since each run writes its own version folder
    # and the record (written last) is what publishes it.
    version: int = 3
    dataset: str
    day: str
    passed: bool
    run_id: str
    written_at: str
    spec_fingerprint: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    # Clean rows whose label is known, and their share of the clean rows: the rest wait for a late label
    # (kennel.ingestion.labels). None in records written before unlabelled rows were clean.
    rows_labelled: int | None = None
    labelled_share: float | None = None
    quarantine_rate: float
    max_quarantine_fraction: float
    reasons: dict[str, int] = {}
    schema_drift: SchemaDrift = SchemaDrift()
    mapped_to_other: dict[str, int] = {}  # feature → unknown values kept as "other"
    row_count: RowCount
    checks: dict[str, bool]
    warnings: list[str] = []  # failed checks that do not block (warn severity)
    expectations: list[ExpectationResult] = []
    outputs: dict[str, FileDigest] = {}  # "clean" / "quarantine" → the file this record publishes

    @property
    def failed_checks(self) -> tuple[str, ...]:
        return tuple(sorted(name for name, ok in self.checks.items() if not ok))


# --- monitoring: one per data set, day and kind, written by the monitoring assets ---------------------

MonitoringKind = Literal[
    "data_drift", "serving_drift", "realized_performance", "estimated_performance", "attribution_drift"
]


class FeatureDriftRow(Record):
    """One feature's drift; statistics added to kennel/monitoring/drift.py later are kept as they come."""

    model_config = ConfigDict(frozen=True, extra="allow")

    feature: str
    kind: str  # numeric | categorical
    status: str  # ok | drifted | insufficient_data
    rows: int
    psi: float | None = None
    js_distance: float | None = None
    wasserstein: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    severity: float = 0.0


class MetricEstimate(Record):
    """A metric estimated without labels, with the interval the realized value is expected in; `value`
    is None (and `reason` says why) when the rows cannot support an estimate."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    reason: str | None = None


class SliceRow(Record):
    """One slice (a value of a sensitive or segment column) of a monitoring record; the measurements of
    each kind (drift statistics, metrics) are kept as they come."""

    model_config = ConfigDict(frozen=True, extra="allow")

    column: str
    value: str
    rows: int
    status: str  # ok | drifted | decayed | insufficient_data | no_reference …
    severity: float = 0.0  # how bad, comparable within a record: slices are listed worst first


class MonitoringRecord(Record):
    """What one monitoring asset found on one day for the champion named in it.

    `status` says whether there was anything to measure ("ok", "drift", "no traffic", "skipped: …");
    the measurements are None when there was not.
    """

    schema_version: int = 1
    kind: MonitoringKind | None = None  # absent in version-1 files: the file name says it
    day: str
    written_at: str
    status: str
    champion: str | None = None  # model tag
    rows: int | None = None
    validated: bool | None = None
    # drift (data_drift, serving_drift)
    drifted_share: float | None = None
    dataset_drift: bool | None = None
    drifted_features: list[str] = []
    prediction_psi: float | None = None
    mean_score: float | None = None
    reference_mean_score: float | None = None
    features: list[FeatureDriftRow] = []
    # Drifted columns the model does not read (sensitive columns): reported, never counted in drifted_share.
    drifted_non_inputs: list[str] = []
    # serving_drift: values the service scored but flagged, per "kind:field" (kennel.serving.api warnings)
    input_warnings: dict[str, int] = {}
    # realized performance
    roc_auc: float | None = None
    log_loss: float | None = None
    champion_auc: float | None = None
    late_labelled_rows: int | None = None  # of `rows`: labelled late (a label file or /feedback), not as landed
    groups: dict[str, list[dict[str, Any]]] = {}  # sensitive column → per-group metric rows
    # estimated performance (no labels needed): metric → estimate; the rows whose label is known by now,
    # and on them the estimate's error (estimate − realized, the same rows) per metric
    estimates: dict[str, MetricEstimate] = {}
    estimated_roc_auc: float | None = None
    labelled_rows: int | None = None
    estimation_error: dict[str, float] = {}
    # realized − estimated ROC-AUC on the labelled rows beyond what the estimate's interval allows: the
    # labels no longer follow the scores as they did (concept drift), which no estimate can see
    concept_drift_suspected: bool | None = None
    # every kind: per-slice rows, worst first
    slices: list[SliceRow] = []
    # attribution_drift: per-feature rows, most drifted first
    attributions: list[dict[str, Any]] = []


# --- the retraining loop's decision log ---------------------------------------------------------------


class RetrainDecisionRecord(Record):
    """One decision of the retraining sensor: retrain, skip (and why) or alert, on which days."""

    schema_version: int = 1
    at: str
    action: Literal["retrain", "skip", "alert"]
    reason: str
    days: list[str]
    numbers: dict[str, Any] = {}
    thresholds: dict[str, Any] = {}
    run_key: str | None = None
    # Digest of what was decided on what evidence, never of when: the log keeps one entry per id.
    # None in logs written before decisions had ids.
    decision_id: str | None = None


# --- the promotion gate and the champion ---------------------------------------------------------------


class GateCheck(Record):
    name: str
    passed: bool
    value: Any = None
    threshold: Any = None
    detail: str


class ModelIdentity(Record):
    run_id: str
    model_tag: str | None = None
    model_dir: str
    spec_fingerprint: str
    threshold: float


class GroupReport(Record):
    gaps: dict[str, float | None]
    table: list[dict[str, Any]]


class EvaluationNumbers(Record):
    metrics: dict[str, Any]
    groups: dict[str, GroupReport] = {}


class GateDecision(Record):
    """The gate's verdict on a challenger: every check with the number and the threshold it met."""

    schema_version: int = 1
    decided_at: str
    passed: bool
    summary: str
    reasons: list[str] = []
    challenger: ModelIdentity
    champion: ModelIdentity | None = None
    test_rows: int
    config: dict[str, Any]
    challenger_evaluation: EvaluationNumbers | None = None
    champion_evaluation: EvaluationNumbers | None = None
    bootstrap: dict[str, Any] | None = None
    checks: list[GateCheck]


class ChampionEntry(Record):
    """One champion: the model, where it is stored, and why it became (or became again) champion."""

    run_id: str
    model_dir: str
    model_tag: str
    since: str
    reason: str
    event: str  # promoted | rolled_back
    decision_summary: str = ""
    metrics: dict[str, Any] = {}
    bento_tag: str | None = None
    # The evaluations behind a promotion: the offline gate's, and the shadow's on live traffic when the
    # gate config required one. None in entries written before shadows.
    decided_at: str | None = None
    shadow_evaluated_at: str | None = None
    shadow_summary: str | None = None


class ShadowEntry(Record):
    """A challenger that passed the offline gate against the current champion and is served in shadow:
    scored beside the champion on every request, never answering (kennel.lake.champion)."""

    run_id: str
    model_dir: str
    model_tag: str
    since: str
    decided_at: str  # the offline gate decision it passed (GateDecision.decided_at)
    champion_run_id: str  # the champion it shadows; a different champion ends the shadow
    bento_tag: str | None = None  # the Bento serving the champion with this challenger beside it


class ChampionPointer(Record):
    schema_version: int = 1
    dataset: str
    version: int = 0  # increases with every change: a cheap cursor for sensors
    updated_at: str = ""
    current: ChampionEntry | None = None
    previous: list[ChampionEntry] = []  # earlier champions, most recent last
    shadow: ShadowEntry | None = None  # a challenger served in shadow beside `current`, if any


ShadowOutcome = Literal["promoted", "rejected", "expired", "rolled_back", "replaced"]


class ChampionEvent(Record):
    """One line of the champion history: promoted, rolled_back, bento, or a shadow's start, end or Bento."""

    version: int
    event: Literal["promoted", "rolled_back", "bento", "shadow_started", "shadow_ended", "shadow_bento"]
    at: str
    run_id: str
    model_tag: str | None = None
    replaced: str | None = None
    reason: str = ""
    decided_at: str | None = None
    bento_tag: str | None = None
    outcome: ShadowOutcome | None = None  # shadow_ended: why the shadow ended
    # promoted after a shadow: the shadow evaluation that passed (with decided_at, the gate's)
    shadow_evaluated_at: str | None = None
    shadow_summary: str | None = None


class ShadowEvaluationRecord(Record):
    """A shadow challenger against the champion on the same live requests (kennel.training.shadow): every
    number with the threshold it was held against. Kept in the challenger's model folder (what promotion
    reads) and in the data set's registry log."""

    schema_version: int = 1
    evaluated_at: str
    outcome: Literal["pending", "passed", "rejected", "expired"]
    summary: str
    challenger_run_id: str
    challenger_model_tag: str
    model_dir: str
    champion_run_id: str
    champion_model_tag: str
    shadow_since: str
    decided_at: str  # the offline gate decision the shadow followed
    requests: int  # requests scored by both models since the shadow started
    labelled: int  # of those, with a known label
    positives: int = 0
    agreement: float | None = None  # share of requests both models labelled alike (each at its own threshold)
    score_psi: float | None = None  # challenger scores against the champion's, on the champion's deciles
    mean_score: dict[str, float] = {}  # "challenger" / "champion" → mean probability
    metrics: dict[str, dict[str, float | None]] = {}  # "challenger" / "champion" → metric on labelled requests
    bootstrap: dict[str, Any] | None = None  # kennel.training.gate.paired_bootstrap on the labelled requests
    thresholds: dict[str, Any] = {}


# --- the training set ----------------------------------------------------------------------------------


class TrainingSetRecord(Record):
    """The published training set: which version folder, the days of each split and the file of each."""

    schema_version: int = 1
    version: str  # the run that wrote it
    written_at: str
    days: dict[str, list[str]]  # split → days
    files: dict[str, FileDigest]  # split → its Parquet file


# --- what a model folder records about its training and evaluation -----------------------------------


class SearchTrialRow(Record):
    trial: int
    params: dict[str, Any]
    validation_logloss: float
    validation_auc: float | None = None
    best_iteration: int
    seconds: float


class TrainingRecord(Record):
    """How a model was trained (training.json in its folder)."""

    schema_version: int = 1
    code_version: str
    device: str
    distributed: bool = False
    best_iteration: int
    train_seconds: float
    validation_logloss: float
    validation_auc: float | None = None
    train_rows: int
    validation_rows: int
    search_trials: list[SearchTrialRow] = []


class EvaluationRecord(Record):
    """A model on its test window (evaluation.json in its folder)."""

    schema_version: int = 1
    metrics: dict[str, Any]
    fairness: dict[str, dict[str, float | None]] = {}
    test_days: list[str] = []
    shap_mean_abs: dict[str, float] = Field(default_factory=dict)
    # Reliability bins (kennel.training.evaluation.calibration_table rows); [] in records written before.
    calibration: list[dict[str, Any]] = []
