"""A private PostgreSQL for the day-lock tests and the Celery test's Dagster instance: `initdb` in a temporary
directory, `pg_ctl start` on a free loopback port (it returns once the server accepts connections), `pg_ctl stop`
and the directory removed after.

Debian's `postgresql` (bin/setup installs it) keeps `initdb` and `pg_ctl` in /usr/lib/postgresql/<version>/bin,
off the PATH. PostgreSQL refuses to run as root, so under root (CI) both run as the package's `postgres` user,
in a directory of /tmp that user owns."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from usage_pipeline_tests.dagster_dev import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    assert found, f"{name} is installed by bin/setup (Debian's postgresql)"
    return found


@contextmanager
def run_postgres() -> Iterator[str]:
    """A running PostgreSQL; yields a URL of its `postgres` database (trust authentication, loopback only)."""
    root = Path(tempfile.mkdtemp(prefix="usage-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    try:
        run(_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        run(_binary("pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(root / "postgres.log"),
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(_binary("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(data))
    finally:
        shutil.rmtree(root, ignore_errors=True)
