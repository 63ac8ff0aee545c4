-- The api schema's energy objects: per-meter and per-entity energy by hour / day / month
-- with completeness, and gap-filled series for any granularity.
-- Grain: views, one row per meter (or entity, direction, category [, item]) and bucket
-- that has data; the series functions return one row per bucket of [from, to) whether or
-- not it has data (missing buckets have energy NULL), built with generate_series so they
-- work on every TimescaleDB edition.
-- Written by nobody (views and functions over the rollups jobs.rollups refreshes); read
-- by Grafana, reports, the REST API and analysts (docs/sql.md).
-- Idempotent (CREATE OR REPLACE): app.rollups.rebuild re-runs it after rebuilding the rollups.

-- Per-meter energy --------------------------------------------------------------------
CREATE OR REPLACE VIEW api.meter_energy_hourly AS
SELECT r.meter_id, m.name AS meter, m.category_id, r.bucket, r.energy,
       4::bigint AS expected, r.valued AS present,
       r.valued - r.estimated - r.manual AS measured, r.estimated, r.manual,
       4 - r.valued AS missing, r.quality
FROM energy.meter_hourly r JOIN config.meter m ON m.id = r.meter_id;

CREATE OR REPLACE VIEW api.meter_energy_daily AS
SELECT r.meter_id, m.name AS meter, m.category_id, r.bucket,
       (r.bucket AT TIME ZONE s.reporting_timezone)::date AS day, r.energy,
       x.expected, r.valued AS present,
       r.valued - r.estimated - r.manual AS measured, r.estimated, r.manual,
       x.expected - r.valued AS missing, r.quality
FROM energy.meter_daily r
JOIN config.meter m ON m.id = r.meter_id
CROSS JOIN energy.rollup_setting s
CROSS JOIN LATERAL (SELECT energy.expected_intervals('day', r.bucket, s.reporting_timezone)::bigint AS expected) x;

CREATE OR REPLACE VIEW api.meter_energy_monthly AS
SELECT r.meter_id, m.name AS meter, m.category_id, r.bucket,
       (r.bucket AT TIME ZONE s.reporting_timezone)::date AS month, r.energy,
       x.expected, r.valued AS present,
       r.valued - r.estimated - r.manual AS measured, r.estimated, r.manual,
       x.expected - r.valued AS missing, r.quality
FROM energy.meter_monthly r
JOIN config.meter m ON m.id = r.meter_id
CROSS JOIN energy.rollup_setting s
CROSS JOIN LATERAL (SELECT energy.expected_intervals('month', r.bucket, s.reporting_timezone)::bigint AS expected) x;

-- Per-entity energy, by category (items summed) and by item ----------------------------
CREATE OR REPLACE VIEW api.entity_energy_daily AS
SELECT e.entity_kind, e.entity_id, n.name AS entity, e.direction, e.category_id, c.name AS category,
       c.unit, e.bucket, (e.bucket AT TIME ZONE energy.reporting_zone())::date AS day,
       sum(e.energy) AS energy, sum(e.meters)::bigint AS meters,
       sum(e.meters)::bigint * energy.expected_intervals('day', e.bucket, energy.reporting_zone()) AS expected,
       sum(e.valued)::bigint AS present, sum(e.estimated)::bigint AS estimated, sum(e.manual)::bigint AS manual
FROM energy.entity_daily e
JOIN config.energy_category c ON c.id = e.category_id
LEFT JOIN energy.entity n ON n.entity_kind = e.entity_kind AND n.entity_id = e.entity_id
GROUP BY e.entity_kind, e.entity_id, n.name, e.direction, e.category_id, c.name, c.unit, e.bucket;

CREATE OR REPLACE VIEW api.entity_energy_monthly AS
SELECT e.entity_kind, e.entity_id, n.name AS entity, e.direction, e.category_id, c.name AS category,
       c.unit, e.bucket, (e.bucket AT TIME ZONE energy.reporting_zone())::date AS month,
       sum(e.energy) AS energy, sum(e.meters)::bigint AS meters,
       sum(e.meters)::bigint * energy.expected_intervals('month', e.bucket, energy.reporting_zone()) AS expected,
       sum(e.valued)::bigint AS present, sum(e.estimated)::bigint AS estimated, sum(e.manual)::bigint AS manual
