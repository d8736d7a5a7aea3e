"""A private PostgreSQL cluster for fault tests: started with ``initdb``/``pg_ctl`` on a free port,
restartable and stoppable at will (the shared server at 127.0.0.1:5432 must never be restarted).

Run as root (CI here), the cluster belongs to the ``postgres`` system user (``initdb`` refuses
root). ``PrivateCluster.unavailable()`` says why a machine cannot host one, for ``pytest.skip``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))  # Debian: the real binaries
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        # not under pytest's tmp_path: that is private to root, and the server runs as postgres
        self.dir = Path(tempfile.mkdtemp(prefix="yilian-pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")

    @staticmethod
    def unavailable() -> str | None:
        if _bin_dir() is None:
            return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root without a 'postgres' system user to own a private cluster"
            if shutil.which("runuser") is None:
                return "runuser is missing (needed to start PostgreSQL as 'postgres')"
        return None

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/yilian"

    def start(self) -> PrivateCluster:
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8", "--locale=C")
        self._pg_ctl("start")
        if not getattr(self, "_created", False):
            self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "yilian")
            self._created = True
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                  "-w", "-t", "30", *extra, action)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (fast: connections are cut), stay down ``down_s``, start again."""
        self._pg_ctl("stop", "-m", "fast")
        time.sleep(down_s)
        self._pg_ctl("start")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
