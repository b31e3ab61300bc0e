"""Backup and restore of a Kennel environment: the lake, the model store and the Dagster instance's state.

A backup is a folder (local, or s3://bucket/prefix) holding three parts and, written last, a manifest:

    lake/…           the lake root, minus what is rebuilt or transient (see `lake_files`)
    bentoml/…        $BENTOML_HOME's models/ and bentos/: the champion's model and Bento, byte for byte
    dagster_home/…   $DAGSTER_HOME: every SQLite database (runs, event logs, schedules, sensor cursors and
                     ticks) copied with sqlite3's online backup API (a consistent copy while the daemon
                     writes), plus its other files
    instance/postgres.sql   instead, for an instance whose dagster.yaml keeps storage in Postgres: pg_dump
    backup_manifest.json    BackupManifest: every file's path, size and SHA-256, written last

A backup without its manifest was cut short and is refused. Restore reads the manifest, fetches every file
into a staging folder beside the target and checks each against the manifest before anything in the
target changes; only then is each part swapped in (a rename). A target that already holds state is
refused unless `force` is given. Nothing here imports Dagster: the instance's state is its files.

A lake whose root is s3://bucket/prefix is worked on in a local mirror (KENNEL_LAKE_MIRROR): ingestion
publishes raw days and labels (a generation of objects and a `_manifest.json` naming them), clean and
quarantine files and quality records to S3; training sets, models, the champion registry, monitoring
records, the decision log, the prediction log and the request-id key live only in the mirror. Its backup
holds two lake parts:

    lake_s3/…        every object under the S3 root (key relative to the root), minus the rebuilt or
                     transient top folders (and raw/ without include_raw)
    lake/…           the mirror's files that S3 does not hold: not an object's key, nor in a folder S3
                     holds a `_manifest.json` for (the mirror's copy of a published raw day or labels)

For what is published, S3 is the truth: the mirror's copy was written before its upload, so the two
differ only where a publish was cut short, and then S3 holds what every other machine reads (a quality
record on S3 names files that are on S3). The mirror is the truth for everything else: nothing else
holds it. Restore uploads lake_s3/ into the target's (empty) S3 root, data before records, and rebuilds
the mirror: the mirror-only files, plus the mirror's copy of each published file (a plain object copied
from the verified staging, a published folder fetched back through its manifest), so the lake's readers
in the mirror find every published day as before.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from kennel.lake import Lake, configured_mirror, configured_root, sha256_of
from kennel.lake import s3 as s3_files
from kennel.lake.champion import ChampionRegistry

MANIFEST = "backup_manifest.json"
LAKE_PART, STORE_PART, INSTANCE_PART = "lake", "bentoml", "dagster_home"
LAKE_S3_PART = "lake_s3"  # an s3:// lake's objects; LAKE_PART then holds its mirror's own files
RECORD_SUFFIXES = (".json", ".jsonl")
POSTGRES_DUMP = "instance/postgres.sql"
# BentoML's stores; its other folders (tmp/, envs/) are caches rebuilt on demand.
STORE_FOLDERS = ("models", "bentos")
# The instance's files that are not its state: telemetry ids and the compute-log upload queue.
INSTANCE_EXCLUDED = (".telemetry", ".logs_queue", ".nux")
SQLITE_HEADER = b"SQLite format 3\x00"
PG_BIN_ENV = "KENNEL_PG_BIN_DIR"
StorageKind = Literal["sqlite", "postgres", "none"]


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message names the file or setting and what to do."""


class BackupFile(BaseModel):
    path: str  # relative to the backup's root, POSIX
    bytes: int
    sha256: str
    mode: int  # permission bits, so a secret (the request-id key) comes back 0600


class BackupManifest(BaseModel):
    """What a backup holds; written last, so a backup with one is complete."""

    format: int = 1
    created_at: str
    kennel_version: str
    lake_root: str  # for an s3:// lake: its mirror
    lake_s3_root: str | None = None
    bentoml_home: str
    dagster_home: str | None
    instance_storage: StorageKind
    includes_raw: bool
    champions: dict[str, str | None]  # data set → champion model tag (None: no champion yet)
    files: list[BackupFile]


