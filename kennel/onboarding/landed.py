"""The landed files `kennel init` and `kennel check` look at: listed as ingestion lists them
(kennel.ingestion.landing), a few days picked, and only the start of each file read.

Both commands sample: they read the first rows of a bounded number of files, never the whole source.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kennel.ingestion.landing import LandedFile, accepted, list_landed, refusals
from kennel.lake import s3 as s3_files

FILE_FORMATS = ("csv", "parquet", "jsonl")
S3_ENDPOINT_ENV = "KENNEL_S3_ENDPOINT_URL"
# At most this much of a text file's start is read: enough for many thousands of rows, and a file
# of one endless line cannot exhaust memory.
MAX_HEAD_BYTES = 64 * 1024 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"


class SourceError(RuntimeError):
    """The landed files cannot be listed or read (a missing folder, an S3 endpoint that fails)."""


@dataclass(frozen=True)
class LandedSource:
    """A source's landed files of one format, per day (refused entries included, with their reason)."""

    location: str  # an absolute local folder, or s3://bucket/prefix as given
    file_format: str
    days: dict[str, list[LandedFile]]
    s3_client: Any = None

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def accepted_days(self) -> list[str]:
        """The days with at least one file to ingest, oldest first."""
        return sorted(day for day, files in self.days.items() if accepted(files))

    def files(self, day: str) -> list[LandedFile]:
        return accepted(self.days.get(day, []))

    def refused(self, day: str) -> dict[str, str]:
        return refusals(self.days.get(day, []))


def s3_client() -> Any:
    """A boto3 S3 client as Kennel's S3 resource makes one: endpoint from KENNEL_S3_ENDPOINT_URL,
    credentials from the standard AWS chain, bounded retries and timeouts."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ.get(S3_ENDPOINT_ENV) or None,
        config=Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=30),
    )


def open_source(location: str, file_format: str | None = None) -> LandedSource:
    """List a local folder or s3:// prefix. Without `file_format`, the one format whose extension the
    landed files carry; several formats side by side need `file_format` to say which is the data set."""
    client = s3_client() if location.startswith("s3://") else None
    if client is None:
        folder = Path(location).expanduser()
        if not folder.is_dir():
            raise SourceError(f"{location} is not a folder (give a folder of landed files or an s3:// prefix)")
        location = str(folder.resolve())
    formats = [file_format] if file_format else list(FILE_FORMATS)
    listed: dict[str, dict[str, list[LandedFile]]] = {}
    try:
        for fmt in formats:
            days = list_landed(location, fmt, client)
            if days:
                listed[fmt] = days
    except (OSError, s3_files.S3TransferError, ValueError) as exc:
        raise SourceError(f"cannot list {location}: {exc}") from exc
    if not listed:
        wanted = f".{file_format}" if file_format else " or ".join(f".{f}" for f in FILE_FORMATS)
        raise SourceError(
            f"no landed {wanted} files under {location}: a file belongs to the day (YYYY-MM-DD) named in "
            "its path, e.g. 2026-03-01/part-0.csv"
        )
    if len(listed) > 1:
        found = ", ".join(f"{sum(len(f) for f in days.values())} .{fmt}" for fmt, days in listed.items())
        raise SourceError(f"{location} holds files of several formats ({found}); pick one with --format")
    (fmt, days), *_ = listed.items()
    return LandedSource(location, fmt, days, client)


def spread_days(days: list[str], count: int) -> list[str]:
    """`count` days spread over `days` (sorted): the first, the last and evenly between (for 3: first,
    middle, last); all of them when there are no more than `count`."""
    if count >= len(days):
        return list(days)
    if count == 1:
        return [days[0]]
    picked = [days[round(i * (len(days) - 1) / (count - 1))] for i in range(count)]
    return list(dict.fromkeys(picked))


def read_head(source: LandedSource, file: LandedFile, max_bytes: int = MAX_HEAD_BYTES) -> bytes:
    """The first `max_bytes` bytes of a landed text file, without a UTF-8 byte-order mark, cut after
    its last whole line when the file is longer."""
    if file.size == 0:
        return b""  # (S3 answers a range request for an empty object with an error)
    try:
        if source.is_s3:
            bucket, prefix = s3_files.split_uri(source.location)
            answer = source.s3_client.get_object(
                Bucket=bucket, Key=prefix + file.name, Range=f"bytes=0-{max_bytes - 1}"
            )
            head = answer["Body"].read()
        else:
            # O_NOFOLLOW: a file swapped for a symbolic link since it was listed is not followed.
            fd = os.open(Path(source.location) / file.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with open(fd, "rb") as fh:
                head = fh.read(max_bytes)
    except (OSError, BotoCoreError, ClientError) as exc:
        raise SourceError(f"cannot read {file.location(source.location)}: {exc}") from exc
    head = head.removeprefix(_UTF8_BOM)
    if file.size > max_bytes:
        head = head[: max(head.rfind(b"\n"), head.rfind(b"\r")) + 1]
    return head


@contextmanager
def local_copy(source: LandedSource, file: LandedFile) -> Iterator[Path]:
    """A landed file as a local path (an S3 object is downloaded into a temporary folder, removed after)."""
    if not source.is_s3:
        yield Path(source.location) / file.name
        return
    bucket, prefix = s3_files.split_uri(source.location)
    with tempfile.TemporaryDirectory(prefix="kennel-sample-") as tmp:
        target = Path(tmp) / Path(file.name).name
        try:
            s3_files.download(source.s3_client, bucket, prefix + file.name, target)
        except s3_files.S3TransferError as exc:
            raise SourceError(str(exc)) from exc
        yield target
