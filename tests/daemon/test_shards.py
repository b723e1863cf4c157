"""daemon.shard: the config keys, the ownership of findings, and three live daemons.

Live: two shards, one Redis for their leases; shard `a` is a group of two daemons watching one
real Postgres, shard `b` one daemon watching another, each owning its server's subject. Every
pool herd (driven by pgbench) is paged exactly once, by its shard; after shard a's leader is
SIGKILLed its peer takes the lease and pages the next herd on a's Postgres, once."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

from herdwatch.config import ShardConfig, load_config
from herdwatch.daemon._shard import SHARD_LABEL, Shard
from herdwatch.errors import ConfigError
from tests.alert.support import finding, http_receiver, snap, tracked
from tests.daemon.support import metrics, outbox_states, start_daemon, stop, wait_for
from tests.support.servers import PostgresServer, free_port, start_postgres, start_redis

TTL = 2.0
#: pool_exhaustion's baseline ends 10 s before the pool is full: a quiet stretch before a herd
QUIET = 11.0
#: how long the test listens after the last expected page for a duplicate (two TTLs and a tick)
GRACE = 2 * TTL + 1.0


def pgbench(pg: PostgresServer, *args: str) -> subprocess.Popen[bytes]:
    conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    cmd = ["pgbench", *conn, *args, "postgres"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def pgs() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    with start_postgres(max_connections=20) as a, start_postgres(max_connections=20) as b:
        for p in [pgbench(a, "-i", "-q"), pgbench(b, "-i", "-q")]:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err[-500:]
        yield a, b


def herd(pg: PostgresServer) -> subprocess.Popen[bytes]:
    """40 clients reconnecting for 3 s against max_connections 20 (pgbench exits 2: refused)."""
    return pgbench(pg, "-C", "-c", "40", "-j", "2", "-T", "3")


def herds(*procs: subprocess.Popen[bytes]) -> float:
    """Wait for the pgbench runs; the time they ended."""
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode in (0, 2), err[-500:]
    return time.monotonic()


def leader(port: int) -> float | None:
    m = re.search(r"^herdwatch_leader (\S+)$", metrics(port), re.M)
    return float(m.group(1)) if m else None


def config(path: Path, pg: PostgresServer, shard: str, hook: str, redis: str, key: str) -> Path:
    path.write_text(
        f"sources:\n  postgres: {{dsn: '{pg.dsn}', sample_interval: 0.1}}\n"
        f"alerts:\n  webhook: {{url: '{hook}'}}\n"
        "daemon:\n  interval: 0.5s\n"
        f"  leader: {{redis: '{redis}', key: '{key}', ttl: {TTL}s}}\n"
        f"  shard: {{name: {shard}, owns: ['server=127.0.0.1:{pg.port}']}}\n"
    )
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "herdwatch.yaml"
    path.write_text(text)
    return path


def test_shard_keys_and_the_lease_per_shard(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "daemon:\n  leader: {redis: 'redis://127.0.0.1:6379/0', key: hw}\n"
            "  shard:\n    name: eu-1\n    owns: ['instance=~\"redis-[1-3]:.*\"', peer=auth]\n"
            "    fleet: false\n",
        ),
        environ={},
    )
    assert cfg.daemon.shard == ShardConfig(
        "eu-1", ('instance=~"redis-[1-3]:.*"', "peer=auth"), False
    )
    assert cfg.daemon.lease_key == "hw:eu-1"
    env = {
        "HERDWATCH_DAEMON_SHARD_NAME": "b",
        "HERDWATCH_DAEMON_SHARD_OWNS": "instance!~redis-[1-3]:.*,peer!=auth",
        "HERDWATCH_DAEMON_SHARD_FLEET": "true",
    }
    cfg = load_config(None, environ=env, discover=False)
    assert cfg.daemon.shard == ShardConfig("b", ("instance!~redis-[1-3]:.*", "peer!=auth"), True)
    assert cfg.daemon.lease_key is None  # no leader: no lease
    assert load_config(None, environ={}, discover=False).daemon.shard is None


@pytest.mark.parametrize(
    ("shard", "line", "words"),
    [
        ("{owns: [instance=x]}", 3, ["daemon.shard", "missing required key 'name'"]),
        ("{name: 'a b'}", 3, ["daemon.shard.name", "'a b'"]),
        ("{name: a, owns: [instance]}", 3, ["daemon.shard.owns", "not a matcher: 'instance'"]),
        ("{name: a, owns: ['instance=~(']}", 3, ["daemon.shard.owns", "bad regular expression"]),
        ("{name: a, owns: [], fleet: false}", 3, ["daemon.shard", "owns no subject"]),
        ("{name: a, fleet: 1}", 3, ["daemon.shard.fleet", "expected true or false"]),
        ("{name: a, index: 1}", 3, ["daemon.shard.index", "unknown key"]),
    ],
)
def test_a_bad_shard_is_one_line_naming_file_line_and_key(
    tmp_path: Path, shard: str, line: int, words: list[str]
) -> None:
    path = write(tmp_path, f"# a fleet's third daemon\ndaemon:\n  shard: {shard}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    msg = str(err.value)
    assert f"{path}:{line}" in msg, msg
    for w in words:
        assert w in msg, msg
    done = subprocess.run(
        [sys.executable, "-m", "herdwatch", "daemon", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("herdwatch: ")
    assert all(w in done.stderr for w in words), done.stderr


def test_a_shard_keeps_the_findings_it_owns() -> None:
    mine = finding(subject=(("instance", "redis-2:9121"),))
    theirs = finding(onset=1001, subject=(("instance", "redis-7:9121"),))
    peer = finding("retry_storm", subject=(("peer", "auth"),))
    fleet = finding("cron_herd", subject=())
    s = snap(1100, *(tracked(f) for f in (mine, theirs, peer, fleet)))

    shard = Shard(ShardConfig("eu-1", ("instance=~redis-[1-3]:.*", "peer=auth")))
    got = shard.claim(s)
    assert [tf.subject for tf in got.findings] == [
        mine.subject, peer.subject, ((SHARD_LABEL, "eu-1"),)
    ]  # fmt: skip
    assert [tf.id for tf in got.findings] == [s.findings[i].id for i in (0, 2, 3)]
    assert shard.not_owned == 1

    rest = Shard(ShardConfig("rest", ("instance!~redis-[1-3]:.*",), fleet=False))
    assert [tf.subject for tf in rest.claim(s).findings] == [theirs.subject, peer.subject]
    assert rest.not_owned == 2

    everything = Shard(ShardConfig("all"))
    assert everything.claim(snap(1100, tracked(mine))).findings[0].subject == mine.subject


@pytest.mark.timeout(150)
def test_each_herd_paged_once_by_its_shard_and_a_takeover(
    tmp_path: Path, pgs: tuple[PostgresServer, PostgresServer]
) -> None:
    pg_a, pg_b = pgs
    with http_receiver() as hook, start_redis() as redis:
        key = f"hw:shards:{time.time_ns()}"
        cfg_a = config(tmp_path / "a.yaml", pg_a, "a", hook.url, redis.url, key)
        cfg_b = config(tmp_path / "b.yaml", pg_b, "b", hook.url, redis.url, key)
        names = ["a1", "a2", "b1"]
        ports = {n: free_port() for n in names}
        boxes = {n: tmp_path / f"{n}.db" for n in names}
        procs = {
            n: start_daemon(
                cfg_a if n.startswith("a") else cfg_b,
                "--listen",
                f"127.0.0.1:{ports[n]}",
                "--outbox",
                str(boxes[n]),
                log=tmp_path / f"{n}.log",
            )
            for n in names
        }

        def pages() -> list[dict[str, Any]]:
            return [b for _, b in hook.requests if b.get("status") == "firing"]

        servers = {f"127.0.0.1:{pg_a.port}": "a", f"127.0.0.1:{pg_b.port}": "b"}

        def shards() -> list[str]:
            """The shard of each alert paged, by the Postgres its subject names."""
            return sorted(servers.get(a["subject"].get("server", ""), "?") for p in pages()
                          for a in p["alerts"])  # fmt: skip

        try:
            wait_for(
                lambda: (
                    sorted(leader(ports[n]) or 0 for n in ("a1", "a2")) == [0, 1]
                    and leader(ports["b1"]) == 1
                ),
                30,
                "one leader per shard",
            )
            started = time.monotonic()
            first = next(n for n in ("a1", "a2") if leader(ports[n]) == 1)
            peer = "a2" if first == "a1" else "a1"
            with redis_py.Redis.from_url(redis.url) as r:  # a lease per shard
                assert r.exists(f"{key}:a", f"{key}:b") == 2

            wait_for(lambda: time.monotonic() >= started + QUIET, QUIET + 1, "the quiet stretch")
            ended = herds(herd(pg_a), herd(pg_b))
            wait_for(lambda: len(pages()) >= 2, 30, "both shards' pages")
            # the peer holds its copy two TTLs, then drops it as sent by the leader: still one
            wait_for(
                lambda: any(s == "superseded" for *_, s in outbox_states(boxes[peer])),
                30,
                "the peer to drop its copy",
            )
            assert shards() == ["a", "b"], hook.requests

            assert stop(procs[first], signal.SIGKILL) == -signal.SIGKILL
            killed = time.monotonic()
            wait_for(lambda: leader(ports[peer]) == 1, 4 * TTL, "the takeover")
            takeover = time.monotonic() - killed
            assert takeover <= 2 * TTL, takeover  # one TTL, a renewal step, a loaded machine

            wait_for(lambda: time.monotonic() >= ended + QUIET, QUIET + 1, "the quiet stretch")
            herds(herd(pg_a))
            wait_for(lambda: len(pages()) >= 3, 30, "the next herd's page")
            # no duplicate after it: a page's copy on the peer lives two TTLs, a repeat or a
            # re-sent takeover copy would come within them and a tick
            grace = time.monotonic() + GRACE
            while time.monotonic() < grace and len(pages()) <= 3:
                time.sleep(0.1)
            keys = [p["key"] for p in pages()]
            assert len(set(keys)) == len(keys) == 3, keys
            assert shards() == ["a", "a", "b"], hook.requests
            assert all(procs[n].poll() is None for n in (peer, "b1"))
        finally:
            for p in procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stop(p, signal.SIGKILL)
