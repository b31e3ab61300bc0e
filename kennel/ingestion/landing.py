"""Where landed files are and which daily partition each belongs to, for a local folder or S3.

A landed file belongs to day D when D (YYYY-MM-DD) names one of its folders or appears in its file
name, e.g. `landing/credit_demo/2026-01-03/part-00000.csv` or `landing/x/export_2026-01-03.csv`.
Names with a part starting with `.` or `_` are in-flight or hidden (write to `_tmp` or `.part`, then
rename) and are ignored, so a half-copied file is never picked up.

Landing is confined to the source folder: only regular files found inside it without following a
symbolic link are ingested. A symbolic link (to a file or a folder, wherever it points), a folder or
other non-regular entry named like a data file, or a path that resolves outside the source folder is
refused: listed with the reason (`LandedFile.refused`), never copied into the lake, and named in the
day's quality record (schema drift, unreadable files) through the refusal list that raw_records
writes beside the day's copied files (`write_refusals`, read back by cleaning).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kennel.lake import s3

_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")
# Beside a day's copied files in the lake's raw folder: landed file → why it was refused. Its name
# starts with `_`, so nothing takes it for data.
REFUSALS_FILE = "_refused.json"


def partition_of(relative: PurePosixPath | Path) -> str | None:
    for part in reversed(relative.parts):
        m = _DAY.search(part)
        if m:
            return m.group(1)
    return None


def _hidden(relative: PurePosixPath) -> bool:
    return any(p.startswith((".", "_")) for p in relative.parts)


def _landed_day(relative: PurePosixPath, file_format: str) -> str | None:
    if relative.suffix != f".{file_format}" or _hidden(relative):
        return None
    return partition_of(relative)


@dataclass(frozen=True)
class LandedFile:
    """One landed file: its name relative to the source, what changes when its content does, and why it
    is refused (None for a file to ingest)."""

    name: str  # relative, with / separators
    size: int
    version: str  # S3: the ETag; local: the modification time in nanoseconds
    refused: str | None = None  # e.g. "symbolic link: refused"

    def location(self, source: str) -> str:
        return f"{source.rstrip('/')}/{self.name}"


def _local_entries(root: Path, file_format: str) -> Iterator[tuple[str, int, str, str | None]]:
    """(relative name, size, version, why refused) of every entry under `root` that is or stands for a
    landed file, found without following a symbolic link. A symbolic link is refused when a file of its
    name would be a landed file, or when it leads to a folder whose path names a day (its files would
    be that day's); a folder named like a data file is refused whole."""
    real_root = root.resolve()
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            listing = os.scandir(folder)
        except OSError as exc:
            if folder == root:
                raise
            # Reported for the day its path names; one that names none (lost+found on a mount) holds no
            # day's files that could be reported, and must not stop the other days.
            relative = PurePosixPath(folder.relative_to(root).as_posix())
            if partition_of(relative):
                yield relative.as_posix(), 0, "", f"a folder that cannot be read ({exc.strerror}): refused"
            continue
        with listing as entries:
            for entry in entries:
                path = Path(entry.path)
                relative = PurePosixPath(path.relative_to(root).as_posix())
                if _hidden(relative):
                    continue
                named_like_data = _landed_day(relative, file_format) is not None
                if entry.is_symlink():
                    # Whatever it points to: a link can lead anywhere (/etc/passwd) and be re-pointed later.
                    if named_like_data:
                        why = "symbolic link: refused"
                    elif entry.is_dir() and partition_of(relative):
                        why = "symbolic link to a folder: refused"
                    else:
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    if not named_like_data:
                        folders.append(path)
                        continue
                    why = "a folder, not a file: refused"
                elif not named_like_data:
                    continue
                elif not entry.is_file(follow_symlinks=False):
                    why = "not a regular file (a device, pipe or socket): refused"
                elif not path.resolve().is_relative_to(real_root):
                    why = "resolves outside the source folder: refused"
                else:
                    info = entry.stat(follow_symlinks=False)
                    yield relative.as_posix(), info.st_size, str(info.st_mtime_ns), None
                    continue
                yield relative.as_posix(), 0, "", why


def list_landed(source: str, file_format: str, s3_client: Any = None) -> dict[str, list[LandedFile]]:
    """Day → landed files of the format under a local folder or an s3:// prefix, sorted by name; refused
    entries are listed too, each with its reason (see the module's docstring)."""
    by_day: dict[str, list[LandedFile]] = {}
    entries: list[tuple[str, int, str, str | None]]
    if source.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"{source} is on S3: an S3 client is needed to list it")
        bucket, prefix = s3.split_uri(source)
        entries = []
        for obj in s3.list_objects(s3_client, bucket, prefix):
            name = obj.key[len(prefix) :].lstrip("/")
            if not name.endswith("/"):
                entries.append((name, obj.size, obj.etag, None))
            elif _landed_day(PurePosixPath(name), file_format):  # a folder marker named like a data file
                entries.append((name, obj.size, obj.etag, "a folder marker, not a file: refused"))
    else:
        root = Path(source)
        entries = list(_local_entries(root, file_format)) if root.is_dir() else []
    for name, size, version, refused in sorted(entries):
        relative = PurePosixPath(name)
        # A refused link to a folder belongs to the day its own path names.
        day = _landed_day(relative, file_format) or (partition_of(relative) if refused else None)
        if day:
            by_day.setdefault(day, []).append(LandedFile(name, size, version, refused))
    return by_day


