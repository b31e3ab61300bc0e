"""Deterministic demo data: daily landed files for a data-set spec, in four scenarios.

`python -m kennel.demo` writes one folder per day, ``<out>/<YYYY-MM-DD>/part-00000.<csv|parquet>``,
holding ``spec.raw_columns`` as text. The built-in ``credit_demo`` spec gets a realistic generator
(correlated applicant attributes, a non-linear default model and a gender bias that reaches the
label through pricing); any other spec gets a generic one driven only by its declared columns.

Scenarios:

* ``baseline`` – clean data from a stable world.
* ``drift`` – from ``drift_start_day`` on, the inputs shift (covariate drift) and the label's
  dependence on them changes (concept drift). Days before it are identical to ``baseline``.
* ``covariate_shift`` – from ``drift_start_day`` on, the inputs shift exactly as in ``drift``, but
  P(label | features) stays the baseline's: the world label-free performance estimation assumes.
  Its files are byte-identical to ``drift``'s but for the labels of the shifted days.
* ``corrupt`` – baseline data with a few % malformed rows per day, one problem per row, covering
  every :class:`~kennel.ingestion.reasons.Reason`; the report says how many rows cleaning must quarantine
  under each reason.

Everything is derived from ``seed`` and the day index, so the same arguments give byte-identical
files on every run and machine.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kennel.ingestion.reasons import Reason
from kennel.spec import MAX_CATEGORY_LENGTH, MAX_ID_LENGTH, DatasetSpec, Feature, FeatureType, SpecError, load_spec

# What the corrupt scenario injects: every reason a landed row can earn. A file that cannot be read at
# all (Reason.unreadable_file) is file-level breakage, covered by the malformed-input corpus tests.
ROW_REASONS = [r for r in Reason if r is not Reason.unreadable_file]

SCENARIOS = ("baseline", "drift", "covariate_shift", "corrupt")
# The scenarios whose days shift from drift_start_day on, and whether the label model changes with them.
SHIFTING_SCENARIOS = {"drift": True, "covariate_shift": False}
FILE_FORMATS = ("csv", "parquet")

# Corrupt scenario: share of a day's lines per injected problem kind (10 kinds ≈ 4 % of lines),
# and the size of the one missing-column file relative to a day's rows.
CORRUPT_SHARE_PER_KIND = 0.004
MISSING_COLUMN_SHARE = 0.02
# Below this, a day cannot hold one row of every corruption plus clean rows to duplicate.
MIN_CORRUPT_ROWS = 20

TRUE_TEXT, FALSE_TEXT = "true", "false"
# None as np.where's fill value (an object array with missing entries); numpy's stubs accept no None there.
_NONE: Any = None
WRONG_TYPE_NUMERIC = "abc"
WRONG_TYPE_BOOLEAN = "maybe"
UNKNOWN_CATEGORY = "unlisted_value"

# Applications arrive mostly in office hours and the evening; the same profile serves every spec.
_HOURLY_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 7, 9, 10, 10, 9, 9, 9, 8, 8, 8, 9, 10, 9, 7, 4, 2], dtype=float)
_HOURLY_P = _HOURLY_WEIGHTS / _HOURLY_WEIGHTS.sum()


@dataclass
class GenerationReport:
    """What `generate` wrote and, for the corrupt scenario, what cleaning is expected to reject."""

    spec_name: str
    scenario: str
    file_format: str
    out_dir: Path
    seed: int
    drift_start_day: int | None
    files: list[Path] = field(default_factory=list)
    # Day (YYYY-MM-DD) → data lines written that day over all its files, headers not counted.
    rows_per_day: dict[str, int] = field(default_factory=dict)
    # Reason code → rows expected in quarantine (empty unless scenario == "corrupt").
    expected_reasons: dict[str, int] = field(default_factory=dict)
    # The same per day, for checking one partition at a time.
    expected_reasons_by_day: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows_per_day.values())

    @property
    def expected_clean_rows(self) -> int:
        return self.total_rows - sum(self.expected_reasons.values())

    def summary(self) -> str:
        days = list(self.rows_per_day)
        lines = [
            f"Wrote {self.total_rows:,} rows of {self.spec_name} ({self.scenario}, {self.file_format}, "
            f"seed {self.seed}) in {len(self.files)} files for {len(days)} days "
            f"{days[0]} .. {days[-1]} under {self.out_dir}",
        ]
        if self.drift_start_day is not None:
            lines.append(f"Drift starts on day {self.drift_start_day} ({days[self.drift_start_day]}).")
        if self.expected_reasons:
            lines.append(
                f"Expected in quarantine: {sum(self.expected_reasons.values()):,} rows; "
                f"expected clean: {self.expected_clean_rows:,}"
            )
            lines.extend(f"  {code:<28} {count:>6,}" for code, count in self.expected_reasons.items())
        return "\n".join(lines)


# --- shared sampling helpers -----------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, categories: Sequence[str], logits: np.ndarray) -> np.ndarray:
    """One category per row from row-wise (n × k) logits, by the Gumbel-max trick."""
    choice = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return np.asarray(categories, dtype=object)[choice]


def _pick_fixed(rng: np.random.Generator, categories: Sequence[str], p: Sequence[float], n: int) -> np.ndarray:
    return np.asarray(categories, dtype=object)[rng.choice(len(categories), n, p=p)]


def _timestamps(day: date, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted second-resolution timestamps within `day` following the hourly arrival profile."""
    seconds = rng.choice(24, size=n, p=_HOURLY_P) * 3600 + rng.integers(0, 3600, size=n)
    return np.datetime64(day.isoformat(), "s") + np.sort(seconds).astype("timedelta64[s]")