FROM energy.entity_monthly e
JOIN config.energy_category c ON c.id = e.category_id
LEFT JOIN energy.entity n ON n.entity_kind = e.entity_kind AND n.entity_id = e.entity_id
GROUP BY e.entity_kind, e.entity_id, n.name, e.direction, e.category_id, c.name, c.unit, e.bucket;

CREATE OR REPLACE VIEW api.entity_energy_item_daily AS
SELECT e.entity_kind, e.entity_id, n.name AS entity, e.direction, e.category_id, c.name AS category,
       c.unit, e.item_id, i.name AS item, e.bucket, (e.bucket AT TIME ZONE energy.reporting_zone())::date AS day,
       e.energy, e.meters,
       e.meters::bigint * energy.expected_intervals('day', e.bucket, energy.reporting_zone()) AS expected,
       e.valued AS present, e.estimated, e.manual
FROM energy.entity_daily e
JOIN config.energy_category c ON c.id = e.category_id
LEFT JOIN config.energy_item i ON i.id = e.item_id
LEFT JOIN energy.entity n ON n.entity_kind = e.entity_kind AND n.entity_id = e.entity_id;

CREATE OR REPLACE VIEW api.entity_energy_item_monthly AS
SELECT e.entity_kind, e.entity_id, n.name AS entity, e.direction, e.category_id, c.name AS category,
       c.unit, e.item_id, i.name AS item, e.bucket, (e.bucket AT TIME ZONE energy.reporting_zone())::date AS month,
       e.energy, e.meters,
       e.meters::bigint * energy.expected_intervals('month', e.bucket, energy.reporting_zone()) AS expected,
       e.valued AS present, e.estimated, e.manual
FROM energy.entity_monthly e
JOIN config.energy_category c ON c.id = e.category_id
LEFT JOIN config.energy_item i ON i.id = e.item_id
LEFT JOIN energy.entity n ON n.entity_kind = e.entity_kind AND n.entity_id = e.entity_id;

