"""Redis and PostgreSQL for the lab, started on free 127.0.0.1 ports when none is given.

The Debian packages' binaries run as child processes in temp dirs (no systemd, nothing of the
host's services), and `stop()` ends exactly the process it started (by pid) and removes its dir.
PostgreSQL refuses to run as root: as root it runs as the `postgres` user (runuser).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from herdwatch.errors import HerdwatchError

__all__ = ["LabServer", "free_port", "pg_bindir", "start_postgres", "start_redis"]

READY_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A server the lab started: its `url` (or DSN), pid and work dir; `stop()` by pid."""

    name: str
    url: str
    pid: int
    workdir: Path
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.stop_signal)
        deadline = time.monotonic() + timeout
        while _alive(self.pid) and time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if _alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-3:])
    except OSError:
        return ""


def start_redis() -> LabServer:
    """redis-server without persistence on a free port; HerdwatchError when it cannot start."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise HerdwatchError("redis-server is not installed: give --redis URL")
    port = free_port()
    wd = Path(tempfile.mkdtemp(prefix="herdwatch-lab-redis-"))
    log = wd / "redis.log"
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(wd), "--logfile", str(log)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    server = LabServer("redis", f"redis://127.0.0.1:{port}/0", proc.pid, wd, proc=proc)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise HerdwatchError(f"redis-server exited at start: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return server
        time.sleep(0.03)
    server.stop()
    raise HerdwatchError(f"redis-server not ready after {READY_TIMEOUT:.0f}s: {_tail(log)}")


def pg_bindir() -> Path | None:
    """PostgreSQL's server programs: the highest /usr/lib/postgresql/*/bin, else PATH."""
    found = sorted(
        (d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "pg_ctl").is_file()),
        key=lambda d: [int(p) for p in d.parent.name.split(".") if p.isdigit()],
    )
    if found:
        return found[-1]
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(max_connections: int = 60) -> LabServer:
    """A fresh PostgreSQL cluster (trust auth, user postgres) on a free port."""
    bindir = pg_bindir()
    if bindir is None:
        raise HerdwatchError("PostgreSQL is not installed: give --postgres DSN")
    port = free_port()
    wd = Path(tempfile.mkdtemp(prefix="herdwatch-lab-pg-"))
    wd.chmod(0o755)
    data, sock, log = wd / "data", wd / "sock", wd / "postgres.log"
    sock.mkdir()
    log.touch()
    if os.geteuid() == 0:
        for p in (wd, sock, log):
            shutil.chown(p, "postgres", "postgres")
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]  # fmt: skip
    res = subprocess.run(_as_postgres(initdb), capture_output=True, text=True, check=False, cwd=wd)
    if res.returncode != 0:
        shutil.rmtree(wd, ignore_errors=True)
        raise HerdwatchError(f"initdb failed: {res.stderr.strip().splitlines()[-1:]}")
    conf = {
        "port": port, "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{sock}'",
        "max_connections": max_connections, "fsync": "off", "synchronous_commit": "off",
        "full_page_writes": "off", "max_parallel_workers_per_gather": 0,
    }  # fmt: skip
    with (data / "postgresql.conf").open("a") as fh:
        fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "start"]
    res = subprocess.run(_as_postgres(pg_ctl), capture_output=True, text=True, check=False, cwd=wd)
    pid_file = data / "postmaster.pid"
    if res.returncode != 0 or not pid_file.exists():
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        shutil.rmtree(wd, ignore_errors=True)
        raise HerdwatchError(f"postgres did not start: {_tail(log)}")
    pid = int(pid_file.read_text().split()[0])
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    # SIGINT is Postgres' fast shutdown
    return LabServer("postgres", dsn, pid, wd, stop_signal=signal.SIGINT)
