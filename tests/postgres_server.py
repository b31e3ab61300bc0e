"""A real PostgreSQL server for tests, from the binaries of the pgserver wheel (a dev dependency).

PostgreSQL refuses to run as root, and CI runs the tests as root: there the server runs as `nobody`, from a copy
of the wheel's binaries in a temporary folder that user can reach (a clone under /root is not), with its data
folder owned by it. As any other user it runs as that user. It listens on 127.0.0.1 on a free port, its socket
and everything else in the temporary folder, which is removed when the server stops.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from test_serving import free_port

UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str
    bin_dir: Path  # initdb, postgres, pg_ctl, pg_dump, pg_restore, psql... of the server's version

    def connect(self, database: str | None = None) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            connect_timeout=5,
        )

    def client_env(self) -> dict[str, str]:
        """The libpq variables that point pg_dump, psql... at this server."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.database,
        }


def _wheel_root() -> Path:
    """The pgserver wheel's folder: pginstall/{bin,lib,share} inside it, libpq in ../pgserver.libs (the client
    binaries find it there through their RPATH $ORIGIN/../../../pgserver.libs)."""
    import pgserver

    return Path(pgserver.__file__).parent


def _reachable_install(root: Path, as_root: bool) -> Path:
    """The bin folder to run the server from. As root, a copy under `root` with the wheel's layout, readable by
    the unprivileged user: about 20 MB (the headers and static libraries are left out), well under a second."""
    wheel = _wheel_root()
    if not as_root:
        return wheel / "pginstall" / "bin"
    install = root / "pgserver" / "pginstall"
    for part in ("bin", "share", "lib/postgresql"):  # lib/postgresql: the server's loadable modules (plpgsql)
        shutil.copytree(wheel / "pginstall" / part, install / part)
    shutil.copytree(wheel.parent / "pgserver.libs", root / "pgserver.libs")
    return install / "bin"


def _run_as(user: pwd.struct_passwd | None) -> dict:
    """subprocess keyword arguments that run a command as `user` (None: as ourselves)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextmanager
def postgres_server(database: str = "kennel") -> Iterator[PostgresServer]:
    """Start a fresh PostgreSQL server with a password-protected superuser and one database; stop it and remove
    its files however the block ends."""
    as_root = os.geteuid() == 0
    server_user = pwd.getpwnam(UNPRIVILEGED_USER) if as_root else None
    as_server = _run_as(server_user)
    # Not pytest's tmp_path: its folders are private to the user running pytest (mode 700), and the server's
    # user must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="kennel-postgres-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        root.chmod(0o755)
        bin_dir = _reachable_install(root, as_root)
        data, sockets, log = root / "data", root / "sockets", root / "server.log"
        password = secrets.token_hex(16)
        password_file = root / "password"
        password_file.write_text(password)
        data.mkdir(mode=0o700)
        sockets.mkdir()
        if server_user is not None:
            for path in (password_file, data, sockets):
                os.chown(path, server_user.pw_uid, server_user.pw_gid)
        superuser = "kennel"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                f"--pgdata={data}",
                f"--username={superuser}",
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a throwaway cluster: no fsync of the new files
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **as_server,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        password_file.unlink()

        port = free_port()
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={sockets}",
                    "-c",
                    "fsync=off",  # a throwaway cluster: speed over durability
                ],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest reaches the server only through our stop below
                **as_server,
            )
        server = PostgresServer("127.0.0.1", port, superuser, password, "postgres", bin_dir)
        _wait_until_ready(server, process, log)
        connection = server.connect()
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{database}"')
        finally:
            connection.close()
        yield PostgresServer("127.0.0.1", port, superuser, password, database, bin_dir)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(server: PostgresServer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            server.connect().close()
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"postgres not accepting connections after {START_TIMEOUT_S:.0f}s ({error}):\n"
                    f"{log.read_text(errors='replace')}"
                ) from error
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: roll back open transactions, close connections, stop); killed if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            pass
        # The whole session: the postmaster's children too, which a killed postmaster leaves behind.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
