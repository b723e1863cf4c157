-- One sample of the Postgres direct source, in one round trip, as rows of
-- (metric, datname, state, datid, value). Readable by a role that has only pg_monitor.
-- pg_stat_activity_count mirrors postgres_exporter's query: every database crossed with every
-- state, so a state with no backend is a 0, not a missing series.
WITH activity AS (
    SELECT datname, state, wait_event_type, pid FROM pg_stat_activity
)
SELECT 'activity' AS metric, d.datname::text AS datname, s.state, NULL::text AS datid,
       COALESCE(a.n, 0)::float8 AS value
FROM pg_database AS d
CROSS JOIN (
    VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
           ('fastpath function call'), ('disabled')
) AS s (state)
LEFT JOIN (
    SELECT datname, state, count(*) AS n FROM activity GROUP BY datname, state
) AS a ON a.datname = d.datname AND a.state = s.state
UNION ALL
SELECT 'lock_waiting', d.datname::text, NULL, NULL, COALESCE(w.n, 0)::float8
FROM pg_database AS d
LEFT JOIN (
    SELECT datname, count(*) AS n FROM activity WHERE wait_event_type = 'Lock' GROUP BY datname
) AS w ON w.datname = d.datname
UNION ALL
SELECT 'locks_not_granted', d.datname::text, NULL, NULL, COALESCE(l.n, 0)::float8
FROM pg_database AS d
LEFT JOIN (
    -- by the waiting backend's database: a row-lock wait is on a transaction id, which has none
    SELECT a.datname, count(*) AS n
    FROM pg_locks AS pl JOIN activity AS a ON a.pid = pl.pid
    WHERE NOT pl.granted
    GROUP BY a.datname
) AS l ON l.datname = d.datname
UNION ALL
SELECT 'deadlocks', COALESCE(datname::text, ''), NULL, datid::text, deadlocks::float8
FROM pg_stat_database
UNION ALL
SELECT 'xact_rollback', COALESCE(datname::text, ''), NULL, datid::text, xact_rollback::float8
FROM pg_stat_database
UNION ALL
SELECT 'max_connections', NULL, NULL, NULL, current_setting('max_connections')::float8
UNION ALL
SELECT 'superuser_reserved_connections', NULL, NULL, NULL,
       current_setting('superuser_reserved_connections')::float8
