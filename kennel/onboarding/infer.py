"""`kennel init`: draft a data-set spec from a sample of landed files, with the evidence for each choice
written beside it as YAML comments, for a person to review.

The sample is the first rows of the first, middle and last landed days (kennel.onboarding.landed).
Each column is typed the way cleaning will read it (kennel.ingestion.cleaning): a boolean when every
value is one of cleaning's true/false words, a timestamp or a number when nearly every value is one
(the rest are named in a comment: cleaning would quarantine them), else categorical. The id,
timestamp and label columns are chosen only when the evidence leaves one candidate; otherwise the
user is asked (on a terminal) or told which flag to pass. The same files always give the same spec.
"""

from __future__ import annotations

import csv
import json
import math
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from kennel.ingestion.cleaning import FALSE_WORDS, NUMBER_GRAMMAR, TRUE_WORDS
from kennel.ingestion.landing import LandedFile
from kennel.onboarding.landed import LandedSource, SourceError, local_copy, open_source, read_head, spread_days
from kennel.spec import (
    MAX_CATEGORY_LENGTH,
    MAX_ID_LENGTH,
    MAX_LEARNED_CATEGORIES,
    OTHER_CATEGORY,
    WHITESPACE,
    Quality,
    SpecError,
    column_name_problem,
    load_spec,
)

SAMPLED_DAYS = 3
SAMPLE_ROWS_PER_DAY = 5000
# A timestamp or numeric column may hold a few stray values (N/A, unknown): typed by the rest, the
# stray ones are named in a comment, since cleaning quarantines them as wrong_type.
MOSTLY = 0.98
# Categorical columns with more distinct values than this are learned (learned_categories), not listed.
MAX_LISTED_CATEGORIES = 50
# A learned feature keeps the values that each make up at least this share of the sample: rarer ones
# give the model too few rows to learn from and are pooled as "other".
LEARNED_MIN_SHARE = 0.005
# A listed value is rare below RARE_SHARE of the sample; when rare values together make up
# LONG_TAIL_SHARE or more, new rare values will keep arriving, so unknown ones map to "other".
RARE_SHARE = 0.01
LONG_TAIL_SHARE = 0.02
# Numeric ranges: what was seen, widened on each side by this share of the spread between the
# 0.1th and 99.9th percentiles (more days reach a little further than a sample; quantiles, so one wild
# value does not widen the range further).
RANGE_QUANTILES = (0.001, 0.999)
RANGE_MARGIN = 0.25
# Split: the latest share of days for test, the share before them for validation, the rest train.
HELD_OUT_SHARE = 0.15
CSV_DELIMITERS = (",", ";", "\t", "|")
# Values that say which of a label's two values is the positive one without asking.
POSITIVE_WORDS = ("1", "yes", "y", "true", "t", "positive", "pos")
NEGATIVE_WORDS = ("0", "no", "n", "false", "f", "negative", "neg")
_ID_NAME = re.compile(r"(^|_)(id|ref|reference|key|uuid|guid|code|number|no)$", re.IGNORECASE)
_NUMBER = re.compile(NUMBER_GRAMMAR)
# The text forms Spark's try_to_timestamp reads without a format (ISO 8601 dates and date-times).
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?")
COMMENT_WIDTH = 110
# Plain YAML scalars this simple read back as the same text (other text is double-quoted).
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")


class OnboardingError(Exception):
    """A problem the user must resolve (a choice to make, a column to rename); the message says how."""


class ColumnKind(str, Enum):
    numeric = "numeric"
    boolean = "boolean"
    categorical = "categorical"
    timestamp = "timestamp"
    empty = "empty"


_FEATURE_KINDS = (ColumnKind.numeric, ColumnKind.boolean, ColumnKind.categorical)

# Asked when a choice is ambiguous: (question, candidates, each with its evidence) → the chosen one.
Ask = Callable[[str, list[tuple[str, str]]], str]


