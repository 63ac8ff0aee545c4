-- Operations: what the pipeline did, what it still has to do, and what went wrong.
-- Grain: one row per job run / dirty range / data source+point / rejected message / change.
-- Written by the job runner, collectors and the API; read by the Operations dashboard.

-- One row per run of a pipeline stage.
CREATE TABLE ops.job_run (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stage        text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    range_start  timestamptz,
    range_end    timestamptz,
    rows_touched bigint,
    status       text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'error', 'skipped')),
    error        text,
    host         text
);
CREATE INDEX job_run_stage_started_idx ON ops.job_run (stage, started_at DESC);
CREATE INDEX job_run_started_idx ON ops.job_run (started_at);

-- Append-only log of time ranges whose derived data must be recomputed. A point range
-- comes from late or repaired readings; a meter range from configuration changes,
-- offline imports, or a stage that rewrote a meter's intervals (so the stages after it
-- follow). Several downstream stages each consume the same entries once: a stage
-- remembers in ops.stage_cursor the snapshot it last consumed under, and next takes the
-- entries visible now that were not visible then. An id cursor would lose entries: ids
-- are drawn when a row is inserted, not when it commits, so an entry with a lower id can
-- become visible after a higher one has been consumed. xact is the writing transaction,
-- which a snapshot can say was committed or not.
CREATE TABLE ops.dirty_range (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    point_id     integer,
    meter_id     integer,
    range_start  timestamptz NOT NULL,
    range_end    timestamptz NOT NULL,
    reason       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    xact         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CHECK (range_start < range_end),
    CHECK (point_id IS NULL OR meter_id IS NULL)   -- neither set: every meter in the range
);
CREATE INDEX dirty_range_xact ON ops.dirty_range (xact);

CREATE TABLE ops.stage_cursor (
    stage       text PRIMARY KEY,
    seen        pg_snapshot,                      -- NULL: nothing consumed yet
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Up to when each point's readings have been normalized into energy.meter_interval.
-- A reading written before this instant is late: the writer logs a dirty range for it.
CREATE TABLE ops.point_watermark (
    point_id         integer PRIMARY KEY,
    normalized_until timestamptz NOT NULL
);

-- Never holds a row: only locked, so that a reading's lateness check and the watermarks
-- of clean and normalize cannot pass each other (writers ROW EXCLUSIVE, those stages
-- SHARE; the rule is in jobs.base.close_write_gate).
CREATE TABLE ops.write_gate ();

-- Health of each data source and point as its collector last saw it.
CREATE TABLE ops.collector_status (
    data_source_id       integer     NOT NULL,
    point_id             integer     NOT NULL DEFAULT 0,   -- 0: the data source itself
    last_success         timestamptz,
    last_error           text,
    last_error_at        timestamptz,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (data_source_id, point_id)
);

-- Messages a collector could not accept, kept whole with the reason.
CREATE TABLE ops.dead_letter (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    data_source_id integer,
    topic          text,
    payload        text        NOT NULL,
    reason         text        NOT NULL
);
CREATE INDEX dead_letter_received_idx ON ops.dead_letter (received_at DESC);

-- Every write through the API or the CLI: who, when, what, before and after.
CREATE TABLE ops.audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        NOT NULL,
    action    text        NOT NULL,
    entity    text        NOT NULL,
    entity_id text,
    before    jsonb,
    after     jsonb
);
CREATE INDEX audit_log_at_idx ON ops.audit_log (at DESC);

-- Short-lived keyed state the API processes share: rate-limit counters per client
-- (app.api.store, a Litestar store). In the database rather than in each process's
-- memory, so a limit holds across `wattline api --workers N` and across hosts.
CREATE TABLE ops.api_store (
    namespace  text        NOT NULL,
    key        text        NOT NULL,
    value      bytea       NOT NULL,
    expires_at timestamptz,                      -- NULL: never
    PRIMARY KEY (namespace, key)
);

-- Housekeeping. The dirty log and the run history grow every cycle (a normalize run logs
-- one entry per meter it rewrote: 10,000 meters on a one-minute cycle are 14 million
-- entries a day). An entry goes once every given stage has consumed it (it is visible in
-- each stage's last snapshot) and it is older than dirty_keep; nothing goes while one of
-- the stages has never run. A long transaction elsewhere does not hold pruning back. Finished runs older than runs_keep go, and expired API store entries. The
-- audit log is never pruned.
CREATE FUNCTION ops.prune(stages text[], dirty_keep interval, runs_keep interval,
                          OUT dirty_deleted bigint, OUT runs_deleted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    horizon xid8;
BEGIN
    -- Past the smallest xmax, no stage has seen anything: the index range to look in.
    SELECT CASE WHEN count(c.seen) = cardinality(stages) THEN min(pg_snapshot_xmax(c.seen)) END
    INTO horizon
    FROM unnest(stages) AS s(stage) LEFT JOIN ops.stage_cursor c USING (stage);
    dirty_deleted := 0;
    IF horizon IS NOT NULL THEN
        DELETE FROM ops.dirty_range d
        WHERE d.xact < horizon AND d.created_at < now() - dirty_keep
          AND NOT EXISTS (SELECT 1 FROM ops.stage_cursor c
                          WHERE c.stage = ANY (stages) AND NOT pg_visible_in_snapshot(d.xact, c.seen));
        GET DIAGNOSTICS dirty_deleted = ROW_COUNT;
    END IF;
    DELETE FROM ops.job_run WHERE started_at < now() - runs_keep AND status <> 'running';
    GET DIAGNOSTICS runs_deleted = ROW_COUNT;
    DELETE FROM ops.api_store WHERE expires_at < now();
END $$;

-- migrate:down
DROP FUNCTION IF EXISTS ops.prune(text[], interval, interval);
DROP TABLE IF EXISTS ops.write_gate, ops.api_store, ops.audit_log, ops.dead_letter, ops.collector_status, ops.point_watermark,
    ops.stage_cursor, ops.dirty_range, ops.job_run;
