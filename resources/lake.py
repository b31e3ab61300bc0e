"""The lake as a Dagster resource: where its root is (a local folder, or s3:// with a local mirror)
and how files reach S3. The layout and the records are kennel.lake's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import boto3
import dagster as dg
from botocore.config import Config
from botocore.handlers import disable_signing
from dagster_aws.s3 import S3Resource
from pydantic import Field

from kennel.lake import DatasetLake, Lake
from kennel.lake import s3 as s3_files


class BoundedS3Resource(S3Resource):
    """dagster-aws's S3Resource whose client gives up in bounded time when the endpoint goes away.

    dagster-aws sets only the retry count; its client waits 60 s to connect and 60 s for each read,
    so an endpoint that stops answering (rather than refusing) would hold a run for minutes per
    request. Here every request is retried in botocore's `standard` mode (connection errors,
    timeouts, throttling and 5xx answers; exponential backoff with jitter) up to `max_attempts`
    attempts in all (dagster-aws's field, default 5), each bounded by the two timeouts. What still
    fails is raised by kennel.lake.s3 as S3TransferError, naming the object and the endpoint.
    """

    connect_timeout_s: float = Field(default=5.0, description="Seconds to wait for a connection to the endpoint")
    read_timeout_s: float = Field(default=30.0, description="Seconds to wait for each read from the endpoint")

    def get_client(self) -> Any:
        # As dagster_aws.s3.utils.construct_s3_client, which takes no timeouts.
        client = boto3.session.Session(profile_name=self.profile_name).client(
            "s3",
            region_name=self.region_name,
            use_ssl=self.use_ssl,
            verify=self.verify,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(
                # total_max_attempts counts the first attempt, as dagster-aws's max_attempts says
                # (botocore's own max_attempts would count only the retries).
                retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                connect_timeout=self.connect_timeout_s,
                read_timeout=self.read_timeout_s,
            ),
        )
        if self.use_unsigned_session:
            client.meta.events.register("choose-signer.s3.*", disable_signing)
        return client


class LakeResource(dg.ConfigurableResource):
    """Lake root: a local folder (the embedded default) or s3://bucket/prefix.

    With an s3:// root every location names a file in the local `mirror` folder, where Spark and dbt
    work (neither can reach S3 here); ingestion publishes raw, clean, quarantine and quality objects
    from it to S3 and fetches raw days from S3 before cleaning them.
    """

    root: str
    mirror: str = Field(default="", description="Local working copy of an s3:// lake (KENNEL_LAKE_MIRROR)")
    s3: Optional[S3Resource] = None

    @property
    def is_remote(self) -> bool:
        return self.root.startswith("s3://")

    @property
    def local(self) -> Lake:
        """The lake's layout on local disk (the mirror of a remote lake)."""
        if not self.is_remote:
            return Lake(self.root)
        if not self.mirror:
            raise ValueError(f"the lake root {self.root} is on S3: set a local working folder (KENNEL_LAKE_MIRROR)")
        return Lake(self.mirror)

    def dataset(self, name: str) -> DatasetLake:
        return self.local.dataset(name)

    def location(self, local: Path) -> str:
        """Where a lake path lives for readers: the S3 URI of a remote lake, else the local path."""
        if not self.is_remote:
            return str(local)
        bucket, prefix = s3_files.split_uri(self.root)
        return f"s3://{bucket}/{prefix}{local.relative_to(self.local.root).as_posix()}"

    def _client(self) -> Any:
        if self.s3 is None:
            raise ValueError(f"the lake root {self.root} is on S3 but the lake has no S3 resource")
        return self.s3.get_client()

    def _bucket_key(self, local: Path) -> tuple[str, str]:
        bucket, _, key = self.location(local).removeprefix("s3://").partition("/")
        return bucket, key

    def publish_file(self, local: Path) -> None:
        """Upload one lake file to S3 (one object: readers see the old or the new one). Local lake: no-op."""
        if self.is_remote:
            s3_files.upload_file(self._client(), local, *self._bucket_key(local))

    def publish_dir(self, local_dir: Path) -> None:
        """Make the S3 folder hold local_dir's files, manifest last: readers see the old folder or the
        new one. Local lake: no-op."""
        if self.is_remote:
            s3_files.publish_dir(self._client(), local_dir, *self._bucket_key(local_dir))

    def fetch_dir(self, local_dir: Path) -> None:
        """Replace local_dir with the S3 folder's published files. Local lake: no-op."""
        if self.is_remote:
            s3_files.fetch_dir(self._client(), *self._bucket_key(local_dir), local_dir)
