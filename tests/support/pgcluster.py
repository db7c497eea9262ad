"""A private PostgreSQL cluster for fault tests: initdb into a temporary folder, serve it on a
free 127.0.0.1 port with trust auth, and stop, start or restart it (`-m immediate`: a crash)
whenever a test likes, without touching the machine's own PostgreSQL.

The Debian binaries live under /usr/lib/postgresql/<version>/bin; `PG_BIN` overrides. The
server refuses to run as root, so as root every command runs as the `postgres` user through
`runuser`, in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

_TIMEOUT = 30  # seconds pg_ctl may wait for a start or a stop


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl (newest version first), or None."""
    override = os.environ.get("PG_BIN")
    candidates = (
        [override]
        if override
        else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    )
    for folder in candidates:
        if folder and all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def _version(folder: str) -> float:
    try:
        return float(Path(folder).parent.name)
    except ValueError:
        return 0.0


def unavailable_reason() -> str | None:
    """Why a private cluster cannot run here, or None when it can."""
    if find_bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: cannot start PostgreSQL as another user"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
    return None


class PgCluster:
    """One initdb'd cluster in a temporary folder; `url(db)` reaches it over TCP."""

    def __init__(self, port: int) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL binaries")
        self.bin_dir = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            # The postgres user must own the folder (and reach it: mkdtemp makes it 0700).
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def __enter__(self) -> PgCluster:
        self.init()
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.destroy()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def start(self) -> None:
        self._pg_ctl("start", "-o", self._options())

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` kills every backend without a checkpoint: a crash, recovered on start."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "immediate") -> None:
        self._pg_ctl("restart", "-m", mode, "-o", self._options())

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _options(self) -> str:
        # Durability is not under test here (an immediate stop still loses nothing that was
        # committed, fsync or not: the files survive, only the OS cache would not).
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.root} -c fsync=off"
            " -c full_page_writes=off -c max_connections=100"
        )

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(_TIMEOUT),
            action,
            *args,
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_TIMEOUT + 10, cwd=self.root
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode,
                command,
                done.stdout,
                f"{done.stderr}\n--- postgres log ---\n{self.log_tail()}",
            )