@dataclass(frozen=True)
class InitRequest:
    """What `kennel init` was asked for (the command's flags)."""

    source: str
    name: str
    out: Path
    label: str | None = None
    positive: str | None = None
    id_column: str | None = None
    timestamp_column: str | None = None
    file_format: str | None = None
    rows_per_day: int = SAMPLE_ROWS_PER_DAY
    force: bool = False


@dataclass
class Sample:
    """Rows read from the sampled files, as the text cleaning would see (trimmed; None when empty)."""

    delimiter: str | None  # CSV only
    columns: list[str] = field(default_factory=list)
    row_days: list[str] = field(default_factory=list)
    values: dict[str, list[str | None]] = field(default_factory=dict)
    unparsable_lines: int = 0

    @property
    def rows(self) -> int:
        return len(self.row_days)

    def add(self, day: str, record: dict[str, str | None]) -> None:
        for name in record:
            if name not in self.values:
                self.columns.append(name)
                self.values[name] = [None] * self.rows
        for name in self.columns:
            self.values[name].append(record.get(name))
        self.row_days.append(day)


@dataclass
class ColumnProfile:
    """What the sample says about one column."""

    name: str
    rows: int
    counts: Counter[str]
    kind: ColumnKind
    numbers: list[float]
    off_type: Counter[str]  # values not of the column's kind (numeric and timestamp columns)
    on_file_day: int  # timestamp values falling on the day of the file they came from

    @property
    def present(self) -> int:
        return sum(self.counts.values())

    @property
    def empty(self) -> int:
        return self.rows - self.present

    def ranked(self) -> list[tuple[str, int]]:
        """Values, most frequent first (ties by value, so the order never changes)."""
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True)
class Choice:
    column: str
    why: str


@dataclass(frozen=True)
class LabelChoice:
    column: str
    positive: str | int | float
    negative: str | int | float
    why: str
    empty: int
    rows: int


@dataclass
class Draft:
    """A drafted spec: its YAML text and what `kennel init` tells the user about it."""

    text: str
    notes: list[str]


# --- reading the sample ---------------------------------------------------------------------------


def _text(value: str | None) -> str | None:
    """A landed value as cleaning compares it: trimmed, and None when nothing is left."""
    if value is None:
        return None
    trimmed = value.strip(WHITESPACE)
    return trimmed or None


def _pyvalue_text(value: Any) -> str | None:
    """A JSON or Parquet value as the text Spark casts it to."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (str, int, float, date)):
        return _text(str(value))
    return json.dumps(value, default=str, sort_keys=True)


def _lines(head: bytes) -> Iterator[str | None]:
    """Non-blank lines of a text file's head; None for a line that is not UTF-8 (cleaning: unparsable)."""
    for raw in head.splitlines():
        if not raw.strip(WHITESPACE.encode()):
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            yield None


def sniff_delimiter(head: bytes) -> str:
    """The delimiter that splits the header into most columns and the most lines into as many fields as
    the header (first of CSV_DELIMITERS on a tie)."""
    lines = [line for line in _lines(head) if line is not None][:51]
    if not lines:
        return ","

    def score(delimiter: str) -> tuple[bool, float, int]:
        fields = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        agree = sum(1 for n in fields[1:] if n == fields[0]) / max(1, len(fields) - 1)
        return fields[0] > 1, agree, fields[0]

    return max(CSV_DELIMITERS, key=lambda d: (*score(d), -CSV_DELIMITERS.index(d)))


def _csv_records(head: bytes, delimiter: str, limit: int, sample: Sample) -> Iterator[dict[str, str | None]]:
    header: list[str] | None = None
    for line in _lines(head):
        if line is None:
            sample.unparsable_lines += 1
            continue
        fields = next(csv.reader([line], delimiter=delimiter), [])
        if header is None:
            header = [name.strip(WHITESPACE) for name in fields]
            twice = sorted({name for name in header if header.count(name) > 1})
            if twice:
                raise OnboardingError(
                    f"the CSV header names column(s) {', '.join(map(repr, twice))} more than once; cleaning "
                    "cannot read such a file (unreadable_file): fix the header at the source"
                )
            continue
        if len(fields) != len(header):
            sample.unparsable_lines += 1
            continue
        yield dict(zip(header, (_text(f) for f in fields), strict=True))
        limit -= 1
        if limit == 0:
            return


