"""Servers a cluster provides, started on this machine's loopback for the rehearsal (and the
tests that need them): PostgreSQL (Debian's binaries, initdb + pg_ctl) and an S3 endpoint
(moto's server, the S3 REST protocol)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class ServiceError(RuntimeError):
    """A local server could not be started; the message says what to install or check."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(d / name) for d in PG_BIN_DIRS if (d / name).exists()), None)
    if found is None:
        raise ServiceError(f"PostgreSQL's {name} is not installed: `make test` installs it "
                           "(or `apt-get install postgresql`)")
    return found


def unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root: then run it as `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServiceError("running as root and neither a `postgres` nor a `nobody` user exists")


@dataclass
class PostgresServer:
    """A PostgreSQL server in its own folder on 127.0.0.1, one database, password auth."""

    folder: Path
    port: int
    user: str | None
    username: str = "dagster"
    password: str = "local-only-password"
    database: str = "dagster"

    @classmethod
    def create(cls) -> PostgresServer:
        # Not under a private temp folder: the server's user must reach it.
        return cls(Path(tempfile.mkdtemp(prefix="trending-pg-")), free_port(),
                   unprivileged_user())

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            log = self.folder / "server.log"
            raise ServiceError(f"{' '.join(args[:2])} failed ({result.returncode}): "
                               f"{result.stderr}\n{log.read_text() if log.exists() else ''}")

    def init(self) -> None:
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.folder, password_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(pg_binary("initdb"), "-D", str(self.folder / "data"), "-U", self.username,
                  "--auth=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8",
                  "--no-sync")

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c unix_socket_directories={self.folder} -c fsync=off")
        self._run(pg_binary("pg_ctl"), "-D", str(self.folder / "data"), "-l",
                  str(self.folder / "server.log"), "-o", options, "-w", "-t", "30", "start")

    def create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.username,
                                password=self.password, dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        conn.cursor().execute(f"CREATE DATABASE {self.database}")
        conn.close()

    def stop(self) -> None:
        self._run(pg_binary("pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w",
                  "stop")

    def destroy(self) -> None:
        """Stop at once (whatever state it is in) and remove the folder."""
        subprocess.run([*(["runuser", "-u", self.user, "--"] if self.user else []),
                        pg_binary("pg_ctl"), "-D", str(self.folder / "data"), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
