"""Hostile data-set specs: every spec that would fail or corrupt data later is refused at load, with a
message naming the file and the field.

The corpus is tests/data/hostile_specs/: each case is baseline.yaml with one change, and its header
lists, one `# refused:` line each, the fragments the error must contain. Cases named bomb_* attack the
YAML loader itself; they run in a child process with bounded memory and time, so a loader that
expands them fails the test instead of the machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, create_model

from kennel.ingestion.cleaning import QUARANTINE_COLUMNS
from kennel.monitoring.profile import SCORE
from kennel.serving.prediction_log import FEEDBACK_COLUMNS, PREDICTION_COLUMNS
from kennel.spec import (
    DEFAULT_SPEC_PATH,
    MAX_SPEC_BYTES,
    PROJECT_ROOT,
    RESERVED_COLUMNS,
    RESERVED_PREFIX,
    SpecError,
    load_spec,
)

HOSTILE = Path(__file__).parent / "data" / "hostile_specs"
BASELINE = HOSTILE / "baseline.yaml"
CASES = sorted(p for p in HOSTILE.glob("*.yaml") if p != BASELINE)
MEMORY_LIMIT = 1024**3
TIME_LIMIT_S = 60

# Loads the spec named by argv[1] under an address-space limit, then makes its fingerprint and the
# stand-alone copy stored with a model (where an alias bomb's copies would be made, and an alias cycle
# would fail); exit 3 with the SpecError's message when it is refused.
BOUNDED_LOAD = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
from kennel.spec import SpecError, load_spec
try:
    spec = load_spec(sys.argv[1])
    spec.fingerprint(), spec.resolved_yaml()
except SpecError as exc:
    print(exc)
    sys.exit(3)
print("loaded")
"""


def _expected_fragments(case: Path) -> list[str]:
    fragments = re.findall(r"^# refused: (.+)$", case.read_text(), re.MULTILINE)
    assert fragments, f"{case.name} has no '# refused:' line"
    return fragments


def _bounded_load(path: Path, env: dict[str, str] | None = None) -> str:
    """load_spec(path) in a child process with MEMORY_LIMIT and TIME_LIMIT_S; the SpecError message."""
    child_env = {"PATH": "/usr/bin:/bin", **(env or {})}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", BOUNDED_LOAD, str(path)],
            cwd=PROJECT_ROOT,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} ran past {TIME_LIMIT_S} s")
    outcome = f"exit {proc.returncode}: {proc.stdout}{proc.stderr[-2000:]}"
    assert proc.returncode == 3, f"{path.name} was not refused ({outcome})"
    assert "MemoryError" not in proc.stderr
    return proc.stdout


def _write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _baseline_with(**changes: object) -> str:
    raw = yaml.safe_load(BASELINE.read_text())
    raw.update(changes)
    return yaml.safe_dump(raw, sort_keys=False)


# --- the corpus ------------------------------------------------------------------------------------


def test_baseline_loads():
    assert load_spec(BASELINE).name == "hostile"


@pytest.mark.parametrize("case", [c for c in CASES if not c.name.startswith("bomb_")], ids=lambda c: c.stem)
def test_hostile_spec_is_refused_naming_the_field(case):
    with pytest.raises(SpecError) as err:
        load_spec(case)
    message = str(err.value)
    assert str(case) in message
    for fragment in _expected_fragments(case):
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("bomb_")], ids=lambda c: c.stem)
def test_yaml_bomb_is_refused_in_bounded_memory_and_time(case):
    message = _bounded_load(case)
    assert str(case) in message
    for fragment in _expected_fragments(case):
        assert fragment in message, f"{fragment!r} not in:\n{message}"


# --- what the loader reads -------------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    big = _write(tmp_path, BASELINE.read_text() + "#" * MAX_SPEC_BYTES)
    with pytest.raises(SpecError, match=f"{re.escape(str(big))} is larger than 1,048,576 bytes"):
        load_spec(big)


def test_a_device_that_never_ends_is_refused():
    assert "/dev/zero is larger than 1,048,576 bytes" in _bounded_load(Path("/dev/zero"))