def _id_prefix(spec: DatasetSpec) -> str:
    if spec.name == "credit_demo":
        return "app"
    return re.sub(r"_?id$", "", spec.id_column) or "row"


# --- credit_demo generator -------------------------------------------------------------------------

_CREDIT_NUMERICS = (
    "age", "annual_income", "loan_amount", "loan_term_months", "interest_rate", "credit_score",
    "num_open_accounts", "num_delinquencies_2y", "debt_to_income", "months_employed",
    "credit_utilization", "num_inquiries_6m", "savings_balance",
)  # fmt: skip
_CREDIT_BOOLEANS = ("has_cosigner", "is_repeat_customer")
_CREDIT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "employment_type": ("salaried", "self_employed", "contractor", "unemployed", "retired"),
    "home_ownership": ("own", "mortgage", "rent", "other"),
    "loan_purpose": ("debt_consolidation", "home_improvement", "car", "education", "medical", "business", "other"),
    "region": ("north", "south", "east", "west", "central"),
    "channel": ("branch", "online", "broker", "partner"),
    "gender": ("female", "male", "nonbinary"),
}
# The bias: this group is priced higher for the same risk, which raises its payments, DTI and
# default rate, so any model using interest_rate or debt_to_income reproduces the gap without
# ever seeing gender.
BIASED_GROUP = "female"
BIAS_RATE_MARKUP = 4.0  # percentage points of interest
# Per loan_purpose, in category order: share of applications, log-size effect on the amount, and
# log-odds effect on default.
_PURPOSE_SHARE = np.array([0.38, 0.12, 0.15, 0.07, 0.06, 0.07, 0.15])
_PURPOSE_AMOUNT = np.array([0.1, 0.5, 0.2, 0.1, -0.4, 0.6, -0.2])
_PURPOSE_RISK = np.array([0.1, -0.2, -0.15, 0.2, 0.3, 0.35, 0.05])
_CREDIT_INTERCEPT = -4.1  # puts the baseline default rate at about 15 %


def _uses_credit_model(spec: DatasetSpec) -> bool:
    """The credit generator serves the demo spec as long as its columns still match what it makes."""
    if spec.name != "credit_demo":
        return False
    for f in spec.features:
        if f.type is FeatureType.numeric and f.name not in _CREDIT_NUMERICS:
            return False
        if f.type is FeatureType.boolean and f.name not in _CREDIT_BOOLEANS:
            return False
        if f.type is FeatureType.categorical and not set(_CREDIT_CATEGORIES.get(f.name, ("?",))) <= set(
            f.categories or ()
        ):
            return False
    return True


