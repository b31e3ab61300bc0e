"""Explanations in-process: `Model.explain_matrix` (exact TreeSHAP from the encoder's float32 matrix, as
/explain computes it) against the pandas path, the booster's margin and the `shap` package, and the
per-feature aggregation /explain answers with (`top_contributions`). Over HTTP: tests/test_serving.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_serving_unit import DEMO_SPEC, synthetic_labels, synthetic_records, train_model_folder

from kennel.model import Model, ModelCard, fit, record_columns, to_model_frame
from kennel.serving.api import top_contributions
from kennel.spec import DatasetSpec, FeatureType, load_spec
from tests.projects import small_model_params

N_RECORDS = 300


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetSpec, Model, list[dict[str, Any]]]:
    """The demo spec's model (numeric, boolean and native categorical features; some values missing)."""
    spec = load_spec(DEMO_SPEC)
    rng = np.random.default_rng(21)
    records = synthetic_records(spec, N_RECORDS, rng)
    folder = tmp_path_factory.mktemp("explain") / "m"
    train_model_folder(folder, spec, records, rng, rounds=30)
    return spec, Model.load(folder), records


def _serving_matrix(model: Model, records: list[dict[str, Any]]) -> np.ndarray:
    """The matrix /explain builds: validated values' columns through the encoder."""
    return model.encoder.encode(record_columns(records, model.card.feature_names), len(records))


def _library_margin(model: Model, records: list[dict[str, Any]]) -> np.ndarray:
    """The booster's own margin on the training frame (pandas Categoricals), bypassing the encoder."""
    import xgboost

    frame = xgboost.DMatrix(to_model_frame(records, model.card), enable_categorical=True)
    return np.asarray(model.booster.predict(frame, output_margin=True), dtype=np.float64)


def test_matrix_path_equals_the_frame_path_categoricals_included(demo: Any) -> None:
    spec, model, records = demo
    categorical = [f.name for f in model.card.features if f.type is FeatureType.categorical]
    assert categorical and "c" in (model.booster.feature_types or [])
    from_matrix = model.explain_matrix(_serving_matrix(model, records))
    from_frame = model.explain(pd.DataFrame.from_records(records))
    assert from_matrix.shape == (N_RECORDS, len(model.card.features) + 1)
    np.testing.assert_allclose(from_matrix, from_frame.to_numpy(), rtol=0, atol=1e-6)
    # The comparison covers categorical splits: the trees split on categorical features.
    assert (from_frame[categorical].abs().to_numpy() > 1e-3).any()


def test_contributions_and_bias_sum_to_the_margin(demo: Any) -> None:
    spec, model, records = demo
    contributions = model.explain_matrix(_serving_matrix(model, records))
    margin = _library_margin(model, records)
    assert np.ptp(margin) > 1.0  # not a constant model
    # float32 contributions of ~21 columns summed: agreement to float32 precision of margins of a few units.
    np.testing.assert_allclose(contributions.astype(np.float64).sum(axis=1), margin, rtol=0, atol=1e-5)
    assert np.ptp(contributions[:, -1]) == 0  # the bias is the model's expected value, the same for every row


def test_top_contributions_name_each_spec_feature_once(demo: Any) -> None:
    spec, model, records = demo
    contributions = model.explain_matrix(_serving_matrix(model, records))
    margin = _library_margin(model, records)
    features = [f.name for f in spec.model_features]
    for row, explained in zip(contributions, top_contributions(contributions, model.card, len(features))):
        named = [name for name, _ in explained.contributions]
        assert sorted(named) == sorted(features)  # one entry per spec feature, categoricals included
        assert explained.rest == 0.0
        assert dict(explained.contributions) == pytest.approx(dict(zip(model.card.feature_names, row[:-1].tolist())))

    k = 3
    for i, explained in enumerate(top_contributions(contributions, model.card, k)):
        values = [value for _, value in explained.contributions]
        assert len(values) == k
        assert [abs(v) for v in values] == sorted((abs(v) for v in values), reverse=True)
        others = sorted(abs(v) for v in contributions[i, :-1].tolist())[: len(features) - k]
        assert max(others) <= min(abs(v) for v in values)
        assert explained.bias == float(contributions[i, -1])
        assert sum(values) + explained.rest + explained.bias == pytest.approx(explained.margin, abs=1e-9)
        assert explained.margin == pytest.approx(margin[i], abs=1e-5)