-- Gap-filled series ---------------------------------------------------------------------
-- Every bucket of a granularity that starts in [floor(p_from), p_to), with its number of
-- 15-minute intervals. The first bucket is the one holding p_from.
CREATE OR REPLACE FUNCTION energy.bucket_series(p_granularity text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, intervals integer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s energy.rollup_setting;
    b0 timestamptz;
BEGIN
    IF p_granularity IS NULL OR p_granularity NOT IN ('15min', 'hour', 'day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'unknown granularity %: use 15min, hour, day, week, month or year',
            quote_nullable(p_granularity) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_from IS NULL OR p_to IS NULL OR NOT isfinite(p_from) OR NOT isfinite(p_to) OR p_from >= p_to THEN
        RAISE EXCEPTION 'series range [%, %) is empty or unbounded: give finite from < to', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO s FROM energy.rollup_setting;
    b0 := energy.bucket_start(p_granularity, p_from, s.reporting_timezone, s.hour_origin);
    IF p_granularity IN ('15min', 'hour') THEN
        RETURN QUERY
        SELECT g, CASE p_granularity WHEN '15min' THEN 1 ELSE 4 END
        FROM generate_series(b0, p_to - INTERVAL '1 microsecond',
                             CASE p_granularity WHEN '15min' THEN INTERVAL '15 minutes' ELSE INTERVAL '1 hour' END) g;
    ELSE
        RETURN QUERY
        SELECT x.b, energy.expected_intervals(p_granularity, x.b, s.reporting_timezone)
        FROM generate_series(b0 AT TIME ZONE s.reporting_timezone, p_to AT TIME ZONE s.reporting_timezone,
                             ('1 ' || p_granularity)::interval) g
        CROSS JOIN LATERAL (SELECT g AT TIME ZONE s.reporting_timezone AS b) x
        WHERE x.b < p_to;
    END IF;
END $$;

-- A meter's energy per bucket where it has data (not gap-filled), from the coarsest
-- rollup that serves the granularity.
CREATE OR REPLACE FUNCTION energy.meter_buckets(p_meter_id integer, p_granularity text,
                                                p_lo timestamptz, p_hi timestamptz)
RETURNS TABLE (bucket timestamptz, energy numeric, valued bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    zone text := energy.reporting_zone();
BEGIN
    CASE p_granularity
    WHEN '15min' THEN
        RETURN QUERY SELECT i.ts, i.energy::numeric, (i.energy IS NOT NULL)::integer::bigint
        FROM energy.meter_interval i WHERE i.meter_id = p_meter_id AND i.ts >= p_lo AND i.ts < p_hi;
    WHEN 'hour' THEN
        RETURN QUERY SELECT r.bucket, r.energy, r.valued
        FROM energy.meter_hourly r WHERE r.meter_id = p_meter_id AND r.bucket >= p_lo AND r.bucket < p_hi;
    WHEN 'day' THEN
        RETURN QUERY SELECT r.bucket, r.energy, r.valued
        FROM energy.meter_daily r WHERE r.meter_id = p_meter_id AND r.bucket >= p_lo AND r.bucket < p_hi;
    WHEN 'week' THEN
        RETURN QUERY SELECT time_bucket(INTERVAL '1 week', r.bucket, zone), sum(r.energy), sum(r.valued)::bigint
        FROM energy.meter_daily r WHERE r.meter_id = p_meter_id AND r.bucket >= p_lo AND r.bucket < p_hi
        GROUP BY 1;
    WHEN 'month' THEN
        RETURN QUERY SELECT r.bucket, r.energy, r.valued
        FROM energy.meter_monthly r WHERE r.meter_id = p_meter_id AND r.bucket >= p_lo AND r.bucket < p_hi;
    WHEN 'year' THEN
        RETURN QUERY SELECT date_trunc('year', r.bucket, zone), sum(r.energy), sum(r.valued)::bigint
        FROM energy.meter_monthly r WHERE r.meter_id = p_meter_id AND r.bucket >= p_lo AND r.bucket < p_hi
        GROUP BY 1;
    END CASE;
END $$;

-- An entity's energy in one category and direction per bucket where it has data: days
-- and longer from the entity rollups; hours and quarter hours from its meters' rollups.
CREATE OR REPLACE FUNCTION energy.entity_buckets(p_kind text, p_entity_id integer, p_direction text,
                                                 p_category_id integer, p_granularity text,
                                                 p_lo timestamptz, p_hi timestamptz)
RETURNS TABLE (bucket timestamptz, energy numeric, valued bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    zone text := energy.reporting_zone();
BEGIN
    IF p_granularity IN ('15min', 'hour') THEN
        RETURN QUERY
        WITH mm AS (
            SELECT em.meter_id FROM energy.entity_meter em JOIN config.meter m ON m.id = em.meter_id
            WHERE em.entity_kind = p_kind AND em.entity_id = p_entity_id AND em.direction = p_direction
              AND m.category_id = p_category_id
        )
        SELECT b.bucket, sum(b.energy), sum(b.valued)::bigint
        FROM mm CROSS JOIN LATERAL energy.meter_buckets(mm.meter_id, p_granularity, p_lo, p_hi) b
        GROUP BY b.bucket;
    ELSIF p_granularity IN ('day', 'week') THEN
        RETURN QUERY
        SELECT CASE WHEN p_granularity = 'day' THEN e.bucket ELSE time_bucket(INTERVAL '1 week', e.bucket, zone) END,
               sum(e.energy), sum(e.valued)::bigint
        FROM energy.entity_daily e
        WHERE e.entity_kind = p_kind AND e.entity_id = p_entity_id AND e.direction = p_direction
          AND e.category_id = p_category_id AND e.bucket >= p_lo AND e.bucket < p_hi
        GROUP BY 1;
    ELSE
        RETURN QUERY
        SELECT CASE WHEN p_granularity = 'month' THEN e.bucket ELSE date_trunc('year', e.bucket, zone) END,
               sum(e.energy), sum(e.valued)::bigint
        FROM energy.entity_monthly e
        WHERE e.entity_kind = p_kind AND e.entity_id = p_entity_id AND e.direction = p_direction
          AND e.category_id = p_category_id AND e.bucket >= p_lo AND e.bucket < p_hi
        GROUP BY 1;
    END IF;
END $$;

-- One meter's energy for every bucket in [p_from, p_to): missing buckets present, energy NULL.
CREATE OR REPLACE FUNCTION api.meter_series(p_meter_id integer, p_granularity text,
                                            p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, energy numeric, expected bigint, present bigint, missing bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    s energy.rollup_setting;
    lo timestamptz;
    hi timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM config.meter WHERE id = p_meter_id) THEN
        RAISE EXCEPTION 'no meter with id %', p_meter_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO s FROM energy.rollup_setting;
    lo := energy.bucket_start(p_granularity, p_from, s.reporting_timezone, s.hour_origin);
    hi := energy.bucket_ceil(p_granularity, p_to, s.reporting_timezone, s.hour_origin);
    RETURN QUERY
    SELECT sb.bucket, d.energy, sb.intervals::bigint, coalesce(d.valued, 0),
           sb.intervals - coalesce(d.valued, 0)
    FROM energy.bucket_series(p_granularity, p_from, p_to) sb
    LEFT JOIN energy.meter_buckets(p_meter_id, p_granularity, lo, hi) d ON d.bucket = sb.bucket
    ORDER BY sb.bucket;
END $$;

-- One entity's energy in one category and direction for every bucket in [p_from, p_to):
-- missing buckets present with energy NULL; expected counts every member meter.
CREATE OR REPLACE FUNCTION api.entity_series(p_kind text, p_entity_id integer, p_category_id integer,
                                             p_granularity text, p_from timestamptz, p_to timestamptz,
                                             p_direction text DEFAULT 'input')
RETURNS TABLE (bucket timestamptz, energy numeric, meters bigint, expected bigint, present bigint, missing bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    s energy.rollup_setting;
    lo timestamptz;
    hi timestamptz;
    n bigint;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('space', 'equipment', 'combined_equipment', 'tenant', 'store',
                                        'shopfloor', 'cost_center') THEN
        RAISE EXCEPTION 'unknown entity kind %: use space, equipment, combined_equipment, tenant, store, '
            'shopfloor or cost_center', quote_nullable(p_kind) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_direction IS NULL OR p_direction NOT IN ('input', 'output') THEN
        RAISE EXCEPTION 'unknown direction %: use input or output', quote_nullable(p_direction)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM energy.entity e WHERE e.entity_kind = p_kind AND e.entity_id = p_entity_id) THEN
        RAISE EXCEPTION 'no % with id %', p_kind, p_entity_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT count(*) INTO n FROM energy.entity_meter em JOIN config.meter m ON m.id = em.meter_id
    WHERE em.entity_kind = p_kind AND em.entity_id = p_entity_id AND em.direction = p_direction
      AND m.category_id = p_category_id;
    SELECT * INTO s FROM energy.rollup_setting;
    lo := energy.bucket_start(p_granularity, p_from, s.reporting_timezone, s.hour_origin);
    hi := energy.bucket_ceil(p_granularity, p_to, s.reporting_timezone, s.hour_origin);
    RETURN QUERY
    SELECT sb.bucket, d.energy, n, n * sb.intervals, coalesce(d.valued, 0),
           n * sb.intervals - coalesce(d.valued, 0)
    FROM energy.bucket_series(p_granularity, p_from, p_to) sb
    LEFT JOIN energy.entity_buckets(p_kind, p_entity_id, p_direction, p_category_id, p_granularity, lo, hi) d
        ON d.bucket = sb.bucket
    ORDER BY sb.bucket;
END $$;

-- migrate:down
DROP FUNCTION IF EXISTS api.entity_series(text, integer, integer, text, timestamptz, timestamptz, text);
DROP FUNCTION IF EXISTS api.meter_series(integer, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS energy.entity_buckets(text, integer, text, integer, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS energy.meter_buckets(integer, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS energy.bucket_series(text, timestamptz, timestamptz);
DROP VIEW IF EXISTS api.entity_energy_item_monthly;
DROP VIEW IF EXISTS api.entity_energy_item_daily;
DROP VIEW IF EXISTS api.entity_energy_monthly;
DROP VIEW IF EXISTS api.entity_energy_daily;
DROP VIEW IF EXISTS api.meter_energy_monthly;
DROP VIEW IF EXISTS api.meter_energy_daily;
DROP VIEW IF EXISTS api.meter_energy_hourly;
