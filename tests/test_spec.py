"""The data-set spec: the demo spec loads, bad specs fail with messages that name the problem."""

from pathlib import Path

import pytest
import yaml

from kennel.spec import DEFAULT_SPEC_PATH, SpecError, load_spec


def _write(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_demo_spec_loads_with_model_features_excluding_sensitive_columns():
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert spec.name == "credit_demo"
    assert 15 <= len(spec.features) <= 25
    assert "gender" in spec.feature_names and "gender" not in [f.name for f in spec.model_features]
    assert spec.raw_columns[:2] == ["application_id", "applied_at"]
    assert len(spec.fingerprint()) == 16


def test_relative_source_is_resolved_against_the_spec_file(tmp_path, monkeypatch):
    monkeypatch.delenv("KENNEL_LANDING_ROOT", raising=False)
    spec = load_spec(_write(tmp_path, source={"uri": "landing/x", "format": "csv"}))
    assert spec.source_location() == str(tmp_path / "landing" / "x")


def test_environment_reference_without_default_must_be_set(tmp_path, monkeypatch):
    monkeypatch.delenv("KENNEL_NOT_SET", raising=False)
    path = _write(tmp_path, source={"uri": "${KENNEL_NOT_SET}/x"})
    with pytest.raises(SpecError, match="KENNEL_NOT_SET"):
        load_spec(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"label": None}, "label"),
        ({"id_column": "age"}, "cannot also be a feature"),
        ({"sensitive_columns": ["race"]}, "sensitive column 'race'"),
        ({"features": [{"name": "x", "type": "numeric", "min": 5, "max": 1}]}, "min 5.0 is above max 1.0"),
        ({"features": [{"name": "x", "type": "categorical"}]}, "needs its list of categories"),
        ({"features": [{"name": "x", "type": "text"}]}, "features.0.type"),
        ({"split": {"train_days": 0, "validation_days": 1, "test_days": 1}}, "split.train_days"),
        ({"label": {"column": "y", "positive": 1, "negative": 1}}, "must differ"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_specs_name_the_field(tmp_path, changes, message):
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, **changes))
    assert message in str(err.value)
    assert str(tmp_path / "spec.yaml") in str(err.value)


def test_missing_and_malformed_files_are_clear(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
