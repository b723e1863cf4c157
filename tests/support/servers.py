"""Start real servers on free 127.0.0.1 ports in temp dirs, wait until ready, stop them by pid.

Every ``start_*`` function returns a running :class:`Server` (or :class:`PostgresServer`) that is
also a context manager; leaving the ``with`` block, or calling ``.stop()``, stops exactly that
process and removes the temp dir it created. A server that does not become ready raises
:class:`ServerStartError` carrying the tail of its log.

The servers are the Debian packages' binaries run directly as child processes (no systemd, no
service config of the host). PostgreSQL's server programs are looked up in the installed
version's directory (:func:`pg_bindir`); nothing assumes a particular major version.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

__all__ = [
    "PostgresServer",
    "Server",
    "ServerStartError",
    "free_port",
    "pg_bindir",
    "start_alertmanager",
    "start_node_exporter",
    "start_postgres",
    "start_postgres_exporter",
    "start_prometheus",
    "start_redis",
    "start_redis_exporter",
]

PG_LOG_LINE_PREFIX = "%m [%p] %q%u@%d "
READY_TIMEOUT = 20.0


class ServerStartError(RuntimeError):
    """A lab server did not start or did not become ready; the message ends with its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _has_server_programs(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("postgres", "initdb", "pg_ctl"))


def _version_key(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: 16 sorts above 9.6, numerically
    parts = bindir.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)


@functools.cache
def pg_bindir() -> Path:
    """The directory of PostgreSQL's server programs (postgres, initdb, pg_ctl):
    ``pg_config --bindir`` when it holds them, else the highest installed
    ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off PATH), else where ``postgres``
    is on PATH. Raises :class:`ServerStartError` when PostgreSQL is not installed."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        res = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
        )
        # Debian's pg_config belongs to libpq-dev and may name a version whose server is absent.
        if res.returncode == 0 and _has_server_programs(Path(res.stdout.strip())):
            return Path(res.stdout.strip())
    installed = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if _has_server_programs(d)]
    if installed:
        return max(installed, key=_version_key)
    on_path = shutil.which("postgres")
    if on_path is not None and _has_server_programs(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    raise ServerStartError(
        "postgres: no PostgreSQL server programs (postgres, initdb, pg_ctl) found via "
        "pg_config --bindir, in /usr/lib/postgresql/*/bin or on PATH"
    )


def _pid_alive(pid: int) -> bool:
    # A zombie still answers kill(pid, 0); it has exited for our purposes.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _as_root_user(cmd: Sequence[str], user: str) -> list[str]:
    """Prefix ``cmd`` with runuser when we are root (initdb and postgres refuse to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *cmd]
    return list(cmd)


