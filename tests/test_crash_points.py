"""Fault injection: a process killed with SIGKILL at every crash point the lake's commit code registers
(kennel/lake/faults.py) leaves the previous published state or the new one, never a record that
disagrees with its data, and a re-run gives the same rows.

The points come from the registry, not from a list here: a new point without a scenario fails the
test. `make test` runs every cheap point and one ingestion point; `make test-full`
(KENNEL_FAULTS=all) runs them all and rewrites RELIABILITY.md.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

import kennel.lake.champion  # noqa: F401  (registers its crash points)
from kennel.demo import generate
from kennel.lake import Lake, LakeIntegrityError
from kennel.lake.faults import CRASH_AT_ENV, CRASH_LOG_ENV, REGISTERED
from tests.projects import Project, days, spec_file

ROOT = Path(__file__).resolve().parent.parent
RUN_ALL = os.environ.get("KENNEL_FAULTS") == "all"
SAMPLED_DAY_POINT = "day.data_written"  # the instant of the original "record says passed over new rows" bug
SCENARIOS = ("day.", "training_set.", "champion.")
REPORT = ROOT / "RELIABILITY.md"


@dataclass
class Outcome:
    point: str
    after_crash: str  # which published state the crash left: previous or new
    rerun: str
    disagreements: int


def _points() -> list[str]:
    return sorted(REGISTERED)


def _selected() -> list[str]:
    return [p for p in _points() if RUN_ALL or not p.startswith("day.") or p == SAMPLED_DAY_POINT]


def _run(script: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python process. (From a file: PySpark takes a `python -c` main module for
    its doctests and exits.)"""
    path = tmp / f"script-{len(list(tmp.glob('script-*.py')))}.py"
    path.write_text(script)
    return subprocess.run(
        [sys.executable, str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _crash(script: str, point: str, tmp: Path) -> None:
    """Run `script` in a fresh process that kills itself at `point`; assert it died there."""
    log = tmp / "crash.log"
    run = _run(script, tmp, **{CRASH_AT_ENV: point, CRASH_LOG_ENV: str(log)})
    assert run.returncode == -9, f"expected a SIGKILL at {point}, got {run.returncode}:\n{run.stderr[-3000:]}"
    assert point in log.read_text().split(), f"{point} was not passed before the kill"


def _complete(script: str, tmp: Path) -> None:
    run = _run(script, tmp)
    assert run.returncode == 0, run.stderr[-3000:]


def test_every_registered_point_has_a_scenario():
    assert _points(), "the commit code registers its crash points at import"
    assert [p for p in _points() if not p.startswith(SCENARIOS)] == []


# --- a day's clean + quarantine tables and quality record (real Spark ingestion in a Dagster instance) ---

DAY_RUN = """
import sys
from pathlib import Path
import dagster as dg
from tests.projects import Project
with dg.instance_for_test() as instance:
    result = Project(Path({tmp!r}), Path({spec!r}), instance).run("ingest_daily", [{day!r}])
sys.exit(0 if result.success else 3)
"""


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, spark):
    """A lake with two ingested days, and the files that later replace the second day's."""
    tmp = tmp_path_factory.mktemp("template")
    landing = tmp / "landing"
    spec_path = spec_file(tmp, landing)
    with dg.instance_for_test() as instance:
        project = Project(tmp, spec_path, instance)
        two = days(project.spec, 2)
        generate(project.spec, landing, days=2, rows_per_day=300, scenario="corrupt")
        assert project.run("ingest_daily", two).success
        changed = tmp / "changed"
        generate(project.spec, changed, days=2, rows_per_day=250, scenario="corrupt", seed=11)
    return tmp, two, changed


def _day_project(tmp: Path, template: Path, changed: Path, day: str) -> Path:
    """A copy of the template project whose second day's landed files have changed."""
    shutil.copytree(template / "landing", tmp / "landing")
    shutil.copytree(template / "lake", tmp / "lake")
    shutil.rmtree(tmp / "landing" / day)
    shutil.copytree(changed / day, tmp / "landing" / day)
    return spec_file(tmp, tmp / "landing")


def _published_rows(lake: Lake, name: str, day: str) -> pd.DataFrame:
    """The day's published clean rows, read only through its verified record."""
    data = lake.dataset(name)
    record = data.quality(day)
    frame = pd.read_parquet(data.published(day))
    assert len(frame) == record.rows_clean, "the record's row count disagrees with its data"
    assert record.rows_in == record.rows_clean + record.rows_quarantined
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _day_scenario(point: str, tmp: Path, ingested) -> Outcome:
    template, (first, second), changed = ingested
    name = "credit_demo"
    previous = {day: _published_rows(Lake(template / "lake"), name, day) for day in (first, second)}
    # What an uninterrupted run makes of the changed files: the rows the new version must hold.
    reference_tmp = tmp / "reference"
    reference_tmp.mkdir()
    reference_spec = _day_project(reference_tmp, template, changed, second)
    with dg.instance_for_test() as instance:
        assert Project(reference_tmp, reference_spec, instance).run("ingest_daily", [second]).success
    new = _published_rows(Lake(reference_tmp / "lake"), name, second)

    spec_path = _day_project(tmp, template, changed, second)
    lake = Lake(tmp / "lake")
    before = lake.dataset(name).quality(second)
    _crash(DAY_RUN.format(tmp=str(tmp), spec=str(spec_path), day=second), point, tmp)

    # Whatever the crash left, each record vouches for exactly the rows a reader gets: the day's
    # previous rows under its previous record, or the new rows under the new one, never a mix.
    state = "previous" if lake.dataset(name).quality(second).run_id == before.run_id else "new"
    expected = {first: previous[first], second: previous[second] if state == "previous" else new}
    disagreements = 0
    for day in (first, second):
        try:
            pd.testing.assert_frame_equal(_published_rows(lake, name, day), expected[day])
        except (AssertionError, LakeIntegrityError):
            disagreements += 1

    with dg.instance_for_test() as instance:
        assert Project(tmp, spec_path, instance).run("ingest_daily", [second]).success
    pd.testing.assert_frame_equal(_published_rows(lake, name, second), new)
    # Only the published version of each day remains after a successful publish.
    assert len(list(lake.dataset(name).clean_dir(second).iterdir())) == 1
    return Outcome(point, state, "same rows as an uninterrupted run", disagreements)


# --- the training set ---------------------------------------------------------------------------------------

TRAINING_RUN = """
from pathlib import Path
import pandas as pd
from kennel.lake import Lake
data = Lake({lake!r}).dataset("credit_demo")
folder = data.training_version_dir({version!r})
folder.mkdir(parents=True, exist_ok=True)
splits = {{"train": ["2026-01-01"], "validation": ["2026-01-02"], "test": ["2026-01-03"]}}
for split, window in splits.items():
    pd.DataFrame({{"day": window * {rows}, "label": [0, 1] * ({rows} // 2)}}).to_parquet(folder / f"{{split}}.parquet")
data.publish_training_set({version!r}, splits)
"""


def _training_scenario(point: str, tmp: Path) -> Outcome:
    lake = Lake(tmp / "lake")
    _complete(TRAINING_RUN.format(lake=str(lake.root), version="first", rows=10), tmp)
    second = TRAINING_RUN.format(lake=str(lake.root), version="second", rows=20)
    _crash(second, point, tmp)

    data = lake.dataset("credit_demo")
    state = data.training_set().version
    disagreements = 0
    for split in ("train", "validation", "test"):
        try:
            rows = len(pd.read_parquet(data.training_file(split)))
            disagreements += rows != (10 if state == "first" else 20)
        except LakeIntegrityError:
            disagreements += 1
    _complete(second, tmp)
    assert data.training_set().version == "second"
    assert [p.name for p in data.training_dir().iterdir() if p.is_dir()] == ["v-second"]
    return Outcome(point, "previous" if state == "first" else "new", "the new set published", disagreements)


# --- the champion pointer and its history -------------------------------------------------------------------

CHAMPION_RUN = """
from pathlib import Path
from kennel.lake import Lake, write_model_record
from kennel.lake.champion import ChampionRegistry
from kennel.lake.records import GateDecision, ModelIdentity

lake = Lake({lake!r})
registry = ChampionRegistry(lake.dataset("credit_demo"))

def promote(run_id, against):
    folder = lake.root / "models" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    identity = lambda r: ModelIdentity(run_id=r, model_tag=f"m:{{r}}", model_dir=str(lake.root / "models" / r),
                                       spec_fingerprint="f", threshold=0.5)
    champion = identity(against) if against else None
    write_model_record(folder, GateDecision(decided_at="2026-01-01T00:00:00+00:00", passed=True, summary="ok",
                                            challenger=identity(run_id), champion=champion, test_rows=1,
                                            config={{}}, checks=[]))
    registry.promote(folder)

current = registry.current()
promote({run_id!r}, current.run_id if current else None)
"""


def _champion_scenario(point: str, tmp: Path) -> Outcome:
    lake = Lake(tmp / "lake")
    _complete(CHAMPION_RUN.format(lake=str(lake.root), run_id="one"), tmp)
    _crash(CHAMPION_RUN.format(lake=str(lake.root), run_id="two"), point, tmp)

    from kennel.lake.champion import ChampionRegistry

    registry = ChampionRegistry(lake.dataset("credit_demo"))
    pointer, history = registry.pointer(), registry.history()
    state = "previous" if pointer.current.run_id == "one" else "new"
    disagreements = int(history[-1].version != pointer.version or history[-1].run_id != pointer.current.run_id)
    _complete(CHAMPION_RUN.format(lake=str(lake.root), run_id="two"), tmp)
    history = registry.history()
    assert registry.current().run_id == "two" and [e.version for e in history] == list(range(1, len(history) + 1))
    assert history[-1].run_id == "two" and history[-1].version == registry.pointer().version
    return Outcome(point, state, "promoted, history consecutive", disagreements)


# --- all points ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes():
    found: list[Outcome] = []
    yield found
    if RUN_ALL and len(found) == len(_points()):
        _write_report(found)


@pytest.mark.slow
@pytest.mark.parametrize("point", _selected())
def test_a_crash_at_each_point_leaves_a_consistent_lake(point, tmp_path, request, outcomes):
    if point.startswith("day."):
        outcome = _day_scenario(point, tmp_path, request.getfixturevalue("ingested"))
    elif point.startswith("training_set."):
        outcome = _training_scenario(point, tmp_path)
    else:
        outcome = _champion_scenario(point, tmp_path)
    outcomes.append(outcome)
    assert outcome.disagreements == 0, outcome


def _write_report(found: list[Outcome]) -> None:
    lines = [
        "# Reliability: fault injection",
        "",
        "Regenerated by `make test-full` (tests/test_crash_points.py with KENNEL_FAULTS=all): a process is",
        "killed with SIGKILL at every crash point the lake's commit code registers (kennel/lake/faults.py);",
        "then every record is checked against the data it publishes, and the step is run again.",
        "",
        f"Faults injected: {len(found)}. Disagreements between a record and its data: "
        f"{sum(o.disagreements for o in found)} (goal: 0).",
        "",
        "| crash point | on disk at the crash | state left | re-run | disagreements |",
        "|---|---|---|---|---:|",
    ]
    lines += [
        f"| `{o.point}` | {REGISTERED[o.point]} | {o.after_crash} | {o.rerun} | {o.disagreements} |"
        for o in sorted(found, key=lambda o: o.point)
    ]
    REPORT.write_text("\n".join(lines) + "\n")