@dataclass(frozen=True)
class Environment:
    """Where an environment keeps its state. A lake on S3 has its root in lake_s3_root
    (s3://bucket/prefix) and its mirror in lake_root."""

    lake_root: Path
    bentoml_home: Path
    dagster_home: Path | None
    pg_bin_dir: Path | None = None  # where pg_dump and psql are; None: found on PATH
    lake_s3_root: str | None = None

    @classmethod
    def from_env(cls) -> Environment:
        """The environment the `kennel` command and the project use: KENNEL_LAKE_ROOT, BENTOML_HOME,
        DAGSTER_HOME and KENNEL_PG_BIN_DIR as set (project defaults otherwise)."""
        from kennel.serving.model_store import DEFAULT_BENTOML_HOME

        root = configured_root()
        s3_root = None
        if root.startswith("s3://"):
            _split(root)  # a root naming no bucket is refused here, by name
            s3_root, root = root, configured_mirror()
        home = os.environ.get("DAGSTER_HOME")
        pg_bin = os.environ.get(PG_BIN_ENV)
        return cls(
            lake_root=Lake(root).root,
            bentoml_home=Path(os.environ.get("BENTOML_HOME") or DEFAULT_BENTOML_HOME).resolve(),
            dagster_home=Path(home).resolve() if home else None,
            pg_bin_dir=Path(pg_bin) if pg_bin else None,
            lake_s3_root=s3_root,
        )


# --- what goes in --------------------------------------------------------------------------------------------


def _transient(name: str) -> bool:
    """Lock files and half-written temporaries (write_atomically's `.name.<uuid>.tmp`, S3 downloads)."""
    return name.endswith((".lock", ".tmp")) or name.startswith(".") and ".tmp" in name


def _walk(root: Path, skip_top: tuple[str, ...] = ()) -> Iterator[Path]:
    """The regular files under root, in a stable order; symbolic links are refused (a backup copies bytes)."""
    if not root.is_dir():
        return
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if d not in skip_top]
        dirs.sort()
        for name in sorted(names):
            path = here / name
            if path.is_symlink():
                raise BackupError(f"{path} is a symbolic link; a backup copies files only")
            if here == root and name in skip_top or _transient(name):
                continue
            yield path


def _top_folder(lake: Lake, location: Path) -> str:
    """The lake's top-level folder holding `location` (kennel.lake knows the layout, not this module)."""
    return location.relative_to(lake.root).parts[0]


def lake_files(lake_root: Path, *, include_raw: bool) -> Iterator[Path]:
    """The lake's files a backup holds: all but locks, temporaries and the rebuilt or transient parts:
    half-written outputs before their swap (_staging) and the dbt warehouse (rebuilt from the clean tables
    by every training run; a DuckDB file copied while dbt writes it would not be consistent). raw/ too
    unless include_raw (landed input is the source of truth, but may be large and kept elsewhere)."""
    yield from _walk(Lake(lake_root).root, _skipped_top_folders(lake_root, include_raw=include_raw))


def _skipped_top_folders(lake_root: Path, *, include_raw: bool) -> tuple[str, ...]:
    lake = Lake(lake_root)
    any_dataset = lake.dataset("any")
    skip = [_top_folder(lake, lake.staging()), _top_folder(lake, any_dataset.warehouse())]
    if not include_raw:
        skip.append(_top_folder(lake, any_dataset.raw_root()))
    return tuple(skip)


def _is_record(path: str | Path) -> bool:
    return str(path).endswith(RECORD_SUFFIXES)


