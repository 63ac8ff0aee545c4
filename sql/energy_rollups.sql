-- Per-meter energy rollups: energy.meter_hourly, energy.meter_daily, energy.meter_monthly.
-- Grain: one row per meter and local hour / local day / local month of the reporting time
-- zone (bucket = the bucket's start instant), with the bucket's completeness counts.
-- Written by jobs.rollups; read by the entity rollups (sql/entity_rollups.sql), the api
-- views and functions (sql/api_energy.sql, sql/completeness.sql) and reports.
--
-- One SQL definition, two materialisations: energy.rollup_definition() returns the
-- SELECT for each grain. On the Community edition it becomes a continuous aggregate
-- (monthly is hierarchical on daily), refreshed by jobs.rollups with
-- refresh_continuous_aggregate outside any transaction; on the Apache edition it becomes
-- a table of the same shape (CREATE TABLE … AS <definition> WITH NO DATA) that
-- energy.refresh_meter_rollup() refills over a time range with the very same SELECT.
-- Both give identical rows (numeric sums; hour buckets by a fixed origin, not a zone).
--
-- Columns: energy = sum(energy::numeric) of the intervals present (NULL when none has a
-- value); intervals = rows present; valued = rows with energy; estimated = valued rows
-- flagged estimated (4); manual = valued rows flagged manual (8) and not estimated;
-- quality = bit_or of the rows' quality. Expected intervals are not stored: they are a
-- function of the bucket and the zone (energy.expected_intervals), so the views add them.
--
-- The reporting zone is fixed when the rollups are built and kept in
-- energy.rollup_setting. Changing WATTLINE_REPORTING_TIMEZONE later does not silently
-- re-bucket: the rollups job refuses to run until `wattline db rebuild-rollups` (or
-- app.rollups.rebuild) rebuilds every rollup in the new zone.

CREATE TABLE energy.rollup_setting (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    reporting_timezone text        NOT NULL CHECK (config.valid_timezone(reporting_timezone)),
    hour_origin        timestamptz NOT NULL,   -- an instant on a local hour boundary
    materialisation    text        NOT NULL CHECK (materialisation IN ('table', 'cagg')),
    built_at           timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION energy.reporting_zone() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT reporting_timezone FROM energy.rollup_setting $$;

-- Start of the bucket holding ts. Granularities: 15min, hour, day, week (Monday), month, year.
-- Hours use the fixed origin (a local hour boundary), never a zone: see DESIGN.md.
CREATE FUNCTION energy.bucket_start(granularity text, ts timestamptz, zone text, origin timestamptz)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF ts IS NULL OR NOT isfinite(ts) THEN
        RETURN ts;
    END IF;
    RETURN CASE granularity
        WHEN '15min' THEN time_bucket(INTERVAL '15 minutes', ts)
        WHEN 'hour'  THEN time_bucket(INTERVAL '1 hour', ts, origin => origin)
        WHEN 'day'   THEN time_bucket(INTERVAL '1 day', ts, zone)
        WHEN 'week'  THEN time_bucket(INTERVAL '1 week', ts, zone)
        WHEN 'month' THEN time_bucket(INTERVAL '1 month', ts, zone)
        WHEN 'year'  THEN date_trunc('year', ts, zone)
    END;
END $$;

-- Start of the bucket after the one starting at b (DST days are 23 or 25 hours long).
CREATE FUNCTION energy.bucket_next(granularity text, b timestamptz, zone text)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF b IS NULL OR NOT isfinite(b) THEN
        RETURN b;
    END IF;
    RETURN CASE granularity
        WHEN '15min' THEN b + INTERVAL '15 minutes'
        WHEN 'hour'  THEN b + INTERVAL '1 hour'
        WHEN 'day'   THEN ((b AT TIME ZONE zone) + INTERVAL '1 day') AT TIME ZONE zone
        WHEN 'week'  THEN ((b AT TIME ZONE zone) + INTERVAL '1 week') AT TIME ZONE zone
        WHEN 'month' THEN ((b AT TIME ZONE zone) + INTERVAL '1 month') AT TIME ZONE zone
        WHEN 'year'  THEN ((b AT TIME ZONE zone) + INTERVAL '1 year') AT TIME ZONE zone
    END;
END $$;

-- First bucket start at or after ts (ts itself when it is a bucket start).
CREATE FUNCTION energy.bucket_ceil(granularity text, ts timestamptz, zone text, origin timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN b = ts THEN b ELSE energy.bucket_next(granularity, b, zone) END
    FROM (SELECT energy.bucket_start(granularity, ts, zone, origin) AS b) x
$$;

-- 15-minute intervals in the bucket starting at b: 96 on a normal day, 92 or 100 on DST days.
CREATE FUNCTION energy.expected_intervals(granularity text, b timestamptz, zone text)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT (extract(epoch FROM energy.bucket_next(granularity, b, zone) - b) / 900)::integer
$$;

CREATE FUNCTION energy.rollup_object(granularity text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE granularity WHEN 'hour' THEN 'meter_hourly' WHEN 'day' THEN 'meter_daily'
                            WHEN 'month' THEN 'meter_monthly' END
$$;

-- THE definition of each per-meter rollup. `filter` is empty for the continuous
-- aggregate; the table refresh passes a WHERE on the source's time column (whole
-- buckets only), so both evaluate the same SELECT over the same rows.
CREATE FUNCTION energy.rollup_definition(granularity text, zone text, origin timestamptz,
                                         filter text DEFAULT '')
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    counts CONSTANT text := $c$
       count(*) AS intervals,
       count(energy) AS valued,
       sum(CASE WHEN energy IS NOT NULL AND quality & 4 <> 0 THEN 1 ELSE 0 END) AS estimated,
       sum(CASE WHEN energy IS NOT NULL AND quality & 12 = 8 THEN 1 ELSE 0 END) AS manual,
       bit_or(quality) AS quality$c$;
BEGIN
    IF granularity = 'hour' THEN
        RETURN format($q$SELECT meter_id,
       time_bucket(INTERVAL '1 hour', ts, origin => %L::timestamptz) AS bucket,
       sum(energy::numeric) AS energy,%s
FROM energy.meter_interval %s
GROUP BY meter_id, time_bucket(INTERVAL '1 hour', ts, origin => %L::timestamptz)$q$,
            origin, counts, filter, origin);
    ELSIF granularity = 'day' THEN
        RETURN format($q$SELECT meter_id,
       time_bucket(INTERVAL '1 day', ts, %L) AS bucket,
       sum(energy::numeric) AS energy,%s
FROM energy.meter_interval %s
GROUP BY meter_id, time_bucket(INTERVAL '1 day', ts, %L)$q$,
            zone, counts, filter, zone);
    ELSIF granularity = 'month' THEN
        -- Hierarchical: months from the daily rollup in the same zone.
        RETURN format($q$SELECT meter_id,
       time_bucket(INTERVAL '1 month', bucket, %L) AS bucket,
       sum(energy) AS energy,
       sum(intervals)::bigint AS intervals,
       sum(valued)::bigint AS valued,
       sum(estimated)::bigint AS estimated,
       sum(manual)::bigint AS manual,
       bit_or(quality) AS quality
FROM energy.meter_daily %s
GROUP BY meter_id, time_bucket(INTERVAL '1 month', bucket, %L)$q$,
            zone, filter, zone);
    END IF;
    RAISE EXCEPTION 'unknown rollup granularity %: use hour, day or month', granularity;
END $$;

-- One materialisation mechanism for every per-meter rollup (energy here; interval cost in
-- sql/billing.sql and emissions in sql/carbon.sql use the same four functions): a
-- continuous aggregate where the edition has them, else a table refilled over whole
-- buckets with the very same SELECT.
CREATE FUNCTION energy.rollup_materialisation() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN ops.timescale_edition() = 'timescale' THEN 'cagg' ELSE 'table' END
$$;

-- Drop one rollup object, whichever materialisation it has (CASCADE: the views reading
-- it go too; their owners recreate them).
CREATE FUNCTION energy.drop_rollup_object(p_schema text, p_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k "char";
BEGIN
    SELECT c.relkind INTO k FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relname = p_name;
    IF k = 'r' THEN
        EXECUTE format('DROP TABLE %I.%I CASCADE', p_schema, p_name);
    ELSIF k IN ('v', 'm') THEN
        EXECUTE format('DROP MATERIALIZED VIEW %I.%I CASCADE', p_schema, p_name);
    END IF;
END $$;

-- Create one rollup object, empty, from its definition: a continuous aggregate
-- (materialized only) or a table with primary key `p_key`.
CREATE FUNCTION energy.create_rollup_object(p_schema text, p_name text, p_definition text,
                                            p_kind text, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_kind = 'cagg' THEN
        EXECUTE format('CREATE MATERIALIZED VIEW %I.%I WITH (timescaledb.continuous, '
                       'timescaledb.materialized_only = true) AS %s WITH NO DATA',
                       p_schema, p_name, p_definition);
    ELSE
        EXECUTE format('CREATE TABLE %I.%I AS %s WITH NO DATA', p_schema, p_name, p_definition);
        EXECUTE format('ALTER TABLE %I.%I ADD PRIMARY KEY (%s)', p_schema, p_name, p_key);
    END IF;
END $$;

-- Table path: replace the buckets in [p_lo, p_hi) of the given meters (NULL: all) with the
-- rows of `p_definition`, a rollup definition filtered with $1 = p_lo, $2 = p_hi,
-- $3 = p_meter_ids. Rows go in primary-key order (`p_key`), so the index fills page by
-- page; the streaming aggregate below delivers them in that order already. Returns the
-- rows written.
CREATE FUNCTION energy.refill_rollup_table(p_schema text, p_name text, p_definition text, p_key text,
                                           p_lo timestamptz, p_hi timestamptz, p_meter_ids integer[])
RETURNS bigint LANGUAGE plpgsql
-- Grouped as the source's (meter_id, time) index delivers the rows, chunk scans merged in
-- order: the aggregate streams and its output is already in key order. The planner
-- otherwise guesses far fewer groups than there are (an hour per meter) and picks a hash
-- aggregate that spills to disk and a sort after it: 1.5-2 times the time for a month
-- of 500 meters. (The sums are numeric, so the order rows are added in changes nothing.)
SET enable_hashagg = off AS $fn$
DECLARE
    n bigint;
BEGIN
    IF p_lo >= p_hi THEN
        RETURN 0;
    END IF;
    EXECUTE format('DELETE FROM %I.%I WHERE bucket >= $1 AND bucket < $2 '
                   'AND ($3::integer[] IS NULL OR meter_id = ANY ($3))', p_schema, p_name)
        USING p_lo, p_hi, p_meter_ids;
    EXECUTE format('INSERT INTO %I.%I %s ORDER BY %s', p_schema, p_name, p_definition, p_key)
        USING p_lo, p_hi, p_meter_ids;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $fn$;

-- The filter a table refresh appends to a rollup definition (hour and day read intervals
-- by `ts`, month reads the daily rollup by `bucket`).
CREATE FUNCTION energy.rollup_refresh_filter(granularity text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('WHERE %1$I >= $1 AND %1$I < $2 AND ($3::integer[] IS NULL OR meter_id = ANY ($3))',
                  CASE WHEN granularity = 'month' THEN 'bucket' ELSE 'ts' END)
$$;

-- Drop the three rollup objects, whichever materialisation they have (and the views
-- that read them: app.rollups.rebuild recreates those).
CREATE FUNCTION energy.drop_meter_rollups() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g text;
BEGIN
    FOREACH g IN ARRAY ARRAY['month', 'day', 'hour'] LOOP
        PERFORM energy.drop_rollup_object('energy', energy.rollup_object(g));
    END LOOP;
END $$;

-- (Re)create the per-meter rollups, empty, in `zone`: continuous aggregates where the
-- edition has them, else tables. Returns the materialisation chosen. The caller fills
-- them (jobs.rollups, or app.rollups.rebuild over the whole history).
CREATE FUNCTION energy.build_meter_rollups(zone text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    origin timestamptz;
    kind   text := energy.rollup_materialisation();
    g      text;
BEGIN
    IF zone IS NULL OR NOT config.valid_timezone(zone) THEN
        RAISE EXCEPTION 'unknown IANA time zone %', quote_nullable(zone)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    origin := '2020-01-01 00:00'::timestamp AT TIME ZONE zone;
    PERFORM energy.drop_meter_rollups();
    INSERT INTO energy.rollup_setting (reporting_timezone, hour_origin, materialisation, built_at)
    VALUES (zone, origin, kind, now())
    ON CONFLICT (singleton) DO UPDATE
        SET reporting_timezone = EXCLUDED.reporting_timezone, hour_origin = EXCLUDED.hour_origin,
            materialisation = EXCLUDED.materialisation, built_at = EXCLUDED.built_at;
    FOREACH g IN ARRAY ARRAY['hour', 'day', 'month'] LOOP
        PERFORM energy.create_rollup_object('energy', energy.rollup_object(g),
                                            energy.rollup_definition(g, zone, origin), kind, 'meter_id, bucket');
    END LOOP;
    RETURN kind;
END $$;

-- Table path: recompute one rollup's buckets that lie wholly inside [p_start, p_end)
-- (the window shrinks inward to whole buckets, as refresh_continuous_aggregate does),
-- for the given meters (NULL: all). Infinite bounds mean the whole history.
-- Returns the rows written. Callers widen a dirty range outward first (jobs.rollups).
CREATE FUNCTION energy.refresh_meter_rollup(granularity text, p_start timestamptz, p_end timestamptz,
                                            p_meter_ids integer[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s energy.rollup_setting;
BEGIN
    SELECT * INTO s FROM energy.rollup_setting;
    IF s.materialisation <> 'table' THEN
        RAISE EXCEPTION 'energy.% is a continuous aggregate here: refresh it with '
            'refresh_continuous_aggregate outside a transaction', energy.rollup_object(granularity);
    END IF;
    IF granularity NOT IN ('hour', 'day', 'month') THEN
        RAISE EXCEPTION 'unknown rollup granularity %: use hour, day or month', granularity;
    END IF;
    RETURN energy.refill_rollup_table(
        'energy', energy.rollup_object(granularity),
        energy.rollup_definition(granularity, s.reporting_timezone, s.hour_origin,
                                 energy.rollup_refresh_filter(granularity)),
        'meter_id, bucket',
        energy.bucket_ceil(granularity, p_start, s.reporting_timezone, s.hour_origin),
        energy.bucket_start(granularity, p_end, s.reporting_timezone, s.hour_origin),
        p_meter_ids);
END $$;

-- migrate:down
SELECT energy.drop_meter_rollups();
DROP FUNCTION IF EXISTS energy.refresh_meter_rollup(text, timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS energy.build_meter_rollups(text);
DROP FUNCTION IF EXISTS energy.drop_meter_rollups();
DROP FUNCTION IF EXISTS energy.rollup_refresh_filter(text);
DROP FUNCTION IF EXISTS energy.refill_rollup_table(text, text, text, text, timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS energy.create_rollup_object(text, text, text, text, text);
DROP FUNCTION IF EXISTS energy.drop_rollup_object(text, text);
DROP FUNCTION IF EXISTS energy.rollup_materialisation();
DROP FUNCTION IF EXISTS energy.rollup_definition(text, text, timestamptz, text);
DROP FUNCTION IF EXISTS energy.rollup_object(text);
DROP FUNCTION IF EXISTS energy.expected_intervals(text, timestamptz, text);
DROP FUNCTION IF EXISTS energy.bucket_ceil(text, timestamptz, text, timestamptz);
DROP FUNCTION IF EXISTS energy.bucket_next(text, timestamptz, text);
DROP FUNCTION IF EXISTS energy.bucket_start(text, timestamptz, text, timestamptz);
DROP FUNCTION IF EXISTS energy.reporting_zone();
DROP TABLE IF EXISTS energy.rollup_setting;
