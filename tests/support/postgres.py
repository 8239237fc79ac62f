"""A PostgreSQL server of our own on loopback (Debian's postgresql package), for the store's tests and
benchmarks/attacks.py."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.service import free_port


class Unavailable(RuntimeError):
    """No PostgreSQL server can start here; the message says why."""


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@contextlib.contextmanager
def postgres_server():
    """The URL of an empty database "fastfid" on a server that lives as long as the block."""
    binaries = _binaries()
    if binaries is None:
        raise Unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
    try:
        import psycopg
    except ImportError as error:
        raise Unavailable("psycopg is not installed") from error
    # Not under pytest's folder, which only root may enter: the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="fastfid-postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's postgres user
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            raise Unavailable("running as root without a 'postgres' user to start PostgreSQL as")
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        port = free_port()
        initdb = subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                                capture_output=True, text=True)
        if initdb.returncode:
            raise Unavailable(f"initdb failed: {initdb.stderr.strip()[-300:]}")
        start = subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                                "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start"],
                               capture_output=True, text=True)
        if start.returncode:
            raise Unavailable(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as connection:
                connection.execute("CREATE DATABASE fastfid")
            yield f"postgresql://postgres@127.0.0.1:{port}/fastfid"
        finally:
            subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                           capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
