"""`kennel check`: a validated spec's real Spark cleaning (kennel.ingestion.cleaning.clean_partition), run
on a sample of its landed files in a temporary landing folder and a temporary lake, both deleted after.
The real lake is never written: what the user learns is what ingestion would quarantine, and why.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kennel.ingestion.cleaning import PART_FILE, CleaningResult
from kennel.ingestion.landing import REFUSALS_FILE, LandedFile, write_refusals
from kennel.lake import Lake
from kennel.onboarding.landed import (
    MAX_HEAD_BYTES,
    LandedSource,
    SourceError,
    local_copy,
    open_source,
    read_head,
    spread_days,
)
from kennel.spec import WHITESPACE, DatasetSpec

DEFAULT_DAYS = 3
DEFAULT_ROWS_PER_FILE = 2000
EXAMPLES_PER_REASON = 2
# The version name of the days written into the temporary lake.
_RUN = "kennel-check"


@dataclass
class DayCheck:
    """One sampled day cleaned: the cleaning result, two example details per reason, and its labels."""

    day: str
    files: int
    cut_files: int  # files of which only the first rows were copied
    result: CleaningResult
    examples: dict[str, list[str]]
    labelled: int  # clean rows that carry a label
    positives: int

    @property
    def quarantine_share(self) -> float:
        return self.result.rows_quarantined / self.result.rows_in if self.result.rows_in else 0.0


@dataclass
class CheckReport:
    spec: DatasetSpec
    source: str
    landed_days: list[str]
    rows_per_file: int
    days: list[DayCheck] = field(default_factory=list)

    @property
    def reasons(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for day in self.days:
            for reason, n in day.result.reasons.items():
                total[reason] = total.get(reason, 0) + n
        return dict(sorted(total.items()))

    @property
    def over_threshold(self) -> list[DayCheck]:
        """Days whose quarantine share would fail their quarantine_rate check."""
        return [d for d in self.days if d.quarantine_share > self.spec.quality.max_quarantine_fraction]

    def lines(self) -> list[str]:
        """The report as printed by `kennel check`."""
        checked = [d.day for d in self.days]
        out = [
            f"spec {self.spec.spec_path} is valid (data set {self.spec.name})",
            f"source {self.source}: {len(self.landed_days)} landed day(s), {self.landed_days[0]} .. "
            f"{self.landed_days[-1]}; cleaning {len(checked)} of them ({', '.join(checked)}), at most the first "
            f"{self.rows_per_file:,} rows of each file, in a temporary lake (the real lake is not written)",
        ]
        limit = self.spec.quality.max_quarantine_fraction
        for day in self.days:
            r = day.result
            cut = f"; {day.cut_files} of {day.files} file(s) cut to their first rows" if day.cut_files else ""
            out.append(
                f"{day.day}: {r.rows_in:,} rows in, {r.rows_clean:,} clean, {r.rows_quarantined:,} quarantined "
                f"({day.quarantine_share:.1%}){cut}"
            )
            out += _reason_lines(r.reasons, day.examples)
            if day.quarantine_share > limit:
                out.append(
                    f"  WARNING: {day.quarantine_share:.1%} quarantined is above quality.max_quarantine_fraction "
                    f"{limit}: this day would fail its quarantine_rate check and be left out of training"
                )
            out += _drift_lines(r)
        rows_in = sum(d.result.rows_in for d in self.days)
        clean = sum(d.result.rows_clean for d in self.days)
        quarantined = sum(d.result.rows_quarantined for d in self.days)
        out.append(
            f"total: {rows_in:,} rows in, {clean:,} clean, {quarantined:,} quarantined "
            f"({quarantined / rows_in if rows_in else 0:.1%})"
        )
        examples: dict[str, list[str]] = {}
        for day in self.days:
            for reason, details in day.examples.items():
                examples.setdefault(reason, details)
        out += _reason_lines(self.reasons, examples)
        labelled = sum(d.labelled for d in self.days)
        positives = sum(d.positives for d in self.days)
        out.append(
            f"labelled: {labelled:,} of {clean:,} clean rows ({labelled / clean if clean else 0:.1%}) carry a label "
            f"({self.spec.label.column}); {positives / labelled if labelled else 0:.1%} of those are positive "
            f"({self.spec.label.positive!r})"
        )
        return out


def _reason_lines(reasons: dict[str, int], examples: dict[str, list[str]]) -> list[str]:
    width = max((len(r) for r in reasons), default=0)
    return [
        f"  {reason:<{width}} {n:>8,}   e.g. " + " | ".join(examples.get(reason, []))
        for reason, n in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    ]


def _drift_lines(result: CleaningResult) -> list[str]:
    lines = [f"  missing column(s) in {file}: {', '.join(cols)}" for file, cols in result.missing_columns.items()]
    lines += [
        f"  columns the spec does not name, in {file}: {', '.join(cols)}" for file, cols in result.extra_columns.items()
    ]
    lines += [f"  unreadable: {file}: {why}" for file, why in result.unreadable_files.items()]
    lines += [f"  mapped to 'other' ({feature}): {n:,}" for feature, n in result.mapped_to_other.items()]
    return lines


def _copy_text_head(source: LandedSource, file: LandedFile, target: Path, rows: int, header: bool) -> bool:
    """Copy a text file's first `rows` records (and a CSV header), byte for byte; True when cut short."""
    blank = WHITESPACE.encode()
    wanted = rows + (1 if header else 0)
    kept: list[bytes] = []
    cut = file.size > MAX_HEAD_BYTES
    for line in read_head(source, file).splitlines(keepends=True):
        if line.strip(blank):
            if wanted == 0:
                cut = True
                break
            wanted -= 1
        kept.append(line)
    target.write_bytes(b"".join(kept))
    return cut