class _S3Lake:
    """The objects of a lake whose root is on S3, as paths relative to the root (the mirror's layout)."""

    def __init__(self, client: Any, root: str, skip_top: tuple[str, ...] = ()):
        self.client, self.root, self.skip_top = client, root, skip_top
        self.bucket, self.prefix = _split(root)

    def objects(self) -> dict[str, str]:
        """Relative path → key, for every object but those under a skipped top folder."""
        found = {o.key[len(self.prefix) :]: o.key for o in s3_files.list_objects(self.client, self.bucket, self.prefix)}
        return {rel: key for rel, key in found.items() if rel.split("/")[0] not in self.skip_top}

    def download(self, rel: str, key: str, target: Path) -> None:
        try:
            s3_files.download(self.client, self.bucket, key, target)
        except s3_files.S3TransferError as exc:
            if "404" in str(exc) or "Not Found" in str(exc):
                raise BackupError(
                    f"s3://{self.bucket}/{key} was removed while it was being backed up; run the backup again"
                ) from None
            raise


def instance_storage(dagster_home: Path | None) -> StorageKind:
    """How the instance keeps its state, from its dagster.yaml."""
    if dagster_home is None:
        return "none"
    settings = _instance_settings(dagster_home)
    storage = settings.get("storage") or {}
    modules = [str((settings.get(k) or {}).get("module", "")) for k in ("run_storage", "event_log_storage")]
    if "postgres" in storage or any("postgres" in m for m in modules):
        return "postgres"
    return "sqlite"