def _jsonl_records(head: bytes, limit: int, sample: Sample) -> Iterator[dict[str, str | None]]:
    for line in _lines(head):
        try:
            record = json.loads(line) if line is not None else None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            sample.unparsable_lines += 1
            continue
        yield {str(k): _pyvalue_text(v) for k, v in record.items()}
        limit -= 1
        if limit == 0:
            return


def _parquet_records(source: LandedSource, file: LandedFile, limit: int) -> Iterator[dict[str, str | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with local_copy(source, file) as path:
        try:
            batch = next(pq.ParquetFile(path).iter_batches(batch_size=limit), None)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"cannot read {file.location(source.location)} as Parquet: {exc}") from exc
        rows = batch.to_pylist() if batch is not None else []
    for row in rows:
        yield {str(k): _pyvalue_text(v) for k, v in row.items()}


def read_sample(source: LandedSource, days: list[str], rows_per_day: int) -> Sample:
    """The first `rows_per_day` records of each of `days`, read from the start of its files in order."""
    delimiter = None
    if source.file_format == "csv":
        delimiter = sniff_delimiter(read_head(source, source.files(days[0])[0], 256 * 1024))
    sample = Sample(delimiter)
    for day in days:
        wanted = rows_per_day
        for file in source.files(day):
            if wanted == 0:
                break
            if source.file_format == "parquet":
                records = _parquet_records(source, file, wanted)
            elif source.file_format == "jsonl":
                records = _jsonl_records(read_head(source, file), wanted, sample)
            else:
                records = _csv_records(read_head(source, file), delimiter or ",", wanted, sample)
            for record in records:
                sample.add(day, record)
                wanted -= 1
    if not sample.rows:
        raise SourceError(f"the sampled files under {source.location} ({', '.join(days)}) hold no readable record")
    return sample


# --- profiling ------------------------------------------------------------------------------------


def _number(value: str) -> float | None:
    if not _NUMBER.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _timestamp_day(value: str) -> date | None:
    """The (UTC) day of an ISO 8601 date or date-time, or None when the text is no such timestamp."""
    if not _TIMESTAMP.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


def profile_column(sample: Sample, name: str) -> ColumnProfile:
    values = sample.values[name]
    counts = Counter(v for v in values if v is not None)
    present = sum(counts.values())
    boolean_words = {*TRUE_WORDS, *FALSE_WORDS}
    numbers = {v: _number(v) for v in counts}
    days = {v: _timestamp_day(v) for v in counts}
    timestamps = sum(n for v, n in counts.items() if days[v] is not None)
    numeric = sum(n for v, n in counts.items() if numbers[v] is not None)
    if not present:
        kind = ColumnKind.empty
    elif all(v.lower() in boolean_words for v in counts):
        kind = ColumnKind.boolean
    elif timestamps >= MOSTLY * present:
        kind = ColumnKind.timestamp
    elif numeric >= MOSTLY * present:
        kind = ColumnKind.numeric
    else:
        kind = ColumnKind.categorical
    off_type: Counter[str] = Counter()
    if kind is ColumnKind.numeric:
        off_type = Counter({v: n for v, n in counts.items() if numbers[v] is None})
    elif kind is ColumnKind.timestamp:
        off_type = Counter({v: n for v, n in counts.items() if days[v] is None})
    on_day = sum(
        1
        for value, day in zip(values, sample.row_days, strict=True)
        if value is not None and (found := days[value]) is not None and found.isoformat() == day
    )
    numeric_values = [x for v in values if v is not None and (x := numbers[v]) is not None]
    return ColumnProfile(name, sample.rows, counts, kind, numeric_values, off_type, on_day)


# --- choosing the id, timestamp and label columns -------------------------------------------------


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0%"


def _ask_or_refuse(role: str, flag: str, candidates: list[tuple[str, str]], ask: Ask | None) -> Choice:
    listing = "\n".join(f"  {name}: {evidence}" for name, evidence in candidates)
    if ask is None:
        raise OnboardingError(
            f"several columns could be the {role}; name it with {flag} COLUMN. Candidates:\n{listing}"
        )
    column = ask(f"Which column is the {role}?", candidates)
    return Choice(column, f"chosen by you among {', '.join(name for name, _ in candidates)}")


def _named(role: str, flag: str, column: str, profiles: dict[str, ColumnProfile]) -> Choice:
    if column not in profiles:
        raise OnboardingError(f"{flag} {column!r}: no such column in the sample; columns: {', '.join(profiles)}")
    return Choice(column, f"named by {flag}")


def choose_timestamp(profiles: dict[str, ColumnProfile], given: str | None, ask: Ask | None) -> Choice:
    if given:
        return _named("event timestamp", "--timestamp", given, profiles)
    candidates = [p for p in profiles.values() if p.kind is ColumnKind.timestamp]
    if not candidates:
        raise OnboardingError(
            "no column holds ISO 8601 timestamps (2026-03-01T14:23:05 or 2026-03-01 14:23:05); Kennel needs "
            "each record's event time: name the column with --timestamp COLUMN"
        )

    def evidence(p: ColumnProfile) -> str:
        return f"{_share(p.on_file_day, p.present)} of its values on the day of their file"

    on_day = [p for p in candidates if p.on_file_day >= MOSTLY * p.present]
    if len(candidates) == 1:
        return Choice(candidates[0].name, f"the only column of timestamps ({evidence(candidates[0])})")
    if len(on_day) == 1:
        return Choice(
            on_day[0].name, f"the only column whose timestamps fall on their file's day ({evidence(on_day[0])})"
        )
    return _ask_or_refuse("event timestamp", "--timestamp", [(p.name, evidence(p)) for p in candidates], ask)


def _could_be_id(p: ColumnProfile) -> bool:
    fractional = p.kind is ColumnKind.numeric and any(not x.is_integer() for x in p.numbers)
    return (
        p.kind is not ColumnKind.timestamp
        and p.rows > 1
        and p.empty == 0
        and len(p.counts) == p.rows
        and not fractional
        and max(len(v) for v in p.counts) <= MAX_ID_LENGTH
    )


def choose_id(profiles: dict[str, ColumnProfile], given: str | None, taken: set[str], ask: Ask | None) -> Choice:
    if given:
        return _named("record id", "--id", given, profiles)
    candidates = [p for p in profiles.values() if p.name not in taken and _could_be_id(p)]
    evidence = "a value in every sampled row, no value twice"
    if not candidates:
        raise OnboardingError(
            "no column has a distinct value in every sampled row; Kennel keeps the latest version of each "
            "record by its id: name the id column with --id COLUMN"
        )
    if len(candidates) == 1:
        return Choice(candidates[0].name, f"the only column with {evidence}")
    named_like_id = [p for p in candidates if _ID_NAME.search(p.name)]
    if len(named_like_id) == 1:
        others = ", ".join(p.name for p in candidates if p is not named_like_id[0])
        return Choice(named_like_id[0].name, f"{evidence}, and the only such column named like an id (not {others})")
    return _ask_or_refuse("record id", "--id", [(p.name, evidence) for p in candidates], ask)


def _two_values(p: ColumnProfile) -> list[str]:
    """A column's distinct values as cleaning tells them apart (text ignoring case), each in its most
    frequent spelling, most frequent first."""
    spelling: dict[str, str] = {}
    totals: Counter[str] = Counter()
    for value, n in p.ranked():
        spelling.setdefault(value.lower(), value)
        totals[value.lower()] += n
    return [spelling[key] for key, _ in sorted(totals.items(), key=lambda item: (-item[1], item[0]))]


def _label_value(text: str) -> str | int | float:
    """Label values in the number grammar are written as numbers, so cleaning compares them as numbers."""
    number = _number(text)
    if number is None:
        return text
    return int(number) if number.is_integer() else number


def choose_label(
    profiles: dict[str, ColumnProfile],
    given: str | None,
    positive: str | None,
    taken: set[str],
    ask: Ask | None,
) -> LabelChoice:
    if given:
        column = _named("label", "--label", given, profiles)
    else:
        two_valued = [p for p in profiles.values() if p.name not in taken and len(_two_values(p)) == 2]
        candidates = [(p.name, f"two values: {' / '.join(_two_values(p))}") for p in two_valued]
        if not candidates:
            raise OnboardingError("no column holds exactly two values; name the label with --label COLUMN")
        if len(candidates) == 1:
            column = Choice(candidates[0][0], f"the only column with exactly two values ({candidates[0][1]})")
        else:
            column = _ask_or_refuse("label", "--label", candidates, ask)
    p = profiles[column.column]
    values = _two_values(p)
    if len(values) != 2:
        raise OnboardingError(
            f"label column {p.name!r} holds {len(values)} distinct value(s) in the sample "
            f"({', '.join(map(repr, values[:10]))}); a label has exactly two (empty = not yet known)"
        )
    chosen = _positive_value(p.name, values, positive, ask)
    negative = values[1 - values.index(chosen)]
    return LabelChoice(p.name, _label_value(chosen), _label_value(negative), column.why, p.empty, p.rows)


def _same_label(a: str, b: str) -> bool:
    number_a, number_b = _number(a), _number(b)
    if number_a is not None and number_b is not None:
        return number_a == number_b
    return a.lower() == b.lower()


def _positive_value(column: str, values: list[str], given: str | None, ask: Ask | None) -> str:
    if given is not None:
        match = [v for v in values if _same_label(v, given)]
        if not match:
            raise OnboardingError(
                f"--positive {given!r} is not a value of {column!r}: it holds {values[0]!r} and {values[1]!r}"
            )
        return match[0]
    for positive, negative in (values, values[::-1]):
        if positive.lower() in POSITIVE_WORDS and negative.lower() in NEGATIVE_WORDS:
            return positive
    if ask is None:
        raise OnboardingError(
            f"which value of the label {column!r} is the positive one, {values[0]!r} or {values[1]!r}? "
            "Pass --positive VALUE"
        )
    return ask(f"Which value of {column} is the positive class?", [(v, "") for v in values])


# --- the spec's text ------------------------------------------------------------------------------


def yaml_scalar(value: str | int | float | bool) -> str:
    """One YAML scalar that reads back as exactly `value` (text that YAML would read otherwise, such as
    yes, 1 or null, is quoted)."""
    if isinstance(value, str) and _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    text = yaml.safe_dump(
        value, default_style='"' if isinstance(value, str) else None, width=2**31, allow_unicode=False
    )
    return text.removesuffix("\n...\n").strip()


def _nice(value: float, step: float, up: bool) -> float:
    rounded = (math.ceil if up else math.floor)(value / step) * step
    return round(rounded, max(0, -math.floor(math.log10(step))))


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _figure(value: float, digits: int = 6) -> str:
    """A number for a comment: at most `digits` significant digits, never in exponent notation."""
    import numpy as np

    return np.format_float_positional(value, precision=digits, unique=False, fractional=False, trim="-")


def _numeric_lines(p: ColumnProfile) -> list[str]:
    import numpy as np

    seen_low, seen_high = min(p.numbers), max(p.numbers)
    q_low, q_high = (float(q) for q in np.quantile(np.array(p.numbers), RANGE_QUANTILES))
    spread = q_high - q_low or abs(seen_high) or 1.0
    margin = RANGE_MARGIN * spread
    low, high = seen_low - margin, seen_high + margin
    clamped = seen_low >= 0 and low < 0
    if clamped:
        low = 0.0
    if all(x.is_integer() for x in p.numbers):
        low, high = float(math.floor(low)), float(math.ceil(high))
    else:
        # Three significant digits of the range's width, rounded outwards.
        step = 10.0 ** (math.floor(math.log10(high - low)) - 2)
        low, high = _nice(low, step, up=False), _nice(high, step, up=True)
    lines = [
        f"    # seen {_figure(seen_low)} .. {_figure(seen_high)} in {len(p.numbers):,} values; 0.1th to 99.9th "
        f"percentile {_figure(q_low)} .. {_figure(q_high)}",
        f"    min: {_number_text(low)}   # "
        + ("no negative value seen, so not below 0" if clamped else f"the lowest seen less {_figure(margin, 3)}"),
        f"    max: {_number_text(high)}   # the highest seen plus {_figure(margin, 3)}: a quarter of the percentile "
        "spread",
    ]
    if seen_high > q_high + 2 * spread or seen_low < q_low - 2 * spread:
        lines.append("    # the extremes lie far outside the other values: check they are real, not placeholders")
    return lines


def _off_type_comment(p: ColumnProfile) -> list[str]:
    if not p.off_type:
        return []
    examples = ", ".join(f"{v!r} ×{n}" for v, n in sorted(p.off_type.items(), key=lambda i: (-i[1], i[0]))[:3])
    return [
        f"    # {sum(p.off_type.values())} sampled value(s) are no {p.kind.value} ({examples}): cleaning quarantines "
        "such rows (wrong_type)"
    ]


def _comment(text: str, indent: str = "    ") -> list[str]:
    """A YAML comment wrapped to COMMENT_WIDTH characters."""
    return [f"{indent}# {line}" for line in textwrap.wrap(text, COMMENT_WIDTH - len(indent) - 2)]


def _learned_lines(p: ColumnProfile, ranked: list[tuple[str, int]]) -> list[str]:
    kept = [(v, n) for v, n in ranked if n >= LEARNED_MIN_SHARE * p.present][:MAX_LEARNED_CATEGORIES] or ranked[:1]
    covered = sum(n for _, n in kept)
    lines = [f"    learned_categories: {len(kept)}"]
    lines += _comment(
        f"{len(ranked)} distinct values in {p.present:,} sampled values, too many to list: training learns the "
        f"{len(kept)} most frequent of its window. {len(kept)} values each make up {LEARNED_MIN_SHARE:.1%} or more "
        f"of the sample (together {_share(covered, p.present)}); rarer ones give the model too few rows to learn "
        f"from and become {OTHER_CATEGORY!r}. Most frequent: " + ", ".join(f"{v} ({n:,})" for v, n in ranked[:5])
    )
    if len(ranked) > 0.9 * p.present:
        lines += _comment("nearly every value is distinct: an identifier or free text? Consider dropping this feature")
    too_long = sum(n for v, n in ranked if len(v) > MAX_CATEGORY_LENGTH)
    if too_long:
        lines += _comment(
            f"{too_long} sampled value(s) are longer than {MAX_CATEGORY_LENGTH} characters: cleaning quarantines them"
        )
    return lines


def _category_lines(p: ColumnProfile) -> list[str]:
    ranked = p.ranked()
    if len(ranked) > MAX_LISTED_CATEGORIES:
        return _learned_lines(p, ranked)
    rare = [(v, n) for v, n in ranked if n < RARE_SHARE * p.present]
    rare_rows = sum(n for _, n in rare)
    lines = ["    categories:"]
    width = max(len(yaml_scalar(v)) for v, _ in ranked)
    for value, n in ranked:
        lines.append(f"      - {yaml_scalar(value):<{width}}   # {n:,} ({_share(n, p.present)})")
    if rare_rows >= LONG_TAIL_SHARE * p.present:
        if OTHER_CATEGORY not in p.counts:
            lines.append(f"      - {OTHER_CATEGORY:<{width}}   # not seen: stands for every value not listed")
        lines.append(f"    unknown_category: {OTHER_CATEGORY}")
        lines += _comment(
            f"long tail: {len(rare)} values rarer than {RARE_SHARE:.0%} each make up {_share(rare_rows, p.present)} "
            f"of the sample, so unseen values will keep coming: they are kept as {OTHER_CATEGORY!r}, not quarantined"
        )
    return lines


def _feature_lines(p: ColumnProfile) -> list[str]:
    lines = [f"  - name: {p.name}", f"    type: {p.kind.value}"]
    if p.kind is ColumnKind.numeric:
        lines += _numeric_lines(p) + _off_type_comment(p)
    elif p.kind is ColumnKind.categorical:
        lines += _category_lines(p)
    elif p.kind is ColumnKind.boolean:
        lines[-1] += f"   # values seen: {', '.join(f'{v} ({n:,})' for v, n in p.ranked())}"
    if p.empty:
        lines.append(f"    nullable: true   # {p.empty:,} of {p.rows:,} sampled rows empty ({_share(p.empty, p.rows)})")
    else:
        lines.append(
            f"    nullable: false   # no empty value in {p.rows:,} sampled rows; an empty one will be quarantined"
        )
    return lines


def _split_line(days_found: int) -> str:
    held_out = max(1, round(HELD_OUT_SHARE * days_found))
    train = max(1, days_found - 2 * held_out)
    return (
        f"split: {{train_days: {train}, validation_days: {held_out}, test_days: {held_out}}}\n"
        f"# From the {days_found} landed days: the latest {held_out} for test, the {held_out} before them for "
        f"validation, up to {train}\n# before those for training. The windows keep their length and move as days "
        "land; raise train_days\n# to learn from more history."
    )


def _source_uri(source: LandedSource, out: Path) -> str:
    if source.is_s3:
        return source.location
    folder, spec_folder = Path(source.location), out.resolve().parent
    return folder.relative_to(spec_folder).as_posix() if folder.is_relative_to(spec_folder) else str(folder)


def _check_names(columns: list[str]) -> None:
    """Refuse the columns kennel.spec would refuse, naming each and why, before anything is drafted."""
    problems = [f"  column {name!r} {problem}" for name in columns if (problem := column_name_problem(name))]
    first: dict[str, str] = {}
    for name in columns:
        other = first.setdefault(name.lower(), name)
        if other != name:
            problems.append(
                f"  columns {other!r} and {name!r} differ only in case, which Spark and DuckDB do not tell apart"
            )
    if problems:
        raise OnboardingError(
            "Kennel cannot use these columns as named in the landed files; rename them at the source:\n"
            + "\n".join(problems)
        )


def draft_spec(request: InitRequest, ask: Ask | None = None) -> Draft:
    """Sample the source and draft a spec for it. Raises SourceError when files cannot be listed or
    read, OnboardingError for a choice the user must make or a column Kennel cannot use."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", request.name):
        raise OnboardingError(f"--name {request.name!r}: a data-set name is lower case letters, digits and _")
    source = open_source(request.source, request.file_format)
    days = source.accepted_days()
    if not days:
        raise SourceError(f"every landed file under {source.location} was refused: {source.days}")
    sampled_days = spread_days(days, SAMPLED_DAYS)
    sample = read_sample(source, sampled_days, request.rows_per_day)
    profiles = {name: profile_column(sample, name) for name in sample.columns}
    # Before any question is asked: a column Kennel cannot name makes every answer moot.
    _check_names([p.name for p in profiles.values() if p.kind is not ColumnKind.empty])

    timestamp = choose_timestamp(profiles, request.timestamp_column, ask)
    record_id = choose_id(profiles, request.id_column, {timestamp.column}, ask)
    label = choose_label(profiles, request.label, request.positive, {timestamp.column, record_id.column}, ask)
    roles = {timestamp.column, record_id.column, label.column}
    features = [p for p in profiles.values() if p.name not in roles and p.kind in _FEATURE_KINDS]
    left_out = [p for p in profiles.values() if p.name not in roles and p.kind not in _FEATURE_KINDS]
    if not features:
        raise OnboardingError("no column is left to be a feature once the id, timestamp and label are chosen")

    quality = Quality()
    sampled = f"{sample.rows:,} rows: the first {request.rows_per_day:,} at most of each sampled day"
    lines = _comment(
        f"Drafted by `kennel init` from {source.location}. Review every line before using it: each choice is "
        f"explained beside it, from what the sample showed. Sampled {len(sampled_days)} of {len(days)} landed days "
        f"({', '.join(sampled_days)}), {sampled}.",
        indent="",
    )
    if sample.unparsable_lines:
        lines += _comment(
            f"{sample.unparsable_lines} sampled line(s) did not parse; cleaning quarantines such lines.", indent=""
        )
    options = f"{{delimiter: {yaml_scalar(sample.delimiter)}}}   # sniffed from the files" if sample.delimiter else "{}"
    lines += [
        f"name: {request.name}",
        'description: ""   # what one record is, and what the label means',
        "owner: team:ml    # shown as the assets' owner in Dagster",
        "source:",
        f"  uri: {yaml_scalar(_source_uri(source, request.out))}",
        f"  format: {source.file_format}   # the landed files' extension",
        f"  options: {options}",
        f"start_date: {days[0]}   # the first landed day",
        f"timestamp_column: {timestamp.column}   # {timestamp.why}",
        f"id_column: {record_id.column}   # {record_id.why}",
        f"label: {{column: {label.column}, positive: {yaml_scalar(label.positive)}, "
        f"negative: {yaml_scalar(label.negative)}}}",
        *_comment(
            f"label: {label.why}; {label.empty:,} of {label.rows:,} sampled rows ({_share(label.empty, label.rows)}) "
            "have no label yet: kept as unlabelled data",
            indent="",
        ),
        "# sensitive_columns: features reported for fairness (each group's rates, the gaps between groups) and",
        "# never fed to the model. Only you know which they are (age, gender, a customer segment, …): list them.",
        "sensitive_columns: []",
        _split_line(len(days)),
        f"quality: {{min_rows_per_partition: {quality.min_rows_per_partition}, "
        f"max_quarantine_fraction: {quality.max_quarantine_fraction}}}   # Kennel's defaults",
        "features:",
    ]
    for p in features:
        lines += _feature_lines(p)
    for p in left_out:
        why = (
            "no value in the sample"
            if p.kind is ColumnKind.empty
            else f"timestamps, and {timestamp.column} is the event time (a feature cannot be a timestamp)"
        )
        lines.append(f"# left out: {p.name} ({why}); cleaning reports columns the spec does not name as schema drift")
    notes = [
        f"sampled {len(sampled_days)} of {len(days)} days ({', '.join(sampled_days)}): {sample.rows:,} rows, "
        f"format {source.file_format}" + (f", delimiter {sample.delimiter!r}" if sample.delimiter else ""),
        f"timestamp column: {timestamp.column} ({timestamp.why})",
        f"id column: {record_id.column} ({record_id.why})",
        f"label: {label.column}, positive {label.positive!r} ({label.why}); "
        f"{_share(label.empty, label.rows)} of sampled rows have no label (kept as unlabelled data)",
        *(f"left out: {p.name}" for p in left_out),
    ]
    return Draft("\n".join(lines) + "\n", notes)


def init_spec(request: InitRequest, ask: Ask | None = None) -> Draft:
    """`kennel init`: draft the spec and write it to `request.out` (an existing file only with `force`)."""
    if request.out.exists() and not request.force:
        raise OnboardingError(f"{request.out} exists; pass --force to replace it")
    draft = draft_spec(request, ask)
    _write_spec(draft, request.out)
    return draft


def _write_spec(draft: Draft, out: Path) -> None:
    """Write the drafted spec once kennel.spec accepts it (loaded from a file beside the target, so a
    relative source resolves as it will)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    trial = out.with_name(f".{out.name}.draft")
    trial.write_text(draft.text, encoding="utf-8")
    try:
        load_spec(trial)
        trial.replace(out)
    except SpecError as exc:
        raise RuntimeError(
            f"kennel init drafted a spec that kennel.spec refuses (a bug in kennel init):\n{exc}"
        ) from exc
    finally:
        trial.unlink(missing_ok=True)
