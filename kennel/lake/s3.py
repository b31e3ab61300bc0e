"""S3 through a boto3 client: list, download and publish folders.

Spark here cannot write s3a:// (no hadoop-aws jars) and DuckDB cannot read s3:// (no httpfs offline),
so an S3 source or lake is worked on through a local folder: files are downloaded, Spark and dbt work
locally, and outputs are uploaded. Each object appears whole (a PUT or a completed multipart upload
is atomic); a folder of several objects is published with a manifest written after its files, and
readers take the manifest's list, so they never see a half-published folder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

MANIFEST = "_manifest.json"


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix → ("bucket", "some/prefix/"); the prefix names a folder."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    etag: str
    last_modified: datetime


def list_objects(client: Any, bucket: str, prefix: str) -> list[S3Object]:
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", ()):
            found.append(S3Object(obj["Key"], obj["Size"], obj["ETag"].strip('"'), obj["LastModified"]))
    return found


def download(client: Any, bucket: str, key: str, target: Path) -> None:
    """Download to a temporary name beside the target, then rename: no half file under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        client.download_file(bucket, key, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def replace_local_dir(local_dir: Path, files: dict[str, Any]) -> None:
    """Make local_dir hold exactly `files` (name → writer(path)), written beside it and swapped in."""
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
    """Make `prefix` hold local_dir's files: upload each, then the manifest listing them, then delete
    objects the manifest no longer lists. Returns the manifest."""
    prefix = prefix.rstrip("/") + "/"
    files = sorted(p for p in local_dir.iterdir() if p.is_file() and p.name != MANIFEST)
    for path in files:
        client.upload_file(str(path), bucket, prefix + path.name)
    manifest = {"files": [{"name": p.name, "bytes": p.stat().st_size} for p in files]}
    client.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=json.dumps(manifest, indent=2).encode())
    listed = {prefix + p.name for p in files} | {prefix + MANIFEST}
    stale = [
        o.key for o in list_objects(client, bucket, prefix) if o.key not in listed and "/" not in o.key[len(prefix) :]
    ]
    for start in range(0, len(stale), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[start : start + 1000]]})
    return manifest


def fetch_dir(client: Any, bucket: str, prefix: str, local_dir: Path) -> list[Path]:
    """Replace local_dir with the files the prefix's manifest lists; no manifest means no folder."""
    prefix = prefix.rstrip("/") + "/"
    try:
        body = client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
    except client.exceptions.NoSuchKey:
        raise FileNotFoundError(f"s3://{bucket}/{prefix} has no {MANIFEST}: it was never published") from None
    names = [f["name"] for f in json.loads(body)["files"]]
    replace_local_dir(
        local_dir, {n: (lambda path, key=prefix + n: client.download_file(bucket, key, str(path))) for n in names}
    )
    return [local_dir / n for n in names]
