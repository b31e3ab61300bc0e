"""S3 faults beyond a crash, against a real S3 HTTP endpoint (moto server on 127.0.0.1): the endpoint
going away before and in the middle of publishing a folder (bounded retries, a clear error, readers
keep the previous folder, a retry succeeds once it is back), an endpoint that never answers,
manifests that would write outside the local folder, and objects that differ from their manifest."""

import json
import socket
import time
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from kennel.lake import LakeIntegrityError
from kennel.lake import s3 as s3_files
from kennel.lake.s3 import MANIFEST, S3TransferError, list_objects
from resources.lake import BoundedS3Resource, LakeResource

BUCKET = "faults"
ROOT = f"s3://{BUCKET}/kennel"
DAY = "2026-01-01"
ATTEMPTS = 3
# Connection refused fails each attempt at once; the timeouts only bound an endpoint that hangs.
FAILURE_BOUND_S = 10.0


class Endpoint:
    """A moto server on one loopback port that can go away and come back on the same port. Moto keeps
    its buckets in the process, not in the server, so they survive a restart, as a real S3 service's
    do. (Werkzeug closes every connection after its answer, so no pooled connection outlives a stop.)"""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, self.port = self._server.get_host_and_port()
        self.url = f"http://{host}:{self.port}"
        self.running = True

    def stop(self) -> None:
        self._server.stop()  # returns once the listening socket is closed
        self.running = False

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()  # returns once the server listens
        self.running = True


@pytest.fixture(scope="module")
def endpoint():
    server = Endpoint()
    yield server
    if server.running:
        server.stop()


@pytest.fixture
def s3(endpoint) -> BoundedS3Resource:
    if not endpoint.running:  # left down by a test that failed during its outage
        endpoint.start()
    resource = BoundedS3Resource(
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        max_attempts=ATTEMPTS,
        connect_timeout_s=1.0,
        read_timeout_s=2.0,
    )
    client = resource.get_client()
    if BUCKET in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        for obj in list_objects(client, BUCKET, ""):
            client.delete_object(Bucket=BUCKET, Key=obj.key)
    else:
        client.create_bucket(Bucket=BUCKET)
    return resource


@pytest.fixture
def lake(s3, tmp_path) -> LakeResource:
    return LakeResource(root=ROOT, mirror=str(tmp_path / "mirror"), s3=s3)


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


OLD = {"a.csv": "id,x\n1,old\n", "b.csv": "id,x\n2,old\n"}
NEW = {"a.csv": "id,x\n1,new\n", "b.csv": "id,x\n2,new\n", "c.csv": "id,x\n3,new\n"}


def fresh_read(lake: LakeResource, tmp_path: Path, name: str) -> dict[str, str]:
    """What a reader on another machine gets: the published folder, fetched into an empty mirror."""
    reader = LakeResource(root=lake.root, mirror=str(tmp_path / name), s3=lake.s3)
    raw_dir = reader.dataset("credit_demo").raw_dir(DAY)
    reader.fetch_dir(raw_dir)
    return contents(raw_dir)


def test_endpoint_gone_before_a_publish_fails_clearly_in_bounded_time_and_a_retry_succeeds(endpoint, lake, tmp_path):
    raw_dir = write_folder(lake.dataset("credit_demo").raw_dir(DAY), OLD)
    lake.publish_dir(raw_dir)
    write_folder(raw_dir, NEW)

    endpoint.stop()
    started = time.monotonic()
    with pytest.raises(S3TransferError) as failed:
        lake.publish_dir(raw_dir)
    elapsed = time.monotonic() - started
    assert elapsed < FAILURE_BOUND_S, f"failing took {elapsed:.1f}s"
    message = str(failed.value)
    assert f"s3://{BUCKET}/kennel/raw/credit_demo/{DAY}/" in message
    assert endpoint.url in message and f"up to {ATTEMPTS} attempts" in message
    # A fetch that cannot reach S3 leaves the local folder as it was.
    with pytest.raises(S3TransferError, match=MANIFEST):
        lake.fetch_dir(raw_dir)
    assert contents(raw_dir) == NEW

    endpoint.start()
    assert fresh_read(lake, tmp_path, "before-retry") == OLD
    lake.publish_dir(raw_dir)
    assert fresh_read(lake, tmp_path, "after-retry") == NEW


