"""Where landed files are and which daily partition each belongs to, for a local folder or S3.

A landed file belongs to day D when D (YYYY-MM-DD) names one of its folders or appears in its file
name, e.g. `landing/credit_demo/2026-01-03/part-00000.csv` or `landing/x/export_2026-01-03.csv`.
Names with a part starting with `.` or `_` are in-flight or hidden (write to `_tmp` or `.part`, then
rename) and are ignored, so a half-copied file is never picked up.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kennel.lake import s3

_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")


def partition_of(relative: PurePosixPath | Path) -> str | None:
    for part in reversed(relative.parts):
        m = _DAY.search(part)
        if m:
            return m.group(1)
    return None


def _landed_day(relative: PurePosixPath, file_format: str) -> str | None:
    if relative.suffix != f".{file_format}" or any(p.startswith((".", "_")) for p in relative.parts):
        return None
    return partition_of(relative)


@dataclass(frozen=True)
class LandedFile:
    """One landed file: its name relative to the source, and what changes when its content does."""

    name: str  # relative, with / separators
    size: int
    version: str  # S3: the ETag; local: the modification time in nanoseconds

    def location(self, source: str) -> str:
        return f"{source.rstrip('/')}/{self.name}"


def list_landed(source: str, file_format: str, s3_client: Any = None) -> dict[str, list[LandedFile]]:
    """Day → landed files of the format under a local folder or an s3:// prefix, sorted by name."""
    by_day: dict[str, list[LandedFile]] = {}
    if source.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"{source} is on S3: an S3 client is needed to list it")
        bucket, prefix = s3.split_uri(source)
        entries = [
            (obj.key[len(prefix) :].lstrip("/"), obj.size, obj.etag)
            for obj in s3.list_objects(s3_client, bucket, prefix)
        ]
    else:
        root = Path(source)
        entries = []
        for path in root.rglob(f"*.{file_format}") if root.exists() else ():
            if path.is_file():
                st = path.stat()
                entries.append((path.relative_to(root).as_posix(), st.st_size, str(st.st_mtime_ns)))
    for name, size, version in sorted(entries):
        day = _landed_day(PurePosixPath(name), file_format)
        if day:
            by_day.setdefault(day, []).append(LandedFile(name, size, version))
    return by_day


def landed_files(source_dir: str | Path, file_format: str) -> dict[str, list[Path]]:
    """Day → local landed files of the spec's format, sorted."""
    root = Path(source_dir)
    return {day: [root / f.name for f in files] for day, files in list_landed(str(root), file_format).items()}


def day_fingerprint(files: list[LandedFile]) -> str:
    """Changes whenever a file of the day is added, removed or rewritten (S3 ETag / local mtime+size):
    unlike a modification-time high-water mark it cannot miss a file stamped in the same second."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        digest.update(f"{f.name}\0{f.size}\0{f.version}\n".encode())
    return digest.hexdigest()[:16]