def test_top_contributions_refuse_another_width_or_k() -> None:
    card = ModelCard.for_spec(load_spec(DEMO_SPEC))
    width = len(card.features) + 1
    with pytest.raises(ValueError, match="expected rows x"):
        top_contributions(np.zeros((2, width + 1), dtype=np.float32), card, 3)
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_contributions(np.zeros((2, width), dtype=np.float32), card, 0)
    # Equal magnitudes keep the card's order.
    tied = np.zeros((1, width), dtype=np.float32)
    (explained,) = top_contributions(tied, card, 2)
    assert [name for name, _ in explained.contributions] == card.feature_names[:2]


def _numeric_spec() -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "tiny_numeric",
            "source": {"uri": "/nonexistent/tiny_numeric"},
            "start_date": "2026-01-01",
            "timestamp_column": "at",
            "id_column": "id",
            "label": {"column": "y", "positive": 1, "negative": 0},
            "split": {"train_days": 1, "validation_days": 1, "test_days": 1},
            "features": [
                {"name": f"x{i}", "type": "numeric", "min": 0, "max": 10, "nullable": i % 2 == 0} for i in range(6)
            ],
        }
    )


def test_agrees_with_the_shap_package_on_a_numeric_model() -> None:
    """Against shap's own TreeSHAP (its C extension), on a small numeric-only model trained like Kennel
    trains (kennel.model.fit): shap 0.51 refuses XGBoost's native categorical splits in its own
    algorithm, and for an XGBoost model its TreeExplainer.shap_values just calls XGBoost's
    pred_contribs, which would compare the library with itself. So the trees shap parsed from the
    booster go back in as shap's dict model, which it explains itself. The bias is compared with the
    trees' cover-weighted expectations on shap's parse: shap's `expected_value` sums the root nodes'
    values, which its XGBoost loader leaves at 0."""
    import shap

    spec = _numeric_spec()
    rng = np.random.default_rng(4)
    frame = pd.DataFrame.from_records(synthetic_records(spec, 400, rng, missing=0.2))
    card = ModelCard.for_spec(spec, training=frame)
    frame["label"] = synthetic_labels(spec, to_model_frame(frame, card), rng)
    params = small_model_params(0)
    model = fit(card, frame[:300], frame[300:], params, rounds=20, early_stopping_rounds=20).model
    matrix = model.encoder.encode_frame(frame)
    ours = model.explain_matrix(matrix)

    parsed = shap.TreeExplainer(model.booster).model
    keys = ("children_left", "children_right", "children_default", "features", "thresholds", "values")
    trees = [
        {**{key: getattr(t, key) for key in keys}, "node_sample_weight": t.node_sample_weight} for t in parsed.trees
    ]
    explainer = shap.TreeExplainer(
        {
            "trees": trees,
            "base_offset": parsed.base_offset,
            "tree_output": "log_odds",
            "input_dtype": np.float32,
            "internal_dtype": np.float64,
        }
    )
    assert explainer.model.model_type == "internal"  # shap's own algorithm, not XGBoost's
    theirs = explainer.shap_values(matrix, check_additivity=False)
    assert np.abs(theirs).max() > 0.1
    np.testing.assert_allclose(ours[:, :-1], theirs, rtol=0, atol=1e-6)

    leaves = [t.children_left < 0 for t in parsed.trees]
    expected = float(np.asarray(parsed.base_offset).reshape(-1)[0]) + sum(
        float((t.values[leaf, 0] * t.node_sample_weight[leaf]).sum() / t.node_sample_weight[0])
        for t, leaf in zip(parsed.trees, leaves)
    )
    np.testing.assert_allclose(ours[:, -1], expected, rtol=0, atol=1e-6)