class Server:
    """A running lab server: ``name``, ``port``, ``pid``, ``url``, ``log_path``; stop by pid."""

    def __init__(
        self,
        name: str,
        port: int,
        pid: int,
        url: str,
        log_path: Path,
        workdir: Path,
        *,
        proc: subprocess.Popen[bytes] | None = None,
        remove_workdir: bool = True,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.port = port
        self.pid = pid
        self.url = url
        self.log_path = log_path
        self.workdir = workdir
        self._proc = proc
        self._remove_workdir = remove_workdir
        self._stop_signal = stop_signal
        self._stopped = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid} url={self.url}>"

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log."""
        return _tail(self.log_path, lines)

    def alive(self) -> bool:
        """True while the server process exists."""
        return not self._stopped and _pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Signal this server's pid, wait for it to exit (SIGKILL after ``timeout``); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if _pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self._stop_signal)
            deadline = time.monotonic() + timeout
            while _pid_alive(self.pid) and time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    break
                time.sleep(0.02)
            if _pid_alive(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=timeout)
        if self._remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class PostgresServer(Server):
    """A running PostgreSQL cluster; adds ``dsn``, ``socket_dir`` and ``data_dir``."""

    def __init__(self, *args: Any, dsn: str, socket_dir: Path, data_dir: Path, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.dsn = dsn
        self.socket_dir = socket_dir
        self.data_dir = data_dir

    def __enter__(self) -> PostgresServer:
        return self


def _workdir(name: str, workdir: Path | None) -> tuple[Path, bool]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir, False
    return Path(tempfile.mkdtemp(prefix=f"herdwatch-{name}-")), True


def _wait(
    name: str,
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    log_path: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ServerStartError(
                f"{name} exited before it was ready; log tail:\n{_tail(log_path)}"
            )
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.02)
    raise ServerStartError(f"{name} not ready after {timeout:.0f}s; log tail:\n{_tail(log_path)}")


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return int(resp.status) == 200
        except urllib.error.URLError:
            return False

    return check


def _spawn(
    name: str,
    cmd: Sequence[str],
    port: int,
    url: str,
    ready_url: str,
    workdir: Path,
    remove: bool,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = READY_TIMEOUT,
) -> Server:
    """Run ``cmd`` in its own session with output to ``workdir/NAME.log`` and wait for ready_url."""
    log_path = workdir / f"{name}.log"
    try:
        _check_port_free(name, port)
    except ServerStartError:
        if remove:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=full_env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"{name}: cannot run {cmd[0]}: {exc}") from exc
    server = Server(name, port, proc.pid, url, log_path, workdir, proc=proc, remove_workdir=remove)
    try:
        _wait(name, _http_ok(ready_url), lambda: proc.poll() is None, log_path, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _check_port_free(name: str, port: int) -> None:
    # Otherwise the readiness probe could be answered by someone else's server.
    if _port_taken(port):
        raise ServerStartError(f"{name}: 127.0.0.1:{port} is already in use by another process")


def _redis_ping(port: int, pid: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                data += chunk
        return f"process_id:{pid}\r\n".encode() in data

    return check


def start_redis(
    *, port: int | None = None, workdir: Path | None = None, extra_args: Sequence[str] = ()
) -> Server:
    """Start redis-server without persistence; ``url`` is ``redis://127.0.0.1:PORT/0``."""
    port = port or free_port()
    _check_port_free("redis", port)
    wd, remove = _workdir("redis", workdir)
    log_path = wd / "redis.log"
    # Redis logs to stdout when --logfile is unset; config errors go there too.
    cmd = [
        "redis-server",
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(wd),
        *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=wd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"redis: cannot run redis-server: {exc}") from exc
    url = f"redis://127.0.0.1:{port}/0"
    server = Server("redis", port, proc.pid, url, log_path, wd, proc=proc, remove_workdir=remove)
    try:
        _wait(
            "redis",
            _redis_ping(port, proc.pid),
            lambda: proc.poll() is None,
            log_path,
            READY_TIMEOUT,
        )
    except BaseException:
        server.stop()
        raise
    return server


def start_postgres(
    *,
    port: int | None = None,
    max_connections: int = 100,
    settings: Mapping[str, str | int] | None = None,
    workdir: Path | None = None,
) -> PostgresServer:
    """Init and start a PostgreSQL cluster of the installed version (:func:`pg_bindir`; trust
    auth, user ``postgres``) on 127.0.0.1:PORT.

    The log uses the Debian default prefix ``'%m [%p] %q%u@%d '``; ``settings`` adds GUCs.
    """
    bindir = pg_bindir()
    port = port or free_port()
    _check_port_free("postgres", port)
    wd, remove = _workdir("postgres", workdir)
    # The cluster runs as `postgres`: it must traverse every parent and own its dirs.
    wd.chmod(0o755)
    data_dir, sock_dir, log_path = wd / "data", wd / "sock", wd / "postgres.log"
    sock_dir.mkdir(exist_ok=True)
    log_path.touch()
    if os.geteuid() == 0:
        for path in (wd, sock_dir, log_path):
            shutil.chown(path, "postgres", "postgres")
    initdb = [
        str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
        "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
    ]  # fmt: skip
    res = subprocess.run(
        _as_root_user(initdb, "postgres"), capture_output=True, text=True, check=False, cwd=wd
    )
    if res.returncode != 0:
        if remove:
            shutil.rmtree(wd, ignore_errors=True)
        raise ServerStartError(f"postgres: initdb failed ({res.returncode}):\n{res.stderr[-2000:]}")
    conf: dict[str, str | int] = {
        "port": port,
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{sock_dir}'",
        "max_connections": max_connections,
        "log_line_prefix": f"'{PG_LOG_LINE_PREFIX}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    for key, value in (settings or {}).items():
        conf[key] = value if isinstance(value, int) or value.startswith("'") else f"'{value}'"
    with (data_dir / "postgresql.conf").open("a") as fh:
        fh.write("\n# herdwatch test server (tests.support.servers)\n")
        fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_path), "-w", "-t", "30"]
    res = subprocess.run(
        _as_root_user([*pg_ctl, "start"], "postgres"),
        capture_output=True,
        text=True,
        check=False,
        cwd=wd,
    )
    pid_file = data_dir / "postmaster.pid"
    if res.returncode != 0 or not pid_file.exists():
        tail = _tail(log_path)
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        if remove:
            shutil.rmtree(wd, ignore_errors=True)
        raise ServerStartError(f"postgres: pg_ctl start failed:\n{res.stdout}{res.stderr}\n{tail}")
    pid = int(pid_file.read_text().split()[0])
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    # SIGINT is Postgres' "fast" shutdown: roll back sessions, checkpoint, exit.
    return PostgresServer(
        "postgres", port, pid, dsn, log_path, wd,
        remove_workdir=remove, stop_signal=signal.SIGINT,
        dsn=dsn, socket_dir=sock_dir, data_dir=data_dir,
    )  # fmt: skip