def test_environment_references_cannot_blow_the_spec_up(tmp_path):
    # 200 references to a 64 KiB variable: 12.5 MiB of text from a 2 KiB file.
    spec = _write(tmp_path, BASELINE.read_text() + "description: " + "${KENNEL_HOSTILE_BIG}" * 200 + "\n")
    message = _bounded_load(spec, env={"KENNEL_HOSTILE_BIG": "x" * 65536})
    assert str(spec) in message and "${KENNEL_HOSTILE_BIG}" in message and "longer than 1,048,576" in message


def test_an_environment_variable_cannot_smuggle_in_an_alias_bomb(tmp_path):
    bomb = yaml.safe_load((HOSTILE / "bomb_alias_options.yaml").read_text())  # shares the anchors' objects
    options = yaml.safe_dump(bomb["source"]["options"], default_flow_style=True, width=10**6).strip()
    assert "&" in options and "*" in options  # still written as anchors and aliases
    spec = _write(
        tmp_path, BASELINE.read_text().replace("format: csv}", "format: csv, options: ${KENNEL_HOSTILE_OPTIONS}}")
    )
    message = _bounded_load(spec, env={"KENNEL_HOSTILE_OPTIONS": options})
    assert "source.options" in message and "alias bomb" in message


def test_aliases_within_the_bounds_still_load(tmp_path):
    spec = load_spec(
        _write(
            tmp_path,
            BASELINE.read_text().replace(
                "categories: [red, green]}",
                "categories: &colors [red, green]}\n  - {name: trim, type: categorical, categories: *colors}",
            ),
        )
    )
    assert spec.feature("trim").categories == ("red", "green")


# --- where the source may be -----------------------------------------------------------------------


def test_a_relative_source_may_reach_into_the_project_from_a_spec_inside_it(monkeypatch):
    monkeypatch.delenv("KENNEL_LANDING_ROOT", raising=False)  # the demo's default: ../.kennel/landing
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert spec.source_location() == str(PROJECT_ROOT / ".kennel" / "landing" / "credit_demo")


@pytest.mark.parametrize("uri", ["/srv/landing/x", "s3://bucket/landing", "landing/../other"])
def test_absolute_s3_and_inside_sources_load_from_anywhere(tmp_path, uri):
    spec = load_spec(_write(tmp_path, _baseline_with(source={"uri": uri, "format": "csv"})))
    assert spec.source.uri == uri


def test_a_relative_source_may_not_climb_out_of_a_spec_folder_outside_the_project(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = _write(folder, _baseline_with(source={"uri": "../landing", "format": "csv"}))
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert f"source.uri '../landing' leads to {tmp_path / 'landing'}, outside {folder}" in str(err.value)


# --- the reserved names stay in step with the code that owns them ----------------------------------


def _is_reserved(name: str) -> bool:
    return name.startswith(RESERVED_PREFIX) or name.lower() in RESERVED_COLUMNS


def test_every_column_the_pipeline_writes_is_reserved():
    owned = [*QUARANTINE_COLUMNS, *PREDICTION_COLUMNS, *FEEDBACK_COLUMNS, SCORE, "date"]
    for sql in (PROJECT_ROOT / "dbt" / "models").rglob("*.sql"):
        owned += re.findall(r"\)\s+as\s+(\w+)", sql.read_text())  # the columns a model names itself
    assert "event_hour" in owned and "record_id" in owned
    assert [name for name in owned if not _is_reserved(name)] == []


def test_every_name_pydantic_refuses_as_a_field_is_reserved():
    config = ConfigDict(extra="forbid", strict=True)
    refused = []
    for name in (n for n in dir(BaseModel) if not n.startswith("_")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # names it accepts, shadowing a method, it warns about
                create_model("Record", __config__=config, **{name: (float | None, None)})  # type: ignore[call-overload]
        except Exception:  # whatever pydantic raises, the name cannot be a request field
            refused.append(name)
    assert refused and [name for name in refused if not _is_reserved(name)] == []


# --- the specs that exist today --------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "datasets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_spec_in_datasets_loads(path):
    spec = load_spec(path)
    assert spec.spec_path == str(path)