def _instance_settings(dagster_home: Path) -> dict[str, Any]:
    path = dagster_home / "dagster.yaml"
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BackupError(f"{path} is not valid YAML: {exc}") from None


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (sqlite3's online backup API, not a file copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def _postgres_env(dagster_home: Path) -> dict[str, str]:
    """libpq settings (PGHOST, …) for the instance's Postgres storage, from its dagster.yaml. Values given
    as {env: NAME} are read from the environment, as Dagster reads them."""
    settings = _instance_settings(dagster_home)
    block = (settings.get("storage") or {}).get("postgres") or (settings.get("run_storage") or {}).get("config")
    if not isinstance(block, dict):
        raise BackupError(f"{dagster_home / 'dagster.yaml'}: no storage.postgres settings to reach the database")

    def value(raw: Any, name: str) -> str:
        if isinstance(raw, dict) and "env" in raw:
            if raw["env"] not in os.environ:
                raise BackupError(f"{dagster_home / 'dagster.yaml'}: {name} comes from ${raw['env']}, which is not set")
            return os.environ[raw["env"]]
        return str(raw)

    if "postgres_url" in block:
        return {"PGDATABASE": value(block["postgres_url"], "postgres_url")}  # libpq takes a URL as the dbname
    db = block.get("postgres_db") or {}
    keys = {
        "hostname": "PGHOST",
        "port": "PGPORT",
        "username": "PGUSER",
        "password": "PGPASSWORD",
        "db_name": "PGDATABASE",
    }
    return {env: value(db[key], f"postgres_db.{key}") for key, env in keys.items() if key in db}


def _pg_tool(env: Environment, name: str) -> str:
    found = str(env.pg_bin_dir / name) if env.pg_bin_dir else shutil.which(name)
    if not found or not Path(found).is_file():
        where = f"in {env.pg_bin_dir} ({PG_BIN_ENV})" if env.pg_bin_dir else f"on PATH (or set {PG_BIN_ENV})"
        raise BackupError(f"the instance keeps its state in Postgres, but there is no {name} {where}")
    return found


def _run_pg(env: Environment, tool: str, args: list[str], home: Path) -> str:
    """Run pg_dump/psql with the instance's connection settings in its environment (never on the command
    line, so the password shows in no process list or log)."""
    settings = _postgres_env(home)
    result = subprocess.run(
        [_pg_tool(env, tool), *args],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        # libpq may echo a postgres_url (password included) in its errors: secrets are masked first.
        message = result.stderr.strip()[-2000:]
        url = settings.get("PGDATABASE", "")
        for secret in (settings.get("PGPASSWORD"), url if "://" in url else None):
            if secret:
                message = message.replace(secret, "***")
        raise BackupError(f"{tool} failed (exit {result.returncode}): {message}")
    return result.stdout


# --- backup --------------------------------------------------------------------------------------------------


def _champions(lake_root: Path) -> dict[str, str | None]:
    lake = Lake(lake_root)
    registry = lake.dataset("any").registry_dir().parent  # one folder per data set
    if not registry.is_dir():
        return {}
    champions = {}
    for folder in sorted(p for p in registry.iterdir() if p.is_dir()):
        current = ChampionRegistry(lake.dataset(folder.name)).current()
        champions[folder.name] = current.model_tag if current else None
    return champions


def _snapshot(env: Environment, staging: Path, include_raw: bool, client: Any) -> list[BackupFile]:
    """Copy every part into `staging`; the checksums are of the copies (a log appended meanwhile is
    backed up as far as it was copied, consistently with its checksum)."""
    held: dict[str, str] = {}  # an s3:// lake's objects: relative path → key
    published_dirs: set[PurePosixPath] = set()
    if env.lake_s3_root is not None:
        s3_lake = _S3Lake(client, env.lake_s3_root, _skipped_top_folders(env.lake_root, include_raw=include_raw))
        # Records first here too: the records of one listing, then every other object of a later listing,
        # which holds every file a record copied names (a publish uploads its files before its record).
        for rel, key in s3_lake.objects().items():
            if _is_record(rel):
                s3_lake.download(rel, key, staging / LAKE_S3_PART / rel)
        held = s3_lake.objects()
        published_dirs = {PurePosixPath(rel).parent for rel in held if PurePosixPath(rel).name == s3_files.MANIFEST}
    copies: list[tuple[Path, Path]] = []
    for path in lake_files(env.lake_root, include_raw=include_raw):
        relative = PurePosixPath(path.relative_to(env.lake_root).as_posix())
        if relative.as_posix() in held or relative.parent in published_dirs:
            continue  # the mirror's copy of a published file: S3's is backed up
        copies.append((path, staging / LAKE_PART / relative))
    for folder in STORE_FOLDERS:
        for path in _walk(env.bentoml_home / folder):
            copies.append((path, staging / STORE_PART / path.relative_to(env.bentoml_home)))
    storage = instance_storage(env.dagster_home)
    if env.dagster_home is not None:
        for path in _walk(env.dagster_home, INSTANCE_EXCLUDED):
            target = staging / INSTANCE_PART / path.relative_to(env.dagster_home)
            if path.name.endswith(("-wal", "-shm", "-journal")):
                continue  # folded into the database's consistent copy
            if _is_sqlite(path):
                _copy_sqlite(path, target)
            else:
                copies.append((path, target))
    # Records first, then the files they name: a run that publishes during the backup writes its new
    # version's files before the record naming them, so every record copied names files that exist and
    # are copied after it (a version published later is copied unnamed, which is harmless).
    copies.sort(key=lambda pair: pair[0].suffix not in RECORD_SUFFIXES)
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(source, target)
        except FileNotFoundError:
            raise BackupError(f"{source} was removed while it was being backed up; run the backup again") from None
    for rel, key in held.items():
        if not (staging / LAKE_S3_PART / rel).is_file():
            s3_lake.download(rel, key, staging / LAKE_S3_PART / rel)
    if storage == "postgres":
        assert env.dagster_home is not None
        dump = staging / POSTGRES_DUMP
        dump.parent.mkdir(parents=True, exist_ok=True)
        # --clean --if-exists: the dump drops what it recreates, so a forced restore replaces a database's
        # Dagster tables (and a restore into a fresh one drops nothing).
        pg_dump_args = ["--no-owner", "--no-privileges", "--clean", "--if-exists", "--file", str(dump)]
        _run_pg(env, "pg_dump", pg_dump_args, env.dagster_home)
    files = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        files.append(
            BackupFile(
                path=path.relative_to(staging).as_posix(),
                bytes=path.stat().st_size,
                sha256=sha256_of(path),
                mode=path.stat().st_mode & 0o777,
            )
        )
    return files


def backup(
    destination: str, env: Environment | None = None, *, include_raw: bool = True, s3_client: Any = None
) -> BackupManifest:
    """Back the environment up to a local folder (new or empty) or s3://bucket/prefix (holding no backup).
    The manifest goes last: a backup cut short has none, and restore refuses it."""
    env = env or Environment.from_env()
    if not env.lake_root.is_dir():
        what = "the lake's mirror" if env.lake_s3_root else "the lake root"
        raise BackupError(f"{what} {env.lake_root} is not a folder: nothing to back up")
    remote = destination.startswith("s3://")
    client = s3_client or _s3_client() if remote or env.lake_s3_root else None
    if env.lake_s3_root and (destination.rstrip("/") + "/").startswith(env.lake_s3_root.rstrip("/") + "/"):
        raise BackupError(f"{destination} is inside the lake's S3 root {env.lake_s3_root}; back up elsewhere")
    if remote:
        bucket, prefix = _split(destination)
        if s3_files.list_objects(client, bucket, prefix):
            raise BackupError(f"{destination} already holds objects; back up to a new prefix")
        work = Path(tempfile.mkdtemp(prefix="kennel-backup-"))
    else:
        work = Path(destination).expanduser().resolve()
        if work.exists() and (not work.is_dir() or any(work.iterdir())):
            raise BackupError(f"{work} is not an empty folder; back up to a new one")
        work.mkdir(parents=True, exist_ok=True)
    try:
        files = _snapshot(env, work, include_raw, client)
        manifest = BackupManifest(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            kennel_version=version("kennel"),
            lake_root=str(env.lake_root),
            lake_s3_root=env.lake_s3_root,
            bentoml_home=str(env.bentoml_home),
            dagster_home=str(env.dagster_home) if env.dagster_home else None,
            instance_storage=instance_storage(env.dagster_home),
            includes_raw=include_raw,
            champions=_champions(env.lake_root),
            files=files,
        )
        if remote:
            for entry in files:
                s3_files.upload_file(client, work / entry.path, bucket, prefix + entry.path)
            (work / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
            s3_files.upload_file(client, work / MANIFEST, bucket, prefix + MANIFEST)
        else:
            from kennel.lake import write_atomically

            write_atomically(work / MANIFEST, manifest.model_dump_json(indent=2))
    finally:
        if remote:
            shutil.rmtree(work, ignore_errors=True)
    return manifest


# --- restore -------------------------------------------------------------------------------------------------


def _s3_client() -> Any:
    from kennel.onboarding.landed import s3_client

    return s3_client()


def _split(uri: str) -> tuple[str, str]:
    try:
        return s3_files.split_uri(uri)
    except ValueError as exc:
        raise BackupError(str(exc)) from None


def _safe(path: str) -> str:
    """A manifest path that stays inside the backup (no absolute path, no `..`)."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts or "\\" in path or "\0" in path:
        raise BackupError(f"the manifest lists {path!r}, which leaves the backup's folder; refusing it")
    return path


def read_manifest(source: str, s3_client: Any = None) -> BackupManifest:
    if source.startswith("s3://"):
        client = s3_client or _s3_client()
        bucket, prefix = _split(source)
        with tempfile.TemporaryDirectory(prefix="kennel-manifest-") as tmp:
            try:
                s3_files.download(client, bucket, prefix + MANIFEST, Path(tmp) / MANIFEST)
            except s3_files.S3TransferError as exc:
                if "404" in str(exc) or "Not Found" in str(exc):
                    raise BackupError(f"{source} has no {MANIFEST}: not a complete backup (cut short?)") from None
                raise
            text = (Path(tmp) / MANIFEST).read_text(encoding="utf-8")
    else:
        path = Path(source).expanduser() / MANIFEST
        if not path.is_file():
            raise BackupError(f"{source} has no {MANIFEST}: not a complete backup (cut short?)")
        text = path.read_text(encoding="utf-8")
    return BackupManifest.model_validate_json(text)


def _holds_state(env: Environment) -> list[str]:
    """What in the target environment would be overwritten."""
    held = []
    if env.lake_root.is_dir() and any(env.lake_root.iterdir()):
        held.append(f"the lake {env.lake_root}")
    for folder in STORE_FOLDERS:
        if (env.bentoml_home / folder).is_dir() and any((env.bentoml_home / folder).iterdir()):
            held.append(f"the model store {env.bentoml_home / folder}")
    if env.dagster_home is not None and env.dagster_home.is_dir():
        if any(p.name != "dagster.yaml" and p.name not in INSTANCE_EXCLUDED for p in env.dagster_home.iterdir()):
            held.append(f"the Dagster instance {env.dagster_home}")
        if instance_storage(env.dagster_home) == "postgres" and _postgres_tables(env, env.dagster_home):
            # Named by its settings' file: the database's own name may be a URL holding the password.
            held.append(f"the Postgres database of the Dagster instance {env.dagster_home / 'dagster.yaml'}")
    return held


def _postgres_tables(env: Environment, home: Path) -> int:
    """How many tables the instance's Postgres database holds in its public schema (Dagster's)."""
    query = "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'"
    return int(_run_pg(env, "psql", ["--no-psqlrc", "--tuples-only", "--no-align", "--command", query], home))


def _fetch(source: str, manifest: BackupManifest, staging: Path, s3_client: Any) -> None:
    """Every file the manifest lists, into staging, each checked against its size and SHA-256."""
    remote = source.startswith("s3://")
    if remote:
        client = s3_client or _s3_client()
        bucket, prefix = _split(source)
    for entry in manifest.files:
        target = staging / _safe(entry.path)
        if remote:
            s3_files.download(client, bucket, prefix + entry.path, target)
        else:
            origin = Path(source).expanduser() / entry.path
            if not origin.is_file():
                raise BackupError(f"{entry.path} is listed in the manifest but missing from {source}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, target)
        size, digest = target.stat().st_size, sha256_of(target)
        if (size, digest) != (entry.bytes, entry.sha256):
            raise BackupError(
                f"{entry.path} in {source} holds {size} bytes, sha256 {digest}, but the manifest says {entry.bytes} "
                f"bytes, sha256 {entry.sha256}: the backup is damaged; nothing was restored"
            )
        target.chmod(entry.mode)


def _relocate_lake(lake: Path, moves: dict[str, str]) -> None:
    """Records name model folders by absolute path in the lake (and may name the S3 root); a lake
    restored under another root gets those paths rewritten to the new root (`moves`: old → new)."""
    moves = {old.rstrip("/") + "/": new.rstrip("/") + "/" for old, new in moves.items() if old != new}
    if not moves:
        return
    for path in lake.rglob("*"):
        if path.is_file() and _is_record(path.name):
            text = path.read_text(encoding="utf-8")
            if any(old in text for old in moves):
                for old, new in moves.items():
                    text = text.replace(old, new)
                path.write_text(text, encoding="utf-8")


def _publish_lake_objects(s3_lake: _S3Lake, staged: Path, mirror: Path) -> None:
    """Upload the backed-up objects under the target's S3 root, each record after the data files (a reader
    of the new root sees a record only once the files it names are there); then give the staged mirror its
    copy of each published file: a plain object copied, a published folder fetched back through its
    manifest (each file checked against it)."""
    files = sorted((p for p in staged.rglob("*") if p.is_file()), key=lambda p: (_is_record(p.name), str(p)))
    for path in files:
        s3_files.upload_file(s3_lake.client, path, s3_lake.bucket, s3_lake.prefix + path.relative_to(staged).as_posix())
    for path in files:
        relative = path.relative_to(staged)
        if path.name == s3_files.MANIFEST:
            key = s3_lake.prefix + relative.parent.as_posix()
            s3_files.fetch_dir(s3_lake.client, s3_lake.bucket, key, mirror / relative.parent)
        elif not any(part.startswith(s3_files.GENERATION_PREFIX) for part in relative.parts):
            (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, mirror / relative)


def _swap_in(staged: Path, target: Path) -> None:
    """Replace `target` with `staged` by renames (the old one removed last)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    if target.exists():
        target.rename(old)
    try:
        shutil.move(staged, target)
    except BaseException:
        if old.exists():
            shutil.rmtree(target, ignore_errors=True)
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def restore(
    source: str,
    env: Environment | None = None,
    *,
    force: bool = False,
    restore_instance: bool = True,
    s3_client: Any = None,
) -> BackupManifest:
    """Restore a backup into the environment. Refused: a backup without manifest, a damaged file (named),
    a target holding state (unless force), an instance of another storage kind. Every file is fetched and
    verified into staging first; then a Postgres instance's dump is loaded (one transaction), an s3:// lake's
    objects are uploaded under the target's S3 root (which must hold none, unless force), and the lake (or
    mirror), the model store and the instance's folder are swapped in.
    restore_instance=False leaves the Dagster instance alone (a restore run inside that instance)."""
    env = env or Environment.from_env()
    manifest = read_manifest(source, s3_client)
    target = replace(env, dagster_home=env.dagster_home if restore_instance else None)
    held = _holds_state(target)
    s3_lake = None
    if (manifest.lake_s3_root is None) != (env.lake_s3_root is None):
        backed = f"a lake on S3 ({manifest.lake_s3_root})" if manifest.lake_s3_root else "a local lake"
        here = f"on S3 ({env.lake_s3_root})" if env.lake_s3_root else f"local ({env.lake_root})"
        raise BackupError(
            f"the backup holds {backed}, but the target lake root is {here}: restore it into a lake of its kind"
        )
    if env.lake_s3_root is not None:
        s3_lake = _S3Lake(s3_client or _s3_client(), env.lake_s3_root)
        if s3_lake.objects():
            held.append(f"the lake's S3 root {env.lake_s3_root}")
    if not force and held:
        raise BackupError(f"refusing to restore over existing state ({'; '.join(held)}); use --force to replace it")
    if target.dagster_home is not None:
        kind = instance_storage(target.dagster_home)
        backed = manifest.instance_storage
        if backed != "none" and kind != backed and (target.dagster_home / "dagster.yaml").is_file():
            raise BackupError(
                f"the backup holds a {backed} Dagster instance, but {target.dagster_home / 'dagster.yaml'} "
                f"keeps its storage in {kind}: point DAGSTER_HOME at an instance of the same kind"
            )
    env.lake_root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kennel-restore-", dir=env.lake_root.parent))
    try:
        _fetch(source, manifest, staging, s3_client)
        moves = {manifest.lake_root: str(env.lake_root)}
        if manifest.lake_s3_root and env.lake_s3_root:
            moves[manifest.lake_s3_root] = env.lake_s3_root
        for part in (LAKE_PART, LAKE_S3_PART):
            _relocate_lake(staging / part, moves)
        restore_instance_here = target.dagster_home is not None and manifest.instance_storage != "none"
        if restore_instance_here and manifest.instance_storage == "postgres":
            # First, in one transaction: a database that refuses the dump (unreachable, not empty) leaves the
            # lake and the model store untouched too.
            _load_postgres_dump(target, staging)
        (staging / LAKE_PART).mkdir(exist_ok=True)
        if s3_lake is not None:
            _publish_lake_objects(s3_lake, staging / LAKE_S3_PART, staging / LAKE_PART)
        _swap_in(staging / LAKE_PART, env.lake_root)
        for folder in STORE_FOLDERS:
            (staging / STORE_PART / folder).mkdir(parents=True, exist_ok=True)
            _swap_in(staging / STORE_PART / folder, env.bentoml_home / folder)
        if restore_instance_here:
            _restore_instance(target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _load_postgres_dump(env: Environment, staging: Path) -> None:
    assert env.dagster_home is not None
    restore_args = ["--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1"]
    _run_pg(env, "psql", [*restore_args, "--file", str(staging / POSTGRES_DUMP)], env.dagster_home)


def _restore_instance(env: Environment, staging: Path) -> None:
    home = env.dagster_home
    assert home is not None
    staged = staging / INSTANCE_PART
    staged.mkdir(parents=True, exist_ok=True)
    # The target's dagster.yaml is this environment's configuration (its database, its run launcher): kept.
    if (home / "dagster.yaml").is_file():
        shutil.copy2(home / "dagster.yaml", staged / "dagster.yaml")
    _swap_in(staged, home)
