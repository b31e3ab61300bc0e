"""Property: whatever random corruption a landed file has, cleaning never loses or duplicates a row.

Each generated line ends with a unique marker field (`m0001x`), which survives into the original
record of a quarantined row whatever the corruption (a line with the wrong number of fields is kept
whole; any other row keeps all of its fields), so each line is found in quarantine at most once and
every line not found there is one clean row. The examples are derandomized so CI is repeatable; set
KENNEL_HYPOTHESIS_EXAMPLES to explore more locally.
"""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kennel.ingestion.cleaning import clean_partition
from kennel.spec import load_spec

DAY = "2026-01-01"
MARKER = re.compile(r"m(\d{4})x")
COLUMNS = ["id", "ts", "amount", "color", "size", "member", "y"]
# Garbage never holds a line break (it would make two lines of one) nor the marker's letters.
GARBAGE = st.text(alphabet=" ,;\"'\t\\{}[]:abc0123456789.-+eE_é€", max_size=12)

EXAMPLES = int(os.environ.get("KENNEL_HYPOTHESIS_EXAMPLES", "10"))

value = {
    "id": st.sampled_from(["r1", "r2", "r3", "r4", "r5", "r6", " r1", ""]),
    "ts": st.sampled_from(
        [
            "2026-01-01T08:00:00",
            "2026-01-01T09:30:00",
            "2026-01-01 23:59:59",
            "2026-01-02T00:00:00",
            "2025-12-31T23:59:59",
            "soon",
            "",
        ]
    ),
    "amount": st.one_of(st.floats(-50, 1200).map(str), st.sampled_from(["", "abc", "1e3", "Infinity", "NaN"])),
    "color": st.sampled_from(["red", "green", "other", "teal", "", " red "]),
    "size": st.sampled_from(["s", "m", "l", "xl", ""]),
    "member": st.sampled_from(["true", "no", "1", "maybe", ""]),
    "y": st.sampled_from(["yes", "no", "YES", "2", ""]),
}
row = st.fixed_dictionaries(value)
mutation = st.one_of(
    st.just(("none", 0, "")),
    st.tuples(
        st.sampled_from(["drop_field", "add_field", "garbage", "quote", "blank_line_before"]),
        st.integers(0, len(COLUMNS) - 1),
        GARBAGE,
    ),
)


def _line(fields: dict[str, str], how: tuple[str, int, str], marker: str, fmt: str) -> str:
    kind, at, garbage = how
    if fmt == "jsonl":
        record: dict = {**fields, "marker": marker}
        if kind == "drop_field":
            record.pop(COLUMNS[at])
        elif kind == "garbage":
            record[COLUMNS[at]] = garbage
        text = json.dumps(record)
        if kind == "quote":
            return text[: len(text) // 2] + garbage + " " + marker  # a broken message that still names its marker
        if kind == "add_field":
            return text[:-1] + f', "{COLUMNS[at]}_extra": {json.dumps(garbage)}}}'
        return text
    values = [fields[c] for c in COLUMNS]
    if kind == "drop_field":
        values.pop(at)
    elif kind == "add_field":
        values.insert(at, garbage)
    elif kind == "garbage":
        values[at] = garbage
    elif kind == "quote":
        values[at] = '"' + values[at]
    return ",".join([*values, marker])


@pytest.fixture(scope="module")
def spec():
    return load_spec(Path(__file__).parent / "data" / "corpus" / "spec.yaml")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(rows=st.lists(st.tuples(row, mutation), min_size=1, max_size=25))
def test_random_corruption_never_loses_or_duplicates_a_row(spark, spec, tmp_path_factory, fmt, rows):
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"format": fmt})})
    tmp = tmp_path_factory.mktemp("prop")
    lines, ids = [], {}
    for n, (fields, how) in enumerate(rows):
        marker = f"m{n:04d}x"
        if how[0] == "blank_line_before":
            lines.append("   ")
        lines.append(_line(fields, how, marker, fmt))
        ids[marker] = fields["id"].strip()
    header = ",".join([*COLUMNS, "marker"]) + "\n" if fmt == "csv" else ""
    day_dir = tmp / "landing" / DAY
    day_dir.mkdir(parents=True)
    (day_dir / f"part-00000.{fmt}").write_text(header + "\n".join(lines) + "\n", encoding="utf-8")

    lake = tmp / "lake"
    result = clean_partition(
        spark, spec, sorted(day_dir.iterdir()), DAY, lake / "clean", lake / "quarantine", lake / "_staging"
    )
    clean, quarantine = pd.read_parquet(lake / "clean"), pd.read_parquet(lake / "quarantine")

    markers = quarantine["raw"].str.findall(MARKER.pattern)
    assert (markers.str.len() == 1).all(), "every quarantined row keeps its line's marker"
    found = ["m" + m[0] + "x" for m in markers]
    assert len(found) == len(set(found)), "a line was quarantined twice"
    assert result.rows_in == len(rows) and result.reconciled
    assert len(clean) + len(quarantine) == len(rows), "a line was lost or duplicated"
    assert clean["id"].is_unique
    not_quarantined = sorted(ids[m] for m in ids if m not in set(found))
    assert sorted(clean["id"]) == not_quarantined