def _credit_features(
    n: int, rng: np.random.Generator, drifted: bool, concept: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Applicant attributes, rounded as written and with their missing values, and P(default).
    `drifted` shifts the applicants (covariate drift), `concept` the default model; the random draws are
    the same either way, so one seed gives the same applicants under both."""
    cats = _CREDIT_CATEGORIES
    age = np.clip(np.round(18 + rng.gamma(3.0, 6.5, n)), 18, 90)
    # One latent "financial strength" drives income, score, delinquencies and utilisation together.
    strength = rng.standard_normal(n)
    gender = _pick_fixed(rng, cats["gender"], [0.49, 0.48, 0.03], n)

    retired = (age >= 63) & (rng.random(n) < 0.75)
    unemployed = ~retired & (rng.random(n) < _sigmoid(-2.9 - 0.8 * strength))
    employment = np.where(
        retired, "retired",
        np.where(unemployed, "unemployed", _pick_fixed(rng, cats["employment_type"][:3], [0.76, 0.13, 0.11], n)),
    ).astype(object)  # fmt: skip
    working = ~(retired | unemployed)
    months_employed = np.where(working, np.round((age - 18) * 12 * rng.beta(1.5, 3.5, n)), 0.0)

    log_income = (
        10.75 + 0.28 * strength + 0.35 * (1 - ((age - 50) / 32) ** 2)
        + np.select([employment == "self_employed", employment == "contractor", unemployed, retired],
                    [0.05, -0.05, -1.3, -0.35], 0.0)
        + rng.normal(0, np.where(employment == "self_employed", 0.6, 0.35))
        - (0.15 if drifted else 0.0)  # drift: the applicant mix gets poorer
    )  # fmt: skip
    income = np.exp(log_income)

    delinquencies = np.minimum(rng.poisson(np.exp(-1.6 - 0.9 * strength)), 40).astype(float)
    open_accounts = np.minimum(rng.poisson(np.exp(1.2 + 0.2 * strength + 0.02 * (np.minimum(age, 60) - 30))), 80)
    inquiries = np.minimum(rng.poisson(np.exp(0.1 - 0.45 * strength + (0.3 if drifted else 0.0))), 40).astype(float)
    score = np.clip(
        705 + 50 * strength + 1.0 * (age - 40) - 22 * np.minimum(delinquencies, 6) - 6 * np.minimum(inquiries, 8)
        + 4 * np.minimum(open_accounts, 10) - 20 + rng.normal(0, 25, n),
        300, 850,
    )  # fmt: skip
    thin_file = (open_accounts <= 1) | ((age < 23) & (rng.random(n) < 0.3))
    utilization = np.clip(
        1.2 * _sigmoid(-0.9 - 0.9 * strength + (0.6 if drifted else 0.0) + rng.normal(0, 0.7, n)), 0, 2
    )

    home = _pick(rng, cats["home_ownership"], np.column_stack([
        0.06 * (age - 45) + 0.3 * strength,
        0.5 * strength + 0.5 * ((age > 30) & (age < 60)),
        -0.04 * (age - 30) - 0.3 * strength,
        np.full(n, -2.5),
    ]))  # fmt: skip
    purpose_idx = rng.choice(len(_PURPOSE_SHARE), n, p=_PURPOSE_SHARE)
    purpose = np.asarray(cats["loan_purpose"], dtype=object)[purpose_idx]
    channel = _pick(rng, cats["channel"], np.column_stack([
        0.2 + 0.02 * (age - 40),
        0.5 - 0.03 * (age - 40) + (1.0 if drifted else 0.0),  # drift: the business moves online
        np.full(n, -0.6),
        np.full(n, -0.9),
    ]))  # fmt: skip
    savings = np.where(
        rng.random(n) < 0.12 + 0.15 * (strength < -1),
        0.0,
        np.exp(0.9 * log_income - 1.8 + 0.7 * strength + rng.normal(0, 1.0, n)),
    )
    amount = np.exp(0.75 * log_income + 1.3 + _PURPOSE_AMOUNT[purpose_idx] + rng.normal(0, 0.45, n))
    long_term = rng.random(n) < np.where(np.isin(purpose, ["home_improvement", "business"]), 0.5, 0.1)
    term = np.where(
        long_term,
        rng.choice([60, 84, 120, 180, 240], n, p=[0.3, 0.25, 0.2, 0.15, 0.1]),
        rng.choice([12, 24, 36, 48, 60], n, p=[0.1, 0.2, 0.35, 0.15, 0.2]),
    ).astype(float)
    female = gender == BIASED_GROUP
    rate = np.clip(
        6.0 + 0.025 * (760 - score) + 1.0 * np.minimum(delinquencies, 4) + 0.8 * (term > 60) + 2.0 * thin_file
        + 0.6 * (channel == "broker") + BIAS_RATE_MARKUP * female + rng.normal(0, 0.8, n),
        1.5, 36,
    )  # fmt: skip
    monthly_rate = rate / 1200
    payment = amount * monthly_rate / (1 - (1 + monthly_rate) ** -term)
    existing_dti = np.clip(
        0.18 - 0.06 * strength + 0.03 * np.minimum(delinquencies, 5) + rng.normal(0, 0.08, n), 0, None
    )
    dti = np.clip(existing_dti + 12 * payment / np.maximum(income, 1000), 0, 5)
    cosigner = rng.random(n) < 0.06 + 0.12 * (age < 25) + 0.08 * thin_file
    repeat = rng.random(n) < 0.22 + 0.1 * (strength > 0)
    region = _pick_fixed(rng, cats["region"], [0.2, 0.22, 0.2, 0.2, 0.18], n)

    # Default model. Concept drift moves the affordability cliff, leaves the bureau score telling little,
    # makes revolving-credit stress and the online channel much riskier, turns repeat customers from
    # safer to riskier (refinancing to stay afloat) and hits one region with a local downturn; strong
    # enough that a model trained before the drift is measurably worse after it.
    dti_cliff = 0.25 if concept else 0.43
    logit = (
        _CREDIT_INTERCEPT
        - (0.1 if concept else 0.85) * (score - 680) / 60
        + 0.9 * (dti > dti_cliff) + 1.6 * np.clip(dti - dti_cliff, 0, 2)
        + 0.7 * utilization + (0.9 if concept else 0.35) * utilization * np.minimum(delinquencies, 6)
        + 0.18 * np.minimum(delinquencies, 6)
        + 0.08 * np.minimum(inquiries, 10)
        + 0.15 * (rate - 10)
        - (0.0 if concept else 0.18) * (np.log1p(savings) - 8)
        + 0.35 * ((age - 45) / 20) ** 2
        + _PURPOSE_RISK[purpose_idx]
        + 0.9 * unemployed + 0.25 * (employment == "contractor")
        - 0.5 * cosigner + (1.0 if concept else -0.35) * repeat
        + 0.25 * (channel == "broker") + (1.4 if concept else 0.0) * (channel == "online")
        + 0.25 * (term > 60) + 0.25 * (region == "south") + (1.5 if concept else 0.0) * (region == "east")
        - (2.0 if concept else 0.0)  # keeps the default rate in range despite the added risks
        + rng.normal(0, 1.0, n)  # life events no application form records
    )  # fmt: skip

    def missing(p: np.ndarray | float) -> np.ndarray:
        return rng.random(n) < p

    values: dict[str, np.ndarray] = {
        "age": age,
        "annual_income": np.where(missing(0.03), np.nan, np.round(income, -2)),
        "loan_amount": np.round(amount / 50) * 50,
        "loan_term_months": term,
        "interest_rate": np.round(rate, 2),
        # Thin files often have no bureau score at all.
        "credit_score": np.where(missing(np.where(thin_file, 0.45, 0.02)), np.nan, np.round(score)),
        "num_open_accounts": open_accounts.astype(float),
        "num_delinquencies_2y": delinquencies,
        "debt_to_income": np.round(dti, 3),
        "months_employed": np.where(missing(0.01), np.nan, months_employed),
        # No revolving account means no utilisation to report.
        "credit_utilization": np.where((open_accounts == 0) | missing(0.01), np.nan, np.round(utilization, 3)),
        "num_inquiries_6m": inquiries,
        "savings_balance": np.where(missing(0.04), np.nan, np.round(savings, 2)),
        "employment_type": np.where(missing(0.02), _NONE, employment),
        "home_ownership": home,
        "loan_purpose": np.where(missing(0.03), _NONE, purpose),
        "region": region,
        "channel": np.where(missing(0.02), _NONE, channel),
        "has_cosigner": np.where(missing(0.03), _NONE, cosigner.astype(object)),
        "is_repeat_customer": repeat.astype(object),
        "gender": np.where(missing(0.02), _NONE, gender),
    }
    return values, _sigmoid(logit)


# --- generic generator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _GenericWorld:
    """A spec's stable data-generating process; depends on the spec only, so days share it."""

    # numeric feature → (low, high, mean, sd, decimals) of a clipped normal
    numeric: dict[str, tuple[float, float, float, float, int]]
    categorical: dict[str, np.ndarray]  # feature → category probabilities
    boolean: dict[str, float]  # feature → P(true)
    # feature → label weight: a scalar for numeric/boolean, one per category for categorical;
    # index 0 is the baseline world, index 1 the concept-drifted one.
    weights: tuple[dict[str, Any], dict[str, Any]]
    intercept: float


def _numeric_bounds(low: float | None, high: float | None) -> tuple[float, float]:
    if low is not None and high is not None:
        return low, high
    if low is not None:
        return low, low + 100.0
    if high is not None:
        return high - 100.0, high
    return 0.0, 100.0


def _generated_categories(feature: Feature) -> list[str]:
    """The values generated for a categorical feature: its categories, or for a learned one codes
    c000, c001, …, twice as many as it keeps, so a model also sees values it reads as "other"."""
    if feature.learned_categories is None:
        return list(feature.categories or ())
    return [f"c{i:03d}" for i in range(2 * feature.learned_categories)]


def _generic_world(spec: DatasetSpec) -> _GenericWorld:
    rng = np.random.default_rng(zlib.crc32(spec.fingerprint().encode()))
    numeric: dict[str, tuple[float, float, float, float, int]] = {}
    categorical: dict[str, np.ndarray] = {}
    boolean: dict[str, float] = {}
    for f in spec.features:
        if f.type is FeatureType.numeric:
            low, high = _numeric_bounds(f.min, f.max)
            span = high - low
            decimals = int(np.clip(4 - math.ceil(math.log10(span)), 0, 6)) if span > 0 else 0
            # A constant column (min == max) still needs a non-zero scale for the label signal.
            sd = span / 6 if span > 0 else 1.0
            numeric[f.name] = (low, high, low + span * rng.uniform(0.35, 0.65), sd, decimals)
        elif f.type is FeatureType.categorical:
            categorical[f.name] = rng.dirichlet(np.full(len(_generated_categories(f)), 2.0))
        else:
            boolean[f.name] = float(rng.uniform(0.2, 0.8))

    # A few features carry the signal, so a model has something to find but also noise to ignore.
    base: dict[str, Any] = {}
    for name in list(numeric)[:3]:
        base[name] = rng.choice([-1, 1]) * rng.uniform(0.8, 1.5)
    for name in list(categorical)[:2]:
        base[name] = rng.normal(0, 1.0, len(categorical[name]))
    for name in list(boolean)[:2]:
        base[name] = rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
    # Concept drift: the first numeric signal reverses, the others fade.
    drifted = {name: -w if i == 0 and name in numeric else 0.5 * w for i, (name, w) in enumerate(base.items())}
    return _GenericWorld(numeric, categorical, boolean, (base, drifted), intercept=math.log(0.25 / 0.75))


def _generic_features(
    spec: DatasetSpec, n: int, rng: np.random.Generator, drifted: bool, concept: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    world = _generic_world(spec)
    weights = world.weights[1 if concept else 0]
    values: dict[str, np.ndarray] = {}
    logit = np.full(n, world.intercept)
    for f in spec.features:
        if f.name in world.numeric:
            low, high, mean, sd, decimals = world.numeric[f.name]
            # Covariate drift: every numeric mean moves up by one standard deviation.
            centre = mean + (sd if drifted else 0.0)
            x = np.clip(np.round(rng.normal(centre, sd, n), decimals), low, high)
            signal = (x - mean) / sd
            if f.name in weights:
                # A squared term keeps the relation non-linear, as real ones are.
                logit += weights[f.name] * signal + 0.3 * (signal**2 - 1)
            values[f.name] = x
        elif f.name in world.categorical:
            cats = _generated_categories(f)
            idx = rng.choice(len(cats), n, p=world.categorical[f.name])
            if f.name in weights:
                logit += weights[f.name][idx]
            values[f.name] = np.asarray(cats, dtype=object)[idx]
        else:
            flag = rng.random(n) < world.boolean[f.name]
            if f.name in weights:
                logit += weights[f.name] * flag
            values[f.name] = flag.astype(object)
        if f.nullable:
            gone = rng.random(n) < 0.03
            values[f.name] = np.where(gone, np.nan if f.type is FeatureType.numeric else _NONE, values[f.name])
    return values, _sigmoid(logit)


# --- frames and text -------------------------------------------------------------------------------


def generate_frame(
    spec: DatasetSpec,
    day: date,
    rows: int,
    rng: np.random.Generator,
    *,
    drifted: bool = False,
    concept_drift: bool | None = None,
    first_seq: int = 1,
) -> pd.DataFrame:
    """One day of clean records with exactly `spec.raw_columns`, sorted by time. `drifted` shifts the
    inputs; `concept_drift` (default: the same as `drifted`) changes how the label depends on them.

    Types: the id is ``<prefix>-<YYYYMMDD>-<seq:06d>`` (seq from `first_seq`), the timestamp a
    second-resolution datetime64 within `day`, numerics float (NaN = missing), categoricals
    str/None, booleans True/False/None, the label the spec's positive or negative value.
    """
    concept = drifted if concept_drift is None else concept_drift
    if _uses_credit_model(spec):
        values, p_positive = _credit_features(rows, rng, drifted, concept)
    else:
        values, p_positive = _generic_features(spec, rows, rng, drifted, concept)
    timestamps = _timestamps(day, rows, rng)
    positive = rng.random(rows) < p_positive

    frame: dict[str, Any] = {
        spec.id_column: [f"{_id_prefix(spec)}-{day:%Y%m%d}-{seq:06d}" for seq in range(first_seq, first_seq + rows)],
        spec.timestamp_column: timestamps,
    }
    for f in spec.features:
        column = values[f.name]
        if f.type is FeatureType.numeric:
            column = np.clip(
                column.astype(float), -np.inf if f.min is None else f.min, np.inf if f.max is None else f.max
            )
        if not f.nullable:
            # An edited spec may require a column the credit generator leaves empty at times.
            column = _fill_missing(column, rng)
        frame[f.name] = column
    frame[spec.label.column] = np.where(positive, spec.label.positive, spec.label.negative).astype(object)
    return pd.DataFrame(frame, columns=spec.raw_columns)


def _fill_missing(column: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    present = column[pd.notna(column)]
    gaps = pd.isna(column)
    if not gaps.any() or present.size == 0:
        return column
    filled = column.copy()
    filled[gaps] = rng.choice(present, int(gaps.sum()))
    return filled


def _number_text(value: float) -> str:
    """Shortest round-tripping positional text (never 1e-05), whole numbers without a point."""
    if math.isnan(value):
        return ""
    return np.format_float_positional(value, trim="-")


def _value_text(value: Any) -> str:
    """Text of one categorical, boolean or label value; booleans are lower-case true/false."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return TRUE_TEXT if value else FALSE_TEXT
    return str(value)


def frame_to_rows(spec: DatasetSpec, frame: pd.DataFrame) -> list[list[str]]:
    """The text fields of each record, in `spec.raw_columns` order; "" marks a missing value."""
    columns: list[list[str]] = []
    for name in spec.raw_columns:
        series = frame[name]
        if name == spec.timestamp_column:
            columns.append(list(np.datetime_as_string(series.to_numpy().astype("datetime64[s]"))))
        elif name != spec.id_column and name != spec.label.column and spec.feature(name).type is FeatureType.numeric:
            columns.append([_number_text(v) for v in series.to_numpy(dtype=float)])
        else:
            columns.append([_value_text(v) for v in series.to_numpy()])
    return [list(row) for row in zip(*columns, strict=True)]


# --- corruption ------------------------------------------------------------------------------------


class _Corruptor:
    """Turns a clean row into one with exactly one problem, each quarantined under a known reason.

    Each mutation touches one field of an otherwise clean row (or its field count), so no row can
    trip a reason that cleaning checks earlier than the intended one.
    """

    def __init__(self, spec: DatasetSpec, rng: np.random.Generator, file_format: str) -> None:
        self.spec, self.rng = spec, rng
        self.index = {name: i for i, name in enumerate(spec.raw_columns)}
        feats = spec.features
        self.numeric = [f.name for f in feats if f.type is FeatureType.numeric]
        self.boolean = [f.name for f in feats if f.type is FeatureType.boolean]
        self.bounded = [f for f in feats if f.type is FeatureType.numeric and (f.min is not None or f.max is not None)]
        # A learned feature keeps any value (its list is frozen at training), so no value of it is unknown.
        self.categorical = [f for f in feats if f.type is FeatureType.categorical and f.learned_categories is None]
        self.learned = [f.name for f in feats if f.learned_categories is not None]
        # Not the label: a row without one is clean (unlabelled), not quarantined.
        self.required = [spec.id_column, spec.timestamp_column,
                         *(f.name for f in feats if not f.nullable)]  # fmt: skip
        self.invalid_label = _invalid_label(spec)
        mutations: dict[Reason, Callable[[list[str]], list[str]]] = {
            Reason.unparsable_line: self.unparsable_line,
            Reason.wrong_type: self.wrong_type,
            Reason.id_too_long: self.id_too_long,
            Reason.missing_required: self.missing_required,
            Reason.invalid_label: self.set_invalid_label,
            Reason.out_of_range: self.out_of_range,
            Reason.unknown_category: self.unknown_category,
            Reason.invalid_category: self.invalid_category,
            Reason.timestamp_outside_partition: self.timestamp_outside_partition,
        }
        unavailable = {
            # A columnar file has no lines to break.
            Reason.unparsable_line: file_format != "csv",
            Reason.wrong_type: not (self.numeric or self.boolean),
            Reason.out_of_range: not self.bounded,
            Reason.unknown_category: not self.categorical,
            Reason.invalid_category: not self.learned,
        }
        self.mutations = {r: m for r, m in mutations.items() if not unavailable.get(r, False)}

    def _one(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def _set(self, row: list[str], column: str, text: str) -> list[str]:
        out = list(row)
        out[self.index[column]] = text
        return out

    def unparsable_line(self, row: list[str]) -> list[str]:
        # One field too few or too many: the line no longer splits into the header's columns.
        return row[:-1] if self.rng.random() < 0.5 else [*row, row[-1]]

    def wrong_type(self, row: list[str]) -> list[str]:
        column = self._one([*self.numeric, *self.boolean])
        return self._set(row, column, WRONG_TYPE_NUMERIC if column in self.numeric else WRONG_TYPE_BOOLEAN)

    def id_too_long(self, row: list[str]) -> list[str]:
        # One character past the longest id serving takes; still unique, as the ids it extends are.
        record_id = row[self.index[self.spec.id_column]]
        return self._set(row, self.spec.id_column, record_id + "-" + "x" * (MAX_ID_LENGTH - len(record_id)))

    def missing_required(self, row: list[str]) -> list[str]:
        return self._set(row, self._one(self.required), "")

    def set_invalid_label(self, row: list[str]) -> list[str]:
        return self._set(row, self.spec.label.column, self.invalid_label)

    def out_of_range(self, row: list[str]) -> list[str]:
        f = self._one(self.bounded)
        low, high = _numeric_bounds(f.min, f.max)
        step = max(1.0, round(0.25 * (high - low)))
        above = f.max is not None and (f.min is None or self.rng.random() < 0.5)
        return self._set(row, f.name, _number_text(float(high + step if above else low - step)))

    def unknown_category(self, row: list[str]) -> list[str]:
        f = self._one(self.categorical)
        value = UNKNOWN_CATEGORY
        while value in (f.categories or ()):
            value += "_x"
        return self._set(row, f.name, value)

    def invalid_category(self, row: list[str]) -> list[str]:
        # One character past the longest text a learned feature's value may be.
        return self._set(row, self._one(self.learned), "c" * (MAX_CATEGORY_LENGTH + 1))

    def timestamp_outside_partition(self, row: list[str]) -> list[str]:
        ts = datetime.fromisoformat(row[self.index[self.spec.timestamp_column]])
        shift = int(self.rng.choice([-3, -2, -1, 1, 2, 3]))
        return self._set(row, self.spec.timestamp_column, (ts + timedelta(days=shift)).isoformat())

    def earlier_copy(self, row: list[str]) -> list[str]:
        """An older version of the record: same id and values, strictly earlier on the same day."""
        column = self.spec.timestamp_column
        ts = datetime.fromisoformat(row[self.index[column]])
        into_day = int((ts - datetime.combine(ts.date(), datetime.min.time())).total_seconds())
        return self._set(row, column, (ts - timedelta(seconds=int(self.rng.integers(1, into_day + 1)))).isoformat())


def _invalid_label(spec: DatasetSpec) -> str:
    pos, neg = spec.label.positive, spec.label.negative
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (pos, neg))
    # A numeric label gets a number that still parses, so the row is not a wrong_type instead.
    candidate = str(max(pos, neg) + 1) if numeric else "unknown"  # type: ignore[operator]
    while candidate in (_value_text(pos), _value_text(neg)):
        candidate += "_x"
    return candidate


def _corrupt_day(
    corruptor: _Corruptor, rows: list[list[str]], per_kind: int, rng: np.random.Generator
) -> tuple[list[list[str]], Counter[str]]:
    """Corrupt some rows in place, add duplicate copies of clean ones, and shuffle the lines."""
    reasons: Counter[str] = Counter()
    order = iter(rng.permutation(len(rows)))
    for reason, mutate in corruptor.mutations.items():
        for _ in range(per_kind):
            i = next(order)
            rows[i] = mutate(rows[i])
            reasons[reason.value] += 1
    # The rest are clean; copies need an original at least one second into the day.
    ts_col = corruptor.index[corruptor.spec.timestamp_column]
    originals = [rows[i] for i in order if not rows[i][ts_col].endswith("T00:00:00")][: 2 * per_kind]
    copies = [corruptor.earlier_copy(r) for r in originals[:per_kind]] + [list(r) for r in originals[per_kind:]]
    reasons[Reason.duplicate_id.value] += len(copies)
    lines = rows + copies
    return [lines[i] for i in rng.permutation(len(lines))], reasons


# --- writing ---------------------------------------------------------------------------------------


def _write(path: Path, header: list[str], rows: list[list[str]], file_format: str, delimiter: str) -> None:
    if file_format == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        return
    import pyarrow as pa  # only parquet needs it; keeps `import kennel.demo` light
    import pyarrow.parquet as pq

    # Every column is text (missing = null) in every scenario, so all days share one schema and
    # corrupt values survive for cleaning to judge.
    table = pa.table({name: pa.array([r[i] or None for r in rows], pa.string()) for i, name in enumerate(header)})
    pq.write_table(table, path)


# Marks a folder as the demo's own: the generator writes only into a new or empty folder, which it marks,
# or into one it marked before. Ingestion ignores names starting with "." (kennel/ingestion/landing.py),
# so the marker is never taken for landed data.
DEMO_FOLDER_MARKER = ".kennel-demo"
_MARKER_TEXT = (
    "This folder holds demo data written by kennel.demo (python -m kennel.demo, make demo).\n"
    "The generator writes only into folders that carry this file; ingestion ignores it.\n"
)


class NotADemoFolder(ValueError):
    """The folder demo data was to be written into holds other files: most likely a real landing folder."""


def claim_demo_folder(out: Path) -> None:
    """Make sure `out` is the demo's own folder before anything is written into it: a new or empty folder
    becomes the demo's (marked), a marked one already is; any other is refused and left as it was."""
    marker = out / DEMO_FOLDER_MARKER
    if marker.is_file():
        return
    if out.exists() and not out.is_dir():
        raise NotADemoFolder(f"{out} is a file, not a folder: write the demo data into a new or empty folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise NotADemoFolder(
            f"refusing to write demo data into {out}: it holds {shown} and has no {DEMO_FOLDER_MARKER} marker, "
            "so it may be a real landing folder, and demo rows must never land beside real files. Write into a "
            "new or empty folder instead (python -m kennel.demo --out DIR; `make demo` uses the demo's own spec "
            f"when KENNEL_DATASET_SPEC is unset). If {out} holds only demo data from an earlier Kennel, remove "
            f"it, or mark it as the demo's: touch {marker}"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(_MARKER_TEXT, encoding="utf-8")


def generate(
    spec: DatasetSpec,
    out_dir: str | Path,
    *,
    days: int,
    rows_per_day: int,
    scenario: str = "baseline",
    seed: int = 7,
    start: date | None = None,
    drift_start_day: int | None = None,
    file_format: str | None = None,
) -> GenerationReport:
    """Write `days` daily folders of demo data for `spec` under `out_dir` and say what was written.

    Each day's `part-00000` holds `rows_per_day` data lines. The corrupt scenario also writes, on
    day ``days // 2``, a `part-00001` lacking one required column. Existing `part-*` files in the
    written day folders are replaced; other folders are left alone.

    Writes only into the demo's own folder: a new or empty `out_dir` (marked as the demo's with
    `DEMO_FOLDER_MARKER`) or one marked before; any other raises `NotADemoFolder` and is left untouched.
    """
    file_format = file_format or spec.source.format
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if file_format not in FILE_FORMATS:
        raise ValueError(f"unknown file format {file_format!r}; choose one of {', '.join(FILE_FORMATS)}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if rows_per_day < 1:
        raise ValueError(f"rows per day must be at least 1, got {rows_per_day}")
    if scenario == "corrupt" and rows_per_day < MIN_CORRUPT_ROWS:
        raise ValueError(f"the corrupt scenario needs at least {MIN_CORRUPT_ROWS} rows per day, got {rows_per_day}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if drift_start_day is not None and scenario not in SHIFTING_SCENARIOS:
        raise ValueError(f"drift_start_day applies to the {' and '.join(SHIFTING_SCENARIOS)} scenarios only")
    if scenario in SHIFTING_SCENARIOS:
        drift_start_day = days // 2 if drift_start_day is None else drift_start_day
        if not 0 <= drift_start_day < days:
            raise ValueError(f"drift_start_day must be a day index in 0..{days - 1}, got {drift_start_day}")

    start = start or spec.start_date
    out = Path(out_dir)
    claim_demo_folder(out)
    delimiter = str(spec.source.options.get("delimiter", ","))
    report = GenerationReport(spec.name, scenario, file_format, out, seed, drift_start_day)
    missing_column_day = days // 2 if scenario == "corrupt" else None
    per_kind = max(1, round(rows_per_day * CORRUPT_SHARE_PER_KIND))
    # Duplicate copies (older versions and exact copies) are extra lines on top of the records.
    records = rows_per_day - 2 * per_kind if scenario == "corrupt" else rows_per_day

    for i in range(days):
        day = start + timedelta(days=i)
        # Seeding by (seed, day index) only: days before a drift start match baseline exactly.
        rng = np.random.default_rng([seed, i])
        drifted = drift_start_day is not None and i >= drift_start_day
        concept = drifted and SHIFTING_SCENARIOS.get(scenario, False)
        frame = generate_frame(spec, day, records, rng, drifted=drifted, concept_drift=concept)
        rows = frame_to_rows(spec, frame)
        reasons: Counter[str] = Counter()
        if scenario == "corrupt":
            rows, reasons = _corrupt_day(_Corruptor(spec, rng, file_format), rows, per_kind, rng)
        parts = [(spec.raw_columns, rows)]
        if i == missing_column_day:
            parts.append(_missing_column_part(spec, day, rng, rows_per_day, first_seq=records + 1))
            reasons[Reason.missing_column.value] += len(parts[-1][1])

        day_dir = out / day.isoformat()
        day_dir.mkdir(parents=True, exist_ok=True)
        for old in sorted(day_dir.glob("part-*")):
            old.unlink()
        for n, (header, lines) in enumerate(parts):
            path = day_dir / f"part-{n:05d}.{file_format}"
            _write(path, header, lines, file_format, delimiter)
            report.files.append(path)
        report.rows_per_day[day.isoformat()] = sum(len(lines) for _, lines in parts)
        if scenario == "corrupt":
            report.expected_reasons_by_day[day.isoformat()] = {r.value: reasons[r.value] for r in ROW_REASONS}

    if scenario == "corrupt":
        report.expected_reasons = {
            r.value: sum(d[r.value] for d in report.expected_reasons_by_day.values()) for r in ROW_REASONS
        }
    return report


def _missing_column_part(
    spec: DatasetSpec, day: date, rng: np.random.Generator, rows_per_day: int, first_seq: int
) -> tuple[list[str], list[list[str]]]:
    """Clean records in a file without one required column: the dropped column is a feature
    (the first non-nullable one), so the file is still recognisably the data set."""
    dropped = next((f.name for f in spec.features if not f.nullable), spec.features[0].name)
    n = max(1, round(rows_per_day * MISSING_COLUMN_SHARE))
    frame = generate_frame(spec, day, n, rng, first_seq=first_seq)
    keep = [i for i, name in enumerate(spec.raw_columns) if name != dropped]
    header = [spec.raw_columns[i] for i in keep]
    return header, [[row[i] for i in keep] for row in frame_to_rows(spec, frame)]


# --- command line ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kennel.demo", description="Write deterministic daily demo files for a data-set spec."
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="baseline")
    parser.add_argument("--days", type=int, help="number of days (default: the spec's split total)")
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--spec", help="data-set spec YAML (default: $KENNEL_DATASET_SPEC or the demo spec)")
    parser.add_argument("--out", help="landing folder (default: the spec's source location)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, help="first day, YYYY-MM-DD (default: spec start_date)")
    parser.add_argument("--drift-start-day", type=int, help="day index where drift begins (default: half-way)")
    parser.add_argument("--format", choices=FILE_FORMATS, dest="file_format", help="default: the spec's format")
    args = parser.parse_args(argv)

    try:
        spec = load_spec(args.spec)
        out = args.out or spec.source_location()
        if out.startswith("s3://"):
            raise ValueError(f"the spec's source is {out}; write locally with --out and upload the folders")
        report = generate(
            spec, out,
            days=spec.split.total_days if args.days is None else args.days,
            rows_per_day=args.rows_per_day, scenario=args.scenario, seed=args.seed, start=args.start,
            drift_start_day=args.drift_start_day, file_format=args.file_format,
        )  # fmt: skip
    except (SpecError, ValueError) as exc:
        print(f"kennel.demo: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
