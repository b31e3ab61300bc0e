"""S3 through a boto3 client: list, download and publish folders.

Spark here cannot write s3a:// (no hadoop-aws jars) and DuckDB cannot read s3:// (no httpfs offline),
so an S3 source or lake is worked on through a local folder: files are downloaded, Spark and dbt work
locally, and outputs are uploaded. Each object appears whole (a PUT or a completed multipart upload
is atomic). A folder of several objects is published as a generation of files that no earlier
manifest names, then a manifest naming them (one PUT); readers take the manifest's list, so they see
the previous folder or the new one, never a half-published or half-overwritten one.

A request that still fails after the client's own retries (its botocore retry settings, see
resources/lake.py) raises S3TransferError naming the object and the endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from kennel.lake import LakeIntegrityError, sha256_of

MANIFEST = "_manifest.json"
# Files of one publish live in prefix/generation-<digest of their names and contents>/: a new
# publish never overwrites an object the current manifest names, and publishing the same files again
# writes the same keys.
GENERATION_PREFIX = "generation-"


class S3TransferError(RuntimeError):
    """An S3 request failed after the client's retries (endpoint down, refused, timing out)."""


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix → ("bucket", "some/prefix/"); the prefix names a folder."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@contextmanager
def _request(client: Any, action: str, bucket: str, key: str) -> Iterator[None]:
    """Turn a failure left after the client's retries into S3TransferError naming object and endpoint."""
    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        retries = client.meta.config.retries or {}
        attempts = f"up to {retries['total_max_attempts']}" if "total_max_attempts" in retries else "the client's"
        raise S3TransferError(
            f"could not {action} s3://{bucket}/{key} at {client.meta.endpoint_url} ({attempts} attempts for "
            f"a transient error): {exc}"
        ) from exc


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    etag: str
    last_modified: datetime


def list_objects(client: Any, bucket: str, prefix: str) -> list[S3Object]:
    found = []
    with _request(client, "list", bucket, prefix):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                found.append(S3Object(obj["Key"], obj["Size"], obj["ETag"].strip('"'), obj["LastModified"]))
    return found


def upload_file(client: Any, path: Path, bucket: str, key: str) -> None:
    """One object: readers see the old or the new one."""
    with _request(client, "upload", bucket, key):
        client.upload_file(str(path), bucket, key)


def download(client: Any, bucket: str, key: str, target: Path) -> None:
    """Download to a temporary name beside the target, then rename: no half file under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        with _request(client, "download", bucket, key):
            client.download_file(bucket, key, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _plain_file_name(name: str, where: str) -> str:
    """`name`, if it names a file directly inside a folder; a name that would reach elsewhere
    (a path, `..`, absolute) is refused."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{where}: {name!r} is not a plain file name; refusing to write it outside its folder")
    return name


def replace_local_dir(local_dir: Path, files: dict[str, Callable[[Path], Any]]) -> None:
    """Make local_dir hold exactly `files` (name → writer(path)), written beside it and swapped in.
    Each name must be a plain file name: nothing is written outside local_dir."""
    for name in files:
        _plain_file_name(name, str(local_dir))
    tmp = local_dir.with_name(f".{local_dir.name}.{uuid.uuid4().hex}")
    tmp.mkdir(parents=True)
    try:
        for name, write in files.items():
            write(tmp / name)
        old = local_dir.with_name(f".{local_dir.name}.old.{uuid.uuid4().hex}")
        if local_dir.exists():
            local_dir.rename(old)
        tmp.rename(local_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(client: Any, local_dir: Path, bucket: str, prefix: str) -> dict[str, Any]:
    """Make `prefix` hold local_dir's files: upload them into a generation folder of their own, then
    replace the manifest listing them (name, key under the prefix, size, SHA-256), then delete objects
    no manifest lists any more. A failure before the manifest leaves the previous manifest and every
    file it names untouched. Returns the manifest."""
    prefix = prefix.rstrip("/") + "/"
    files = sorted(p for p in local_dir.iterdir() if p.is_file() and p.name != MANIFEST)
    entries: list[dict[str, Any]] = [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files]
    generation = GENERATION_PREFIX + hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
    for path, entry in zip(files, entries, strict=True):
        entry["key"] = f"{generation}/{path.name}"
        upload_file(client, path, bucket, prefix + entry["key"])
    manifest = {"files": entries}
    with _request(client, "upload", bucket, prefix + MANIFEST):
        client.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=json.dumps(manifest, indent=2).encode())
    listed = {prefix + e["key"] for e in entries} | {prefix + MANIFEST}
    # Earlier generations, and files of the flat layout manifests named before generations; other
    # nested folders under the prefix are not this folder's.
    stale = [
        o.key
        for o in list_objects(client, bucket, prefix)
        if o.key not in listed and ("/" not in (rest := o.key[len(prefix) :]) or rest.startswith(GENERATION_PREFIX))
    ]
    for start in range(0, len(stale), 1000):
        with _request(client, "delete stale objects under", bucket, prefix):
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[start : start + 1000]]})
    return manifest


def _listed_key(entry: dict[str, Any], where: str) -> str:
    """The entry's key under the prefix (a manifest written before generations names the file only),
    refused if it would leave the prefix."""
    key = str(entry.get("key", entry["name"]))
    if key.startswith("/") or ".." in PurePosixPath(key).parts or "\\" in key or "\0" in key:
        raise ValueError(f"{where} lists the object key {key!r}, which leaves its folder; refusing to fetch it")
    return key


def fetch_dir(client: Any, bucket: str, prefix: str, local_dir: Path) -> list[Path]:
    """Replace local_dir with the files the prefix's manifest lists, each checked against the size
    (and SHA-256, when recorded) the manifest gives; no manifest means no folder."""
    prefix = prefix.rstrip("/") + "/"
    where = f"s3://{bucket}/{prefix}{MANIFEST}"
    with _request(client, "download", bucket, prefix + MANIFEST):
        try:
            body = client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"s3://{bucket}/{prefix} has no {MANIFEST}: it was never published") from None
    entries = json.loads(body)["files"]
    names = [_plain_file_name(e["name"], where) for e in entries]

    def fetch(entry: dict[str, Any]) -> Callable[[Path], None]:
        key = prefix + _listed_key(entry, where)

        def write(path: Path) -> None:
            with _request(client, "download", bucket, key):
                client.download_file(bucket, key, str(path))
            expected = {"bytes": entry["bytes"], "sha256": entry.get("sha256")}
            actual = {"bytes": path.stat().st_size, "sha256": sha256_of(path) if expected["sha256"] else None}
            if actual != expected:
                raise LakeIntegrityError(
                    f"s3://{bucket}/{key} holds {actual}, but {where} says {expected}; "
                    "refusing to use it (publish the folder again)"
                )

        return write

    replace_local_dir(local_dir, {name: fetch(entry) for name, entry in zip(names, entries, strict=True)})
    return [local_dir / n for n in names]