def start_redis_exporter(
    redis_url: str, *, port: int | None = None, workdir: Path | None = None
) -> Server:
    """Start redis_exporter for ``redis_url``; ``url`` is its /metrics endpoint."""
    port = port or free_port()
    wd, remove = _workdir("redis-exporter", workdir)
    base = f"http://127.0.0.1:{port}"
    cmd = [
        "prometheus-redis-exporter",
        "-redis.addr", redis_url.removesuffix("/0"),
        "-web.listen-address", f"127.0.0.1:{port}",
    ]  # fmt: skip
    return _spawn("redis_exporter", cmd, port, f"{base}/metrics", f"{base}/", wd, remove)


def start_postgres_exporter(
    dsn: str, *, port: int | None = None, workdir: Path | None = None
) -> Server:
    """Start postgres_exporter on ``dsn`` (passed in DATA_SOURCE_NAME); ``url`` is /metrics."""
    port = port or free_port()
    wd, remove = _workdir("postgres-exporter", workdir)
    base = f"http://127.0.0.1:{port}"
    cmd = ["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{port}"]
    return _spawn(
        "postgres_exporter",
        cmd,
        port,
        f"{base}/metrics",
        f"{base}/",
        wd,
        remove,
        env={"DATA_SOURCE_NAME": dsn},
    )


def start_node_exporter(*, port: int | None = None, workdir: Path | None = None) -> Server:
    """Start node_exporter (systemd collector off); ``url`` is its /metrics endpoint."""
    port = port or free_port()
    wd, remove = _workdir("node-exporter", workdir)
    base = f"http://127.0.0.1:{port}"
    cmd = [
        "prometheus-node-exporter",
        f"--web.listen-address=127.0.0.1:{port}",
        "--no-collector.systemd",
    ]
    return _spawn("node_exporter", cmd, port, f"{base}/metrics", f"{base}/", wd, remove)


def _target(url: str) -> dict[str, str]:
    """``http://host:port/path`` -> the parts of a static scrape config."""
    rest = url.split("://", 1)[-1]
    hostport, _, path = rest.partition("/")
    return {"hostport": hostport, "path": "/" + path if path else "/metrics"}


def start_prometheus(
    targets: Mapping[str, str | Sequence[str]] | None = None,
    *,
    scrape_interval: str = "1s",
    tsdb_dir: Path | None = None,
    port: int | None = None,
    workdir: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Server:
    """Start Prometheus scraping ``targets`` (job -> metrics URL(s)) every ``scrape_interval``.

    With ``tsdb_dir`` it serves that (e.g. backfilled) TSDB; retention is 3650d either way.
    ``url`` is the base URL (``http://127.0.0.1:PORT``).
    """
    port = port or free_port()
    wd, remove = _workdir("prometheus", workdir)
    jobs = []
    for job, urls in (targets or {}).items():
        for i, target_url in enumerate([urls] if isinstance(urls, str) else list(urls)):
            parts = _target(target_url)
            jobs.append(
                {
                    "job_name": job if i == 0 else f"{job}_{i}",
                    "metrics_path": parts["path"],
                    "static_configs": [{"targets": [parts["hostport"]]}],
                }
            )
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": jobs,
    }
    config_path = wd / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    tsdb = tsdb_dir if tsdb_dir is not None else wd / "tsdb"
    base = f"http://127.0.0.1:{port}"
    cmd = [
        "prometheus",
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tsdb}",
        "--storage.tsdb.retention.time=3650d",
        f"--web.listen-address=127.0.0.1:{port}",
        *extra_args,
    ]
    return _spawn("prometheus", cmd, port, base, f"{base}/-/ready", wd, remove)


def start_alertmanager(*, port: int | None = None, workdir: Path | None = None) -> Server:
    """Start Alertmanager (clustering off, one no-op receiver); ``url`` is its base URL."""
    port = port or free_port()
    wd, remove = _workdir("alertmanager", workdir)
    config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
    config_path = wd / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{port}"
    cmd = [
        "prometheus-alertmanager",
        f"--config.file={config_path}",
        f"--storage.path={wd / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return _spawn("alertmanager", cmd, port, base, f"{base}/-/ready", wd, remove)