def test_endpoint_gone_in_the_middle_of_a_publish_leaves_the_previous_folder_to_readers(endpoint, s3, lake, tmp_path):
    raw_dir = write_folder(lake.dataset("credit_demo").raw_dir(DAY), OLD)
    lake.publish_dir(raw_dir)
    write_folder(raw_dir, NEW)
    bucket, prefix = s3_files.split_uri(lake.location(raw_dir))

    # The endpoint goes away right after the first file of the new folder is stored: a.csv, whose
    # old version the published manifest names, has a new version on S3 now.
    client = s3.get_client()
    sent: list[str] = []

    def stop_after_the_first_upload(**_) -> None:
        if len(sent) == 1:
            endpoint.stop()

    client.meta.events.register("before-parameter-build.s3.PutObject", lambda params, **_: sent.append(params["Key"]))
    client.meta.events.register("after-call.s3.PutObject", stop_after_the_first_upload)
    started = time.monotonic()
    with pytest.raises(S3TransferError) as failed:
        s3_files.publish_dir(client, raw_dir, bucket, prefix)
    elapsed = time.monotonic() - started
    assert elapsed < FAILURE_BOUND_S, f"failing took {elapsed:.1f}s"
    assert not endpoint.running
    assert [key.rsplit("/", 1)[-1] for key in sent] == ["a.csv", "b.csv"]  # b.csv's attempts were refused
    message = str(failed.value)
    assert f"s3://{bucket}/{prefix}" in message and "b.csv" in message and endpoint.url in message

    endpoint.start()
    assert fresh_read(lake, tmp_path, "reader") == OLD  # the old folder, whole: not the new a.csv

    manifest = s3_files.publish_dir(client, raw_dir, bucket, prefix)
    assert fresh_read(lake, tmp_path, "after-retry") == NEW
    # Nothing of the old folder or of the failed attempt is left beside what the manifest names.
    keys = {o.key for o in list_objects(client, bucket, prefix)}
    assert keys == {prefix + MANIFEST} | {prefix + f["key"] for f in manifest["files"]}


def test_an_endpoint_that_accepts_but_never_answers_fails_within_the_timeouts(tmp_path):
    """A hung server (or a dead peer behind a live load balancer): each attempt ends at the read timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes connections; no one answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        hung = BoundedS3Resource(
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            max_attempts=ATTEMPTS,
            connect_timeout_s=0.5,
            read_timeout_s=0.5,
        )
        started = time.monotonic()
        with pytest.raises(S3TransferError, match=f"{MANIFEST} at {url} .*Read timeout"):
            s3_files.fetch_dir(hung.get_client(), BUCKET, "day/", tmp_path / "mirror")
        elapsed = time.monotonic() - started
    assert ATTEMPTS * 0.5 <= elapsed < FAILURE_BOUND_S, f"failing took {elapsed:.1f}s"
    assert not (tmp_path / "mirror").exists()


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "../escaped.csv", "bytes": 1},
        {"name": "/tmp/escaped.csv", "bytes": 1},
        {"name": "sub/escaped.csv", "bytes": 1},
        {"name": "..", "bytes": 1},
        {"name": "ok.csv", "key": "../../elsewhere/ok.csv", "bytes": 1},
        {"name": "ok.csv", "key": "/kennel/ok.csv", "bytes": 1},
    ],
)
def test_a_manifest_that_points_outside_its_folder_is_refused(s3, tmp_path, entry):
    client = s3.get_client()
    client.put_object(Bucket=BUCKET, Key=f"hostile/{MANIFEST}", Body=json.dumps({"files": [entry]}).encode())
    client.put_object(Bucket=BUCKET, Key="hostile/ok.csv", Body=b"x")
    local_dir = write_folder(tmp_path / "mirror" / "day", {"kept.csv": "kept"})
    with pytest.raises(ValueError, match=f"refusing .*{MANIFEST}|{MANIFEST}.*refusing"):
        s3_files.fetch_dir(client, BUCKET, "hostile/", local_dir)
    assert contents(local_dir) == {"kept.csv": "kept"}
    assert sorted(p.name for p in (tmp_path / "mirror").iterdir()) == ["day"]
    assert not (tmp_path / "escaped.csv").exists()


def test_an_object_changed_behind_its_manifest_is_refused_and_the_local_folder_kept(s3, tmp_path):
    client = s3.get_client()
    source = write_folder(tmp_path / "source", OLD)
    manifest = s3_files.publish_dir(client, source, BUCKET, "day/")
    changed = next(f for f in manifest["files"] if f["name"] == "a.csv")
    client.put_object(Bucket=BUCKET, Key=f"day/{changed['key']}", Body=b"id,x\n1,odd\n")  # same size
    local_dir = write_folder(tmp_path / "mirror", {"kept.csv": "kept"})
    with pytest.raises(LakeIntegrityError, match=f"s3://{BUCKET}/day/{changed['key']} holds"):
        s3_files.fetch_dir(client, BUCKET, "day/", local_dir)
    assert contents(local_dir) == {"kept.csv": "kept"}


def test_a_folder_published_before_generations_still_fetches(s3, tmp_path):
    """Manifests written by earlier code name flat keys (prefix/<name>) and carry no SHA-256."""
    client = s3.get_client()
    for name, text in OLD.items():
        client.put_object(Bucket=BUCKET, Key=f"flat/{name}", Body=text.encode())
    listing = {"files": [{"name": n, "bytes": len(t.encode())} for n, t in OLD.items()]}
    client.put_object(Bucket=BUCKET, Key=f"flat/{MANIFEST}", Body=json.dumps(listing).encode())
    s3_files.fetch_dir(client, BUCKET, "flat/", tmp_path / "mirror")
    assert contents(tmp_path / "mirror") == OLD
