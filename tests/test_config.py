"""herdwatch.config: files, layers, HERDWATCH_* variables, errors with file:line, secrets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herdwatch.config import (
    Config,
    env_var_names,
    find_config_file,
    load_config,
    parse_duration,
    parse_time,
    redact,
    resolve_secret,
)
from herdwatch.errors import ConfigError

FULL = """\
sources:
  prometheus: {url: "http://127.0.0.1:9090", timeout: 10s}
  redis: {url: "redis://127.0.0.1:6379/0", password_env: REDIS_PW}
  postgres: {dsn: "postgresql://monitor@127.0.0.1:5432/app", password_file: /run/pg}
  host: true
  logs: ["/var/log/postgresql/*.log"]
signals:
  db_latency: myapp_db_query_seconds
  upstream_requests: http_client_requests_total
rules:
  cache_stampede: {enabled: true, min_ratio: 0.3}
alerts:
  smtp: {host: smtp.example.com, port: 587, starttls: true, username: herdwatch,
         password_env: HERDWATCH_SMTP_PASSWORD, from: herdwatch@example.com,
         to: [oncall@example.com]}
  webhook: {url: "https://hooks.example.com/herd"}
  alertmanager: {url: "http://127.0.0.1:9093"}
daemon: {interval: 500ms, listen: "127.0.0.1:9464"}
mitigations: {allow: ["product:*"]}
"""


def write(tmp_path: Path, text: str, name: str = "herdwatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_full_example_from_architecture(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), environ={})
    assert cfg.sources.prometheus is not None
    assert cfg.sources.prometheus.url == "http://127.0.0.1:9090"
    assert cfg.sources.prometheus.timeout == 10.0
    assert cfg.sources.redis is not None and cfg.sources.redis.password_env == "REDIS_PW"
    assert cfg.sources.postgres is not None and cfg.sources.postgres.password_file == "/run/pg"
    assert cfg.sources.host is True
    assert cfg.sources.logs == ("/var/log/postgresql/*.log",)
    assert dict(cfg.signals) == {
        "db_latency": "myapp_db_query_seconds",
        "upstream_requests": "http_client_requests_total",
    }
    assert dict(cfg.rules["cache_stampede"]) == {"enabled": True, "min_ratio": 0.3}
    smtp = cfg.alerts.smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.from_addr, smtp.to) == (
        "smtp.example.com",
        587,
        "herdwatch@example.com",
        ("oncall@example.com",),
    )
    assert cfg.alerts.webhook is not None and cfg.alerts.alertmanager is not None
    assert cfg.daemon.interval == 0.5
    assert cfg.mitigations.allow == ("product:*",)
    assert cfg.files == (str(tmp_path / "herdwatch.yaml"),)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), environ={})
    with pytest.raises(AttributeError):
        cfg.daemon = cfg.daemon  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.signals["x"] = "y"  # type: ignore[index]


def test_defaults_without_any_file(tmp_path: Path) -> None:
    cfg = load_config(environ={"XDG_CONFIG_HOME": str(tmp_path / "none")}, cwd=tmp_path)
    assert cfg == Config()
    assert not cfg.sources.any
    assert cfg.daemon.interval == 1.0


@pytest.mark.parametrize(
    ("text", "where", "key", "words"),
    [
        ("sources:\n  redis:\n    url: redis://h\n    pasword: x\n", 4, "sources.redis.pasword",
         "unknown key"),
        ("daemon:\n  interval: fast\n", 2, "daemon.interval", "not a duration"),
        ("daemon:\n  interval: 0s\n", 2, "daemon.interval", "positive"),
        ("daemon: {listen: localhost}\n", 1, "daemon.listen", "host:port"),
        ("alerts:\n  smtp:\n    host: h\n    port: '587'\n", 4, "alerts.smtp.port", "port"),
        ("sources:\n  host: yes please\n", 2, "sources.host", "true or false"),
        ("sources:\n  logs: [1, 2]\n", 2, "sources.logs", "list of strings"),
        ("signals:\n  db_latency: [a]\n", 2, "signals.db_latency", "expected a string"),
        ("rules:\n  cache_stampede: 3\n", 2, "rules.cache_stampede", "mapping"),
        ("rules: [cache_stampede]\n", 1, "rules", "mapping"),
        ("rules:\n  sources: [a]\n", 2, "rules.sources", "mapping of rule parameters"),
        ("bogus: 1\n", 1, "bogus", "unknown key"),
        ("daemon: {interval: 1s}\ndaemon: {}\n", 2, "daemon", "duplicate"),
        ("sources: {prometheus: {username: x}}\n", 1, "sources.prometheus", "'url'"),
        ("alerts:\n\n  smtp: {host: h, from: a@b}\n", 3, "alerts.smtp", "'to'"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_key(
    tmp_path: Path, text: str, where: int, key: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), where, key)
    assert str(err).startswith(f"{path}:{where}: {key}: ")
    assert words in str(err)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "daemon:\n  interval: 1s\nsources: [1,\n")
    with pytest.raises(ConfigError, match=r"herdwatch.yaml:4: invalid YAML"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("daemon:\n  interval: !!python/object:os.system x\n", 2, "could not determine"),
        ("daemon:\n  interval: !!binary ZZZ\n", 2, "base64"),
        ("rules:\n  ? [a, b]\n  : 1\n", 2, "unhashable key"),
        ("daemon:\n  listen: &a x\n  interval: *b\n", 3, "undefined alias"),
    ],
)
def test_yaml_that_cannot_be_constructed(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}:{line}: invalid YAML: ")
    assert words in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":1: expected a mapping, got a list"):
        load_config(write(tmp_path, "- 1\n- 2\n"), environ={})


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n"), environ={}).daemon.interval == 1.0


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_password_in_url_is_refused_and_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, 'sources:\n  redis: {url: "redis://:hunter2@127.0.0.1:6379/0"}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "hunter2" not in str(info.value)
    assert "sources.redis.password_env" in str(info.value)
    dsn = write(tmp_path, "sources:\n  postgres: {dsn: 'host=h user=u password=hunter2'}\n")
    with pytest.raises(ConfigError) as info:
        load_config(dsn, environ={})
    assert "hunter2" not in str(info.value)


def test_discovery_order(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "herdwatch").mkdir(parents=True)
    xdg_file = write(xdg / "herdwatch", "daemon: {interval: 3s}\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"XDG_CONFIG_HOME": str(xdg)}
    assert find_config_file(cwd=cwd, environ=env) == xdg_file
    assert load_config(cwd=cwd, environ=env).daemon.interval == 3.0
    local = write(cwd, "daemon: {interval: 2s}\n")
    assert find_config_file(cwd=cwd, environ=env) == local
    assert load_config(cwd=cwd, environ=env).daemon.interval == 2.0
    explicit = write(tmp_path, "daemon: {interval: 7s}\n", "other.yaml")
    assert load_config(explicit, cwd=cwd, environ=env).daemon.interval == 7.0


def test_layers_file_replay_explicit_env_flags(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    write(cwd, "signals: {requests: local_total, db_latency: local_seconds}\n")
    replay = tmp_path / "incident"
    replay.mkdir()
    write(replay, "signals: {db_latency: replay_seconds}\nrules: {cron_herd: {enabled: false}}\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "none")}
    cfg = load_config(replay_dir=replay, cwd=cwd, environ=env)
    # The replay's own file overrides the discovered one, key by key.
    assert dict(cfg.signals) == {"requests": "local_total", "db_latency": "replay_seconds"}
    assert cfg.origins["signals.db_latency"] == (str(replay / "herdwatch.yaml"), 1)
    explicit = write(tmp_path, "rules: {cron_herd: {min_occurrences: 4}}\n", "mine.yaml")
    cfg = load_config(explicit, replay_dir=replay, cwd=cwd, environ=env)
    # An explicit --config replaces discovery; it merges over the replay's file.
    assert dict(cfg.signals) == {"db_latency": "replay_seconds"}
    assert dict(cfg.rules["cron_herd"]) == {"enabled": False, "min_occurrences": 4}
    env["HERDWATCH_SIGNALS_DB_LATENCY"] = "env_seconds"
    env["HERDWATCH_RULES_CRON_HERD"] = "{enabled: true}"
    cfg = load_config(explicit, replay_dir=replay, cwd=cwd, environ=env)
    assert cfg.signals["db_latency"] == "env_seconds"
    assert dict(cfg.rules["cron_herd"]) == {"enabled": True, "min_occurrences": 4}
    cfg = load_config(
        explicit, replay_dir=replay, cwd=cwd, environ=env,
        flags={"signals.db_latency": "flag_seconds"},
    )  # fmt: skip
    assert cfg.signals["db_latency"] == "flag_seconds"
    assert cfg.origins["signals.db_latency"] == ("command line", None)


def test_replay_dir_that_is_cwd_is_read_once(tmp_path: Path) -> None:
    write(tmp_path, "sources: {logs: a.log}\n")
    cfg = load_config(replay_dir=tmp_path, cwd=tmp_path, environ={})
    assert cfg.files == (str(tmp_path / "herdwatch.yaml"),)


def test_every_key_has_an_environment_variable(tmp_path: Path) -> None:
    names = env_var_names()
    assert names["sources.redis.url"] == "HERDWATCH_SOURCES_REDIS_URL"
    assert names["daemon.interval"] == "HERDWATCH_DAEMON_INTERVAL"
    assert names["alerts.smtp.from"] == "HERDWATCH_ALERTS_SMTP_FROM"
    assert len(set(names.values())) == len(names)
    env = {
        "HERDWATCH_SOURCES_REDIS_URL": "redis://127.0.0.1:6380/1",
        "HERDWATCH_SOURCES_HOST": "true",
        "HERDWATCH_SOURCES_LOGS": "/a/*.log, /b/*.log",
        "HERDWATCH_DAEMON_INTERVAL": "250ms",
        "HERDWATCH_ALERTS_SMTP_HOST": "mail",
        "HERDWATCH_ALERTS_SMTP_PORT": "2525",
        "HERDWATCH_ALERTS_SMTP_FROM": "a@b",
        "HERDWATCH_ALERTS_SMTP_TO": "[x@y, z@y]",
        "HERDWATCH_MITIGATIONS_ALLOW": "product:*",
        "HERDWATCH_SMTP_PASSWORD": "ignored: a secret named by a *_env key",
    }
    cfg = load_config(write(tmp_path, "daemon: {interval: 5s}\n"), environ=env)
    assert cfg.sources.redis is not None and cfg.sources.redis.url == "redis://127.0.0.1:6380/1"
    assert cfg.sources.host is True
    assert cfg.sources.logs == ("/a/*.log", "/b/*.log")
    assert cfg.daemon.interval == 0.25  # the environment overrides the file
    smtp = cfg.alerts.smtp
    assert smtp is not None and smtp.port == 2525 and smtp.to == ("x@y", "z@y")
    assert cfg.mitigations.allow == ("product:*",)


def test_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"HERDWATCH_DAEMON_INTERVAL": "soon"}, discover=False)
    assert str(info.value).startswith("$HERDWATCH_DAEMON_INTERVAL: daemon.interval: ")
    with pytest.raises(ConfigError, match=r"\$HERDWATCH_RULES_CACHE_STAMPEDE"):
        load_config(environ={"HERDWATCH_RULES_CACHE_STAMPEDE": "{a: [1"}, discover=False)


def test_error_helper_points_at_the_origin(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  cache_stampede:\n    min_ratio: 2\n")
    cfg = load_config(path, environ={})
    err = cfg.error("rules.cache_stampede.min_ratio", "must be below 1")
    assert str(err) == f"{path}:3: rules.cache_stampede.min_ratio: must be below 1"
    # An unset key falls back to its nearest parent that was set, else to no file at all.
    assert cfg.error("rules.nope", "unknown rule").line == 1
    assert cfg.error("daemon.interval", "x").file is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("500ms", 0.5), ("2h", 7200.0), ("1h30m", 5400.0), ("1.5m", 90.0),
     ("1.5h", 5400.0), ("1d", 86400.0), ("2d", 172800.0), ("250us", 0.00025),
     ("250µs", 0.00025), ("1w", 604800.0), ("1s500ms", 1.5), ("300", 300.0), ("0.5", 0.5),
     (" 5m ", 300.0), (300, 300.0), (1.5, 1.5), (0, 0.0)],
)  # fmt: skip
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "words"),
    [("", "empty"), ("   ", "empty"), ("1x", "not a duration"), ("s", "not a duration"),
     ("1s2", "not a duration"), ("1 s", "not a duration"), ("30m1h", "largest first"),
     ("1m1m", "largest first"), ("-1s", "negative"), ("-5", "negative"), (-5, "negative"),
     (True, "boolean"), (False, "boolean"), (float("nan"), "finite"), (float("inf"), "finite"),
     ("nan", "not a duration"), ("inf", "not a duration"), (10**400, "100 years"),
     ("5300w", "100 years"), ("9" * 400, "100 years"), ([1], "list"), (None, "NoneType")],
)  # fmt: skip
def test_parse_duration_rejects(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_duration(value)


@pytest.mark.parametrize("text", ["300", "1h30m", "500ms", "1.5h", "2d", "1w"])
def test_config_and_rules_share_one_duration_grammar(text: str) -> None:
    from herdwatch import rules

    assert rules.parse_duration is parse_duration
    cfg = load_config(environ={"HERDWATCH_DAEMON_INTERVAL": text}, discover=False)
    assert cfg.daemon.interval == parse_duration(text)
    (stampede,) = [
        r
        for r in rules.load_rules({"cache_stampede": {"min_duration": text}})
        if r.id == "cache_stampede"
    ]
    assert stampede.params.min_duration == parse_duration(text)


def test_parse_time_forms() -> None:
    assert parse_time("2h").resolve(10_000.0) == 2800.0
    assert parse_time("1764000727").resolve(0.0) == 1764000727.0
    assert parse_time("1764000727.25").absolute == 1764000727.25
    expected = datetime(2025, 11, 24, 16, 12, 7, tzinfo=UTC).timestamp()
    assert parse_time("2025-11-24T16:12:07Z").absolute == expected
    assert parse_time("2025-11-24T17:12:07+01:00").absolute == expected
    assert parse_time("2025-11-24T16:12:07").absolute == expected  # no offset: UTC
    for bad in ("yesterday", "-5", "nan", "2025-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_time(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://mon:s3cret@db/app?sslmode=disable", "postgresql://mon:***@db/app?sslmode=disable"),
        ("host=db user=mon password=s3cret dbname=app", "host=db user=mon password=*** dbname=app"),
        ("host=db password='s3 cret'", "host=db password=***"),
        ("postgresql://db/app?user=u&password=s3cret&x=1", "postgresql://db/app?user=u&password=***&x=1"),
        ("source redis://h:6379 failed", "source redis://h:6379 failed"),
        ("http://user@h/", "http://user@h/"),
    ],
)  # fmt: skip
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_resolve_secret(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert resolve_secret("PW", None, key="k.password", environ={"PW": "abc"}) == "abc"
    assert resolve_secret(None, str(secret), key="k.password", environ={}) == "s3cret"
    assert resolve_secret(None, None, key="k.password", environ={}) is None
    with pytest.raises(ConfigError, match=r"k\.password_env: environment variable PW is not set"):
        resolve_secret("PW", None, key="k.password", environ={})
    with pytest.raises(ConfigError, match=r"k\.password_file: cannot read"):
        resolve_secret(None, str(tmp_path / "missing"), key="k.password", environ={})


def test_both_password_env_and_file_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, "sources:\n  redis: {url: 'redis://h', password_env: A, password_file: B}\n"
    )
    with pytest.raises(ConfigError, match=r":2: sources.redis.password_file: .*not both"):
        load_config(path, environ={})


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_keys = st.sampled_from(
    ["sources", "redis", "url", "logs", "daemon", "interval", "listen", "rules", "signals",
     "alerts", "smtp", "port", "to", "cache_stampede", "enabled", "host", "x"]
)  # fmt: skip
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_documents)
def test_any_yaml_document_loads_or_raises_config_error(tmp_path: Path, doc: object) -> None:
    path = tmp_path / "any.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(path, environ={})
    except ConfigError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert isinstance(cfg, Config)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_any_text_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "any.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, environ={})
    except ConfigError as exc:
        assert str(exc).startswith(str(path))


# `herdwatch config check`: validate without scanning


@pytest.mark.parametrize(
    ("text", "where", "key", "words"),
    [
        ("signals:\n  db_latncy: x_seconds\n", 2, "signals.db_latncy", "unknown signal"),
        ("signals:\n\n  db_latency: 'x{'\n", 3, "signals.db_latency", "selector"),
        ("rules:\n  cache_stampeed: {}\n", 2, "rules.cache_stampeed", "unknown rule"),
        ("rules:\n  cache_stampede:\n    z_entr: 4\n", 3, "rules.cache_stampede.z_entr",
         "no such parameter"),
        ("rules:\n  cron_herd: {baseline: 1y}\n", 2, "rules.cron_herd.baseline",
         "not a duration"),
        ("rules:\n  pool_exhaustion:\n    enabled: true\n    fill_fraction: 3\n", 4,
         "rules.pool_exhaustion.fill_fraction", "<= 1"),
        ("daemon: {interval: -1}\n", 1, "daemon.interval", "negative"),
    ],
)  # fmt: skip
def test_check_config_names_file_line_and_key(
    tmp_path: Path, text: str, where: int, key: str, words: str
) -> None:
    from herdwatch.rules import check_config

    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        check_config(path, environ={})
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), where, key)
    assert str(err).startswith(f"{path}:{where}: {key}: ")
    assert words in str(err)


def test_check_config_accepts_a_good_file_and_promql_with_prometheus(tmp_path: Path) -> None:
    from herdwatch.rules import check_config

    good = FULL.replace("min_ratio: 0.3", "min_ratio_rise: 0.1")
    cfg = check_config(write(tmp_path, good), environ={})
    assert cfg.rules["cache_stampede"]["min_ratio_rise"] == 0.1
    promql = (
        "sources:\n  prometheus: {url: 'http://p:9090'}\nsignals:\n  db_latency: 'rate(x[5m])'\n"
    )
    path = write(tmp_path, promql)
    assert check_config(path, environ={}).signals["db_latency"] == "rate(x[5m])"
    with pytest.raises(ConfigError, match=r":4: signals\.db_latency: .*selector"):
        check_config(path, promql=False, environ={})


def test_check_config_without_a_file_is_the_defaults(tmp_path: Path) -> None:
    from herdwatch.rules import check_config

    cfg = check_config(None, cwd=tmp_path, environ={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert cfg == Config() and cfg.files == ()
    write(tmp_path, "signals: {nope: x}\n")
    with pytest.raises(ConfigError, match=r"herdwatch.yaml:1: signals.nope: unknown signal"):
        check_config(None, cwd=tmp_path, environ={})


def test_check_config_reports_an_invalid_rule_file(tmp_path: Path) -> None:
    from herdwatch.errors import RuleError
    from herdwatch.rules import builtin_rules_dir, check_config

    rules = tmp_path / "rules"
    rules.mkdir()
    for f in builtin_rules_dir().glob("*.yaml"):
        (rules / f.name).write_text(f.read_text())
    (rules / "cron_herd.yaml").write_text("id: cron_herd\nid: again\n")
    with pytest.raises(RuleError, match=r"cron_herd.yaml:2: id: duplicate key"):
        check_config(write(tmp_path, "{}\n"), rules_dir=rules, environ={})


def test_relocate_gives_a_key_its_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  cron_herd:\n    min_occurrences: 2.5\n")
    cfg = load_config(path, environ={})
    err = cfg.relocate(ConfigError("must be a whole number", key="rules.cron_herd.min_occurrences"))
    assert str(err) == f"{path}:3: rules.cron_herd.min_occurrences: must be a whole number"
    placed = ConfigError("x", file="f", line=1, key="k")
    assert cfg.relocate(placed) is placed


# --- issue 9: hostile input and secrets


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("redis://:s3cr3t@more@host:6379/0", "more"),  # userinfo ends at the last @
        ("redis://user:le%40kB@127.0.0.1:1/0", "le%40kB"),
        ("postgresql://u:pa:ss/w@rd@db:5432/app", "rd"),
        ("http://prom:9090/api?access_token=tok3n&x=1", "tok3n"),
        ("http://prom:9090/?x=1&api_key=k3y", "k3y"),
        ("host=db password='it\\'s a secret' user=u", "secret"),
        ('{"password": "hunter2", "url": "x"}', "hunter2"),
        ("Authorization: Bearer eyJhbGciOi.x.y", "eyJhbGciOi"),
        ('["redis://a:one1@h","redis://b:two2@h"]', "one1"),
        ('["redis://a:one1@h","redis://b:two2@h"]', "two2"),
    ],
)
def test_redact_hides_every_form(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert redact(redact(text)) == redact(text)


def test_redact_keeps_json_quotes_and_plain_urls() -> None:
    assert redact('{"password": "x1y2"}') == '{"password": "***"}'
    assert redact("redis://h:6379/0 and http://user@h/") == "redis://h:6379/0 and http://user@h/"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cannot connect (http://h/?access_token=abc); name it",
            "cannot connect (http://h/?access_token=***); name it",
        ),
        ('url "http://h/?token=abc" refused', 'url "http://h/?token=***" refused'),
        ("at 'http://h/?x=1&secret=s3'.", "at 'http://h/?x=1&secret=***'."),
        ("[http://h/?a=1&token=abc] or <http://h/?sig=xyz>", "[http://h/?a=1&token=***] or <http://h/?sig=***>"),
        ("http://h/?token=abc;next=1&b=2#frag", "http://h/?token=***;next=1&b=2#frag"),
    ],
)  # fmt: skip
def test_a_query_secret_ends_where_the_url_does(text: str, expected: str) -> None:
    """Not at the next space: the text after the URL stays readable (issue 9)."""
    assert redact(text) == expected


_PASSWORD_CHARS = st.sampled_from(list("@:/%?#&=+;,ab9Zé€ß中\u00a0\U0001f511'\"\\"))


@given(password=st.text(_PASSWORD_CHARS, min_size=4, max_size=16).filter(lambda p: p.strip()))
@settings(max_examples=300)
def test_redact_property_url_passwords(password: str) -> None:
    """A password with @ : / % and non-ASCII, raw or percent-encoded in a URL, never survives
    redaction, in a URL alone, in a message, in a repr or in JSON."""
    from urllib.parse import quote

    for pw in (password, quote(password, safe="")):
        url = f"redis://user:{pw}@cache.example:6379/0"
        for text in (url, f"source redis {url}: failed", repr(url), f'{{"name": "{url}"}}'):
            out = redact(text)
            if len(pw) >= 4 and "'" not in pw and '"' not in pw:
                assert pw not in out, out
            assert "cache.example:6379/0" in out


@given(password=st.text(_PASSWORD_CHARS, min_size=4, max_size=16))
@settings(max_examples=200)
def test_redact_property_registered_secrets(password: str) -> None:
    """A secret herdwatch resolved (env or file) is hidden in any text, as is or escaped."""
    from urllib.parse import quote

    from herdwatch.config import register_secret

    register_secret(password)
    for text in (f"error: {password}!", repr(password), quote(password, safe=""), f"b{password!r}"):
        assert password not in redact(text)


def test_password_file_not_utf8_is_one_line_without_the_password(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(b"p\xe4ss_leakC\n")
    with pytest.raises(ConfigError) as info:
        resolve_secret(None, str(pw), key="sources.redis.password", environ={})
    message = str(info.value)
    assert "leakC" not in message and "\\xe4" not in message
    assert (
        message == f"sources.redis.password_file: {pw} is not UTF-8 text (invalid byte at offset 1)"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_resolved_secret_is_redacted_everywhere(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("Zq9!long-secret\n")
    assert resolve_secret(None, str(pw), key="k.password", environ={}) == "Zq9!long-secret"
    assert redact("driver says: auth Zq9!long-secret failed") == "driver says: auth *** failed"
    resolve_secret("ENVPW", None, key="k.password", environ={"ENVPW": "from-env-S3cret"})
    assert "from-env-S3cret" not in redact("x from-env-S3cret y")


def billion_laughs(depth: int = 9) -> str:
    names = "abcdefghij"[:depth]
    parts = ["&a [" + ",".join(["x"] * 10) + "]"]
    for prev, cur in itertools.pairwise(names):
        parts.append(f"&{cur} [" + ",".join([f"*{prev}"] * 10) + "]")
    return "[" + ", ".join(parts) + "]"


@pytest.mark.timeout(10)
def test_yaml_bomb_as_rule_parameter_is_refused_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, f"rules:\n  cache_stampede:\n    z_enter: {billion_laughs()}\n")
    with pytest.raises(ConfigError, match=r":3: invalid YAML: aliases expand to more than"):
        load_config(path, environ={})


@pytest.mark.timeout(10)
def test_yaml_bomb_in_an_environment_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\$HERDWATCH_RULES_CACHE_STAMPEDE: aliases expand"):
        load_config(
            None,
            environ={"HERDWATCH_RULES_CACHE_STAMPEDE": "{z_enter: " + billion_laughs() + "}"},
            discover=False,
        )


def test_yaml_alias_to_itself_and_small_aliases(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=":2: invalid YAML: an alias refers to a value"):
        load_config(write(tmp_path, "rules:\n  x: {a: &s [1, *s]}\n"), environ={})
    ok = "rules:\n  cache_stampede: &p {align_steps: 3}\n  pool_exhaustion: *p\n"
    assert load_config(write(tmp_path, ok), environ={}).rules["pool_exhaustion"] == {
        "align_steps": 3
    }


def test_deep_yaml_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "rules: {x: {a: " + "[" * 5000 + "]" * 5000 + "}}\n")
    with pytest.raises(ConfigError):
        load_config(path, environ={})


@pytest.mark.parametrize("text", ["99999999999999999999", "1e300", "0001-01-01T00:00:00+01:00"])
def test_parse_time_refuses_times_no_calendar_holds(text: str) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time(text)