def _copy_parquet_head(source: LandedSource, file: LandedFile, target: Path, rows: int) -> bool:
    """Copy a Parquet file's first `rows` rows; a file that cannot be opened is copied whole, for cleaning
    to report it (unreadable_file). True when cut short."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with local_copy(source, file) as path:
        try:
            parquet = pq.ParquetFile(path)
            if parquet.metadata.num_rows > rows:
                batch = next(parquet.iter_batches(batch_size=rows))
                pq.write_table(pa.Table.from_batches([batch]), target)
                return True
        except (pa.ArrowException, OSError):
            pass
        shutil.copyfile(path, target)
    return False


def _land_sample(source: LandedSource, day: str, folder: Path, rows: int) -> tuple[list[Path], int]:
    """Copy the day's files (their first rows) into `folder`, named by file name as raw_records names
    them, and the day's refusals beside them; the copies and how many were cut short."""
    folder.mkdir(parents=True)
    files = source.files(day)
    names = [f.name.rsplit("/", 1)[-1] for f in files]
    if len(set(names)) != len(names):
        raise SourceError(f"{day}: two landed files share a file name in different folders: {[f.name for f in files]}")
    cut = 0
    for file, name in zip(files, names, strict=True):
        target = folder / name
        if source.file_format == "parquet":
            cut += _copy_parquet_head(source, file, target, rows)
        else:
            cut += _copy_text_head(source, file, target, rows, header=source.file_format == "csv")
    if refused := source.refused(day):
        write_refusals(folder / REFUSALS_FILE, refused)
    return [folder / name for name in names], cut


def _examples(quarantine_file: Path) -> dict[str, list[str]]:
    """The first distinct details of each reason, in the quarantine file's (sorted) order."""
    import pyarrow.parquet as pq

    table = pq.read_table(quarantine_file, columns=["reason", "detail"])
    examples: dict[str, list[str]] = {}
    for reason, detail in zip(table.column("reason").to_pylist(), table.column("detail").to_pylist(), strict=True):
        found = examples.setdefault(reason, [])
        if len(found) < EXAMPLES_PER_REASON and detail not in found:
            found.append(detail)
    return examples


def _labels(clean_file: Path, label: str) -> tuple[int, int]:
    """(clean rows with a label, positive ones)."""
    import pyarrow.parquet as pq

    values = pq.read_table(clean_file, columns=[label]).column(0).to_pylist()
    known = [v for v in values if v is not None]
    return len(known), sum(1 for v in known if v == 1)


def dry_run(spec: DatasetSpec, days: int = DEFAULT_DAYS, rows_per_file: int = DEFAULT_ROWS_PER_FILE) -> CheckReport:
    """Clean up to `days` landed days (first, middle, last, …), at most `rows_per_file` rows of each file,
    with the real cleaning, in temporary folders removed afterwards. SourceError when the files cannot
    be listed or read."""
    from kennel.ingestion.cleaning import clean_partition
    from kennel.spark import get_spark

    source = open_source(spec.source_location(), spec.source.format)
    landed = source.accepted_days()
    if not landed:
        raise SourceError(f"every landed file under {source.location} was refused: {source.days}")
    report = CheckReport(spec, source.location, landed, rows_per_file)
    spark = get_spark()
    with tempfile.TemporaryDirectory(prefix="kennel-check-") as tmp:
        lake = Lake(Path(tmp) / "lake")
        data = lake.dataset(spec.name)
        for day in spread_days(landed, days):
            files, cut = _land_sample(source, day, Path(tmp) / "landing" / day, rows_per_file)
            clean_dir, quarantine_dir = data.clean_version_dir(day, _RUN), data.quarantine_version_dir(day, _RUN)
            result = clean_partition(spark, spec, files, day, clean_dir, quarantine_dir, lake.staging() / _RUN)
            labelled, positives = _labels(clean_dir / PART_FILE, spec.label.column)
            report.days.append(
                DayCheck(day, len(files), cut, result, _examples(quarantine_dir / PART_FILE), labelled, positives)
            )
    return report