def accepted(files: list[LandedFile]) -> list[LandedFile]:
    """The files to ingest: those not refused."""
    return [f for f in files if f.refused is None]


def refusals(files: list[LandedFile]) -> dict[str, str]:
    """Refused landed file (its name relative to the source) → why."""
    return {f.name: f.refused for f in files if f.refused is not None}


def landed_files(source_dir: str | Path, file_format: str) -> dict[str, list[Path]]:
    """Day → local landed files of the spec's format to ingest, sorted (days with only refused files left out)."""
    root = Path(source_dir)
    by_day = {
        day: [root / f.name for f in accepted(files)] for day, files in list_landed(str(root), file_format).items()
    }
    return {day: paths for day, paths in by_day.items() if paths}


def copy_landed_file(source_dir: str | Path, file: LandedFile, target: Path) -> None:
    """Copy an accepted local landed file to `target` (keeping its modification time), checking again
    what listing checked: a file swapped for a symbolic link or a pipe since is refused here, not followed."""
    root = Path(source_dir)
    path = root / file.name
    if not path.resolve().is_relative_to(root.resolve()):
        raise PermissionError(f"{file.name} resolves outside {root}: refused")
    # O_NOFOLLOW: a symbolic link put in its place fails to open; O_NONBLOCK: a pipe does not block the open.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(fd, "rb") as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{file.name} is not a regular file: refused")
        with open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))


def write_refusals(path: Path, refused: dict[str, str]) -> None:
    path.write_text(json.dumps(refused, indent=2, sort_keys=True), encoding="utf-8")


def read_refusals(folder: Path) -> dict[str, str]:
    """The refusal list written beside a day's copied files, or nothing when none was written."""
    path = folder / REFUSALS_FILE
    if not path.is_file():
        return {}
    refused = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(refused, dict) or not all(isinstance(v, str) for v in refused.values()):
        raise ValueError(f"{path} is not a refusal list (an object of file → reason)")
    return refused


def day_fingerprint(files: list[LandedFile]) -> str:
    """Changes whenever a file of the day is added, removed or rewritten (S3 ETag / local mtime+size):
    unlike a modification-time high-water mark it cannot miss a file stamped in the same second. Only
    accepted files count: the fingerprint is that of what a run copies into the lake."""
    digest = hashlib.sha256()
    for f in sorted(accepted(files), key=lambda f: f.name):
        digest.update(f"{f.name}\0{f.size}\0{f.version}\n".encode())
    return digest.hexdigest()[:16]
