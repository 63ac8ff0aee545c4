-- Carbon: emission factors, grid intensity series, interval emissions and their rollups.
--
-- config.carbon_region  one row per grid region (bidding zone, eGRID subregion, …).
--                       Meters get theirs from config.meter.grid_region_id, else from the
--                       nearest space (linked space or an ancestor) with grid_region_id.
-- config.emission_factor one row per category, region (NULL: any region), basis and
--                       validity period: kgCO2e per unit of the category, its scope and
--                       source. Written by `wattline carbon factors import`
--                       (app/carbon.py); read by jobs.carbon.
-- carbon.grid_intensity one row per region, category, basis and period (15, 30 or 60
--                       minutes): kgCO2e/kWh. Written by `wattline carbon intensity
--                       import`; read by jobs.carbon, where it takes precedence over the
--                       static factors.
-- carbon.meter_emission hypertable, one row per meter and 15-minute interval (UTC start)
--                       for meters whose category is in the inventory (has a factor or a
--                       series): scope, location- and market-based kgCO2e, kgce, the
--                       factors used and flags. Written by jobs.carbon only; read by the
--                       rollups and reports.
-- carbon.meter_hourly / meter_daily / meter_monthly: per meter, scope and local bucket of
--                       the energy rollups' reporting zone; one definition
--                       (carbon.rollup_definition), a continuous aggregate on the
--                       Community edition, else a table refreshed by
--                       carbon.refresh_meter_rollup — the same scheme as
--                       sql/energy_rollups.sql. Read by the api views api.carbon_hourly,
--                       api.carbon_daily and api.carbon_monthly.
--
-- Triggers log meter dirty ranges (reason 'carbon: …') when a factor, an intensity value,
-- a region assignment or a category's kgce factor changes, bounded by the data that
-- exists, so jobs.carbon recomputes exactly the affected periods. docs/carbon.md states
-- the rules.

CREATE TABLE config.carbon_region (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    description text
);

ALTER TABLE config.space ADD COLUMN grid_region_id integer
    REFERENCES config.carbon_region (id) ON DELETE RESTRICT;
ALTER TABLE config.meter ADD COLUMN grid_region_id integer
    REFERENCES config.carbon_region (id) ON DELETE RESTRICT;

CREATE TABLE config.emission_factor (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    category_id     integer     NOT NULL REFERENCES config.energy_category (id) ON DELETE RESTRICT,
    region_id       integer     REFERENCES config.carbon_region (id) ON DELETE RESTRICT,  -- NULL: any region
    basis           text        NOT NULL CHECK (basis IN ('location', 'market')),
    scope           smallint    NOT NULL CHECK (scope IN (1, 2, 3)),
    valid_from      timestamptz NOT NULL DEFAULT '-infinity',
    valid_to        timestamptz NOT NULL DEFAULT 'infinity',
    kgco2e_per_unit numeric     NOT NULL CHECK (kgco2e_per_unit >= 0),  -- per unit of the category
    source          text        NOT NULL CHECK (btrim(source) <> ''),    -- publication, year, table
    CHECK (valid_from < valid_to),
    -- One factor applies at any instant to a category, region and basis.
    CONSTRAINT emission_factor_no_overlap EXCLUDE USING gist (
        category_id WITH =, (coalesce(region_id, 0)) WITH =, basis WITH =,
        tstzrange(valid_from, valid_to) WITH &&) DEFERRABLE INITIALLY DEFERRED,
    -- A category belongs to one scope (the inventory's classification, not the factor's).
    CONSTRAINT emission_factor_one_scope EXCLUDE USING gist (category_id WITH =, scope WITH <>)
        DEFERRABLE INITIALLY DEFERRED
);
-- The natural key the importer upserts on.
CREATE UNIQUE INDEX emission_factor_key ON config.emission_factor
    (category_id, (coalesce(region_id, 0)), basis, valid_from);

CREATE TABLE carbon.grid_intensity (
    region_id      integer     NOT NULL REFERENCES config.carbon_region (id) ON DELETE RESTRICT,
    category_id    integer     NOT NULL REFERENCES config.energy_category (id) ON DELETE RESTRICT,
    basis          text        NOT NULL CHECK (basis IN ('location', 'market')),
    ts             timestamptz NOT NULL,   -- period start
    ts_end         timestamptz NOT NULL,   -- period end: 15, 30 or 60 minutes later
    kgco2e_per_kwh numeric     NOT NULL CHECK (kgco2e_per_kwh >= 0),
    source         text,
    PRIMARY KEY (region_id, category_id, basis, ts),
    CHECK (extract(epoch FROM ts)::bigint % 900 = 0),
    CHECK (ts_end - ts IN (INTERVAL '15 minutes', INTERVAL '30 minutes', INTERVAL '1 hour')),
    CONSTRAINT grid_intensity_no_overlap EXCLUDE USING gist (
        region_id WITH =, category_id WITH =, basis WITH =, tstzrange(ts, ts_end) WITH &&)
        DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE carbon.meter_emission (
    meter_id           integer          NOT NULL,
    ts                 timestamptz      NOT NULL,
    scope              smallint         NOT NULL,
    kgco2e_location    double precision,
    kgco2e_market      double precision,
    kgce               double precision,
    location_factor_id integer,          -- config.emission_factor used (NULL: series or none)
    market_factor_id   integer,
    flags              integer          NOT NULL DEFAULT 0,
    CHECK (extract(epoch FROM ts)::bigint % 900 = 0)
);
SELECT create_hypertable('carbon.meter_emission', by_range('ts', INTERVAL '7 days'),
                         create_default_indexes => false);
CREATE UNIQUE INDEX meter_emission_meter_ts_uq ON carbon.meter_emission (meter_id, ts);

CREATE TABLE carbon.flag (
    bit         integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL
);
INSERT INTO carbon.flag VALUES
    (1,  'location_series',    'location-based value from the grid intensity series'),
    (2,  'market_series',      'market-based value from the grid intensity series'),
    (4,  'market_fallback',    'no market-based factor or series: market-based value = location-based value'),
    (8,  'default_region',     'a factor without region was used: the meter''s region has none for this period'),
    (16, 'no_location_factor', 'no location-based factor or series for the interval: location-based value NULL'),
    (32, 'energy_missing',     'the interval has no energy value'),
    (64, 'no_region',          'the meter has no grid region: only factors without region apply');

CREATE FUNCTION carbon.flag_names(f integer) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(name ORDER BY bit), '{}') FROM carbon.flag WHERE f & bit <> 0
$$;

-- Each meter's grid region: its own, else the nearest space (fewest steps up from a
-- space it is linked to; ties to the lower space id) that has one.
CREATE VIEW carbon.meter_region AS
SELECT DISTINCT ON (m.id) m.id AS meter_id, coalesce(m.grid_region_id, a.grid_region_id) AS region_id
FROM config.meter m
LEFT JOIN config.space_meter sm ON sm.meter_id = m.id AND m.grid_region_id IS NULL
LEFT JOIN config.space_closure c ON c.space_id = sm.space_id
LEFT JOIN config.space a ON a.id = c.ancestor_id AND a.grid_region_id IS NOT NULL
ORDER BY m.id, (a.grid_region_id IS NULL), c.depth, a.id;

-- The categories in the carbon inventory and their scope: the scope of their factors,
-- else 2 for a category that only has grid intensity series (purchased electricity).
CREATE VIEW carbon.category_scope AS
SELECT c.id AS category_id,
       coalesce((SELECT f.scope FROM config.emission_factor f WHERE f.category_id = c.id LIMIT 1), 2::smallint)
           AS scope
FROM config.energy_category c
WHERE EXISTS (SELECT 1 FROM config.emission_factor f WHERE f.category_id = c.id)
   OR EXISTS (SELECT 1 FROM carbon.grid_intensity g WHERE g.category_id = c.id);

-- Interval emissions ----------------------------------------------------------------------
-- Recompute carbon.meter_emission for the given meters (NULL: all) over [p_start, p_end):
-- delete what is there, insert from energy.meter_interval. Returns rows written.
--
-- The static factors are first resolved into a factor timeline: per (category, region)
-- of the meters concerned, [lo, hi) segments cut at every factor boundary, each with
-- the location- and market-based factor that applies (the region's own, else the one
-- without region). The intervals then join that small table once, by (category,
-- region) and range; the intensity series, cut into quarter hours and pivoted by basis,
-- are joined only when some series overlaps the span.
CREATE FUNCTION carbon.compute_emissions(p_start timestamptz, p_end timestamptz,
                                         p_meter_ids integer[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n          bigint;
    has_series boolean;
BEGIN
    DELETE FROM carbon.meter_emission e
    WHERE e.ts >= p_start AND e.ts < p_end AND (p_meter_ids IS NULL OR e.meter_id = ANY (p_meter_ids));

    has_series := EXISTS (SELECT 1 FROM carbon.grid_intensity gi WHERE gi.ts < p_end AND gi.ts_end > p_start);

    EXECUTE format($q$
    INSERT INTO carbon.meter_emission (meter_id, ts, scope, kgco2e_location, kgco2e_market, kgce,
                                       location_factor_id, market_factor_id, flags)
    WITH m AS MATERIALIZED (
        SELECT mt.id AS meter_id, mt.category_id, r.region_id, coalesce(r.region_id, 0) AS rkey, cs.scope,
               c.kgce_factor::double precision AS kgce_factor
        FROM config.meter mt
        JOIN config.energy_category c ON c.id = mt.category_id
        JOIN carbon.category_scope cs ON cs.category_id = mt.category_id
        JOIN carbon.meter_region r ON r.meter_id = mt.id
        WHERE $3::integer[] IS NULL OR mt.id = ANY ($3)
    ),
    grp AS (SELECT DISTINCT category_id, region_id, rkey FROM m),
    cuts AS (   -- every factor boundary inside the span, and the span's ends
        SELECT g.category_id, g.region_id, g.rkey, c.t
        FROM grp g
        CROSS JOIN LATERAL (
            SELECT $1 AS t
            UNION SELECT $2
            UNION SELECT b.t FROM config.emission_factor f, LATERAL (VALUES (f.valid_from), (f.valid_to)) b(t)
                  WHERE f.category_id = g.category_id AND (f.region_id = g.region_id OR f.region_id IS NULL)
                    AND b.t > $1 AND b.t < $2
        ) c
    ),
    seg AS (
        SELECT category_id, region_id, rkey, t AS lo,
               lead(t) OVER (PARTITION BY category_id, rkey ORDER BY t) AS hi
        FROM cuts
    ),
    tl AS MATERIALIZED (   -- the factor timeline: one row per segment
        SELECT s.category_id, s.rkey, s.lo, s.hi,
               coalesce(lr.id, ld.id) AS lf_id, coalesce(lr.k, ld.k) AS lf_k,
               (lr.id IS NULL AND ld.id IS NOT NULL) AS l_default,
               coalesce(mr.id, md.id) AS mf_id, coalesce(mr.k, md.k) AS mf_k,
               (mr.id IS NULL AND md.id IS NOT NULL) AS m_default
        FROM seg s
        LEFT JOIN LATERAL (SELECT f.id, f.kgco2e_per_unit::double precision AS k FROM config.emission_factor f
                           WHERE f.basis = 'location' AND f.category_id = s.category_id AND f.region_id = s.region_id
                             AND f.valid_from <= s.lo AND f.valid_to > s.lo) lr ON true
        LEFT JOIN LATERAL (SELECT f.id, f.kgco2e_per_unit::double precision AS k FROM config.emission_factor f
                           WHERE f.basis = 'location' AND f.category_id = s.category_id AND f.region_id IS NULL
                             AND f.valid_from <= s.lo AND f.valid_to > s.lo) ld ON true
        LEFT JOIN LATERAL (SELECT f.id, f.kgco2e_per_unit::double precision AS k FROM config.emission_factor f
                           WHERE f.basis = 'market' AND f.category_id = s.category_id AND f.region_id = s.region_id
                             AND f.valid_from <= s.lo AND f.valid_to > s.lo) mr ON true
        LEFT JOIN LATERAL (SELECT f.id, f.kgco2e_per_unit::double precision AS k FROM config.emission_factor f
                           WHERE f.basis = 'market' AND f.category_id = s.category_id AND f.region_id IS NULL
                             AND f.valid_from <= s.lo AND f.valid_to > s.lo) md ON true
        WHERE s.hi IS NOT NULL
    ),
    g AS MATERIALIZED (   -- intensity periods cut into quarter hours, both bases on one row
        SELECT gi.region_id, gi.category_id, q.ts,
               max(gi.kgco2e_per_kwh::double precision) FILTER (WHERE gi.basis = 'location') AS gl_k,
               max(gi.kgco2e_per_kwh::double precision) FILTER (WHERE gi.basis = 'market') AS gm_k
        FROM carbon.grid_intensity gi
        CROSS JOIN LATERAL generate_series(gi.ts, gi.ts_end - INTERVAL '15 minutes', INTERVAL '15 minutes') q(ts)
        WHERE gi.ts < $2 AND gi.ts_end > $1
        GROUP BY gi.region_id, gi.category_id, q.ts
    ),
    x AS (
        SELECT i.meter_id, i.ts, i.energy, m.scope, m.kgce_factor, m.region_id,
               %1$s, tl.lf_id, tl.lf_k, tl.l_default, tl.mf_id, tl.mf_k, tl.m_default
        FROM energy.meter_interval i
        JOIN m ON m.meter_id = i.meter_id
        JOIN tl ON tl.category_id = m.category_id AND tl.rkey = m.rkey AND i.ts >= tl.lo AND i.ts < tl.hi
        %2$s
        WHERE i.ts >= $1 AND i.ts < $2 AND ($3::integer[] IS NULL OR i.meter_id = ANY ($3))
    )
    SELECT meter_id, ts, scope,
           energy * coalesce(gl_k, lf_k),
           energy * coalesce(gm_k, mf_k, gl_k, lf_k),
           energy * kgce_factor,
           CASE WHEN gl_k IS NULL THEN lf_id END,
           CASE WHEN gm_k IS NULL THEN mf_id END,
           (CASE WHEN gl_k IS NOT NULL THEN 1 ELSE 0 END)
           | (CASE WHEN gm_k IS NOT NULL THEN 2 ELSE 0 END)
           | (CASE WHEN gm_k IS NULL AND mf_k IS NULL THEN 4 ELSE 0 END)
           | (CASE WHEN (gl_k IS NULL AND l_default) OR (gm_k IS NULL AND m_default) THEN 8 ELSE 0 END)
           | (CASE WHEN gl_k IS NULL AND lf_k IS NULL THEN 16 ELSE 0 END)
           | (CASE WHEN energy IS NULL THEN 32 ELSE 0 END)
           | (CASE WHEN region_id IS NULL THEN 64 ELSE 0 END)
    FROM x
    ORDER BY meter_id, ts   -- index order: the unique index is filled page by page$q$,
        CASE WHEN has_series THEN 'g.gl_k, g.gm_k' ELSE 'NULL::double precision AS gl_k, NULL::double precision AS gm_k' END,
        CASE WHEN has_series THEN 'LEFT JOIN g ON g.region_id = m.region_id AND g.category_id = m.category_id AND g.ts = i.ts'
             ELSE '' END)
    USING p_start, p_end, p_meter_ids;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Rollups (same scheme as sql/energy_rollups.sql) ---------------------------------------
-- The zone and hour origin the carbon rollups were built with (copied from
-- energy.rollup_setting; jobs.carbon rebuilds them when the energy rollups move zone).
CREATE TABLE carbon.rollup_setting (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    reporting_timezone text        NOT NULL,
    hour_origin        timestamptz NOT NULL,
    materialisation    text        NOT NULL CHECK (materialisation IN ('table', 'cagg')),
    built_at           timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION carbon.rollup_object(granularity text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE granularity WHEN 'hour' THEN 'meter_hourly' WHEN 'day' THEN 'meter_daily'
                            WHEN 'month' THEN 'meter_monthly' END
$$;

-- THE definition of each carbon rollup: numeric sums (identical on both materialisations),
-- hours by a fixed origin, days and months in the zone, months hierarchical on days.
CREATE FUNCTION carbon.rollup_definition(granularity text, zone text, origin timestamptz,
                                         filter text DEFAULT '')
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF granularity IN ('hour', 'day') THEN
        RETURN format($q$SELECT meter_id, scope,
       %1$s AS bucket,
       sum(kgco2e_location::numeric) AS kgco2e_location,
       sum(kgco2e_market::numeric) AS kgco2e_market,
       sum(kgce::numeric) AS kgce,
       count(*) AS intervals,
       bit_or(flags) AS flags
FROM carbon.meter_emission %2$s
GROUP BY meter_id, scope, %1$s$q$,
            CASE granularity WHEN 'hour' THEN format('time_bucket(INTERVAL ''1 hour'', ts, origin => %L::timestamptz)', origin)
                             ELSE format('time_bucket(INTERVAL ''1 day'', ts, %L)', zone) END,
            filter);
    ELSIF granularity = 'month' THEN
        RETURN format($q$SELECT meter_id, scope,
       time_bucket(INTERVAL '1 month', bucket, %1$L) AS bucket,
       sum(kgco2e_location) AS kgco2e_location,
       sum(kgco2e_market) AS kgco2e_market,
       sum(kgce) AS kgce,
       sum(intervals)::bigint AS intervals,
       bit_or(flags) AS flags
FROM carbon.meter_daily %2$s
GROUP BY meter_id, scope, time_bucket(INTERVAL '1 month', bucket, %1$L)$q$, zone, filter);
    END IF;
    RAISE EXCEPTION 'unknown rollup granularity %: use hour, day or month', granularity;
END $$;

CREATE FUNCTION carbon.drop_meter_rollups() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g text;
BEGIN
    FOREACH g IN ARRAY ARRAY['month', 'day', 'hour'] LOOP
        PERFORM energy.drop_rollup_object('carbon', carbon.rollup_object(g));
    END LOOP;
    DELETE FROM carbon.rollup_setting;
END $$;

-- The api views over the rollups (dropped with them, so recreated by every build).
CREATE FUNCTION carbon.create_api_views() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g text;
BEGIN
    FOREACH g IN ARRAY ARRAY['hour', 'day', 'month'] LOOP
        EXECUTE format($v$CREATE OR REPLACE VIEW api.%I AS
SELECT r.meter_id, m.name AS meter, m.category_id, c.name AS category, c.unit, r.scope,
       r.bucket, %s r.kgco2e_location, r.kgco2e_market, r.kgce, r.intervals, r.flags,
       carbon.flag_names(r.flags) AS flag_names
FROM carbon.%I r
JOIN config.meter m ON m.id = r.meter_id
JOIN config.energy_category c ON c.id = m.category_id
CROSS JOIN carbon.rollup_setting s$v$,
            CASE g WHEN 'hour' THEN 'carbon_hourly' WHEN 'day' THEN 'carbon_daily' ELSE 'carbon_monthly' END,
            CASE g WHEN 'hour' THEN ''
                   WHEN 'day' THEN '(r.bucket AT TIME ZONE s.reporting_timezone)::date AS day,'
                   ELSE '(r.bucket AT TIME ZONE s.reporting_timezone)::date AS month,' END,
            carbon.rollup_object(g));
    END LOOP;
END $$;

-- (Re)create the carbon rollups, empty, in the energy rollups' zone and hour origin:
-- continuous aggregates where the edition has them, else tables. Returns the
-- materialisation. The caller fills them (app.carbon.rebuild_rollups).
CREATE FUNCTION carbon.build_meter_rollups() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    e    energy.rollup_setting;
    kind text := energy.rollup_materialisation();
    g    text;
BEGIN
    SELECT * INTO e FROM energy.rollup_setting;
    IF e.reporting_timezone IS NULL THEN
        RAISE EXCEPTION 'the energy rollups are not built: carbon rollups follow their zone';
    END IF;
    PERFORM carbon.drop_meter_rollups();
    INSERT INTO carbon.rollup_setting (reporting_timezone, hour_origin, materialisation)
    VALUES (e.reporting_timezone, e.hour_origin, kind);
    FOREACH g IN ARRAY ARRAY['hour', 'day', 'month'] LOOP
        PERFORM energy.create_rollup_object('carbon', carbon.rollup_object(g),
                                            carbon.rollup_definition(g, e.reporting_timezone, e.hour_origin),
                                            kind, 'meter_id, scope, bucket');
    END LOOP;
    PERFORM carbon.create_api_views();
    RETURN kind;
END $$;

-- Table path: recompute one rollup's buckets lying wholly inside [p_start, p_end) for the
-- given meters (NULL: all); the window shrinks inward to whole buckets, as
-- refresh_continuous_aggregate does. Callers widen outward first (app.carbon).
CREATE FUNCTION carbon.refresh_meter_rollup(granularity text, p_start timestamptz, p_end timestamptz,
                                            p_meter_ids integer[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s carbon.rollup_setting;
BEGIN
    SELECT * INTO s FROM carbon.rollup_setting;
    IF s.materialisation IS DISTINCT FROM 'table' THEN
        RAISE EXCEPTION 'carbon.% is not a rollup table here: refresh it with '
            'refresh_continuous_aggregate outside a transaction', carbon.rollup_object(granularity);
    END IF;
    IF granularity NOT IN ('hour', 'day', 'month') THEN
        RAISE EXCEPTION 'unknown rollup granularity %: use hour, day or month', granularity;
    END IF;
    RETURN energy.refill_rollup_table(
        'carbon', carbon.rollup_object(granularity),
        carbon.rollup_definition(granularity, s.reporting_timezone, s.hour_origin,
                                 energy.rollup_refresh_filter(granularity)),
        'meter_id, scope, bucket',
        energy.bucket_ceil(granularity, p_start, s.reporting_timezone, s.hour_origin),
        energy.bucket_start(granularity, p_end, s.reporting_timezone, s.hour_origin),
        p_meter_ids);
END $$;

-- Recomputation triggers ----------------------------------------------------------------
-- A meter's span of 15-minute intervals, NULL when it has none.
CREATE FUNCTION carbon.meter_interval_span(p_meter integer) RETURNS tstzrange
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN lo IS NOT NULL THEN tstzrange(lo, hi + INTERVAL '15 minutes') END
    FROM (SELECT (SELECT min(ts) FROM energy.meter_interval WHERE meter_id = p_meter) AS lo,
                 (SELECT max(ts) FROM energy.meter_interval WHERE meter_id = p_meter) AS hi) x
$$;

-- Log [p_from, p_to) ∩ each meter's data span for the given meters.
CREATE FUNCTION carbon.log_meters_dirty(p_meter_ids integer[], p_from timestamptz, p_to timestamptz,
                                        p_reason text)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO ops.dirty_range (meter_id, range_start, range_end, reason)
    SELECT id, lower(s), upper(s), p_reason
    FROM unnest(p_meter_ids) id
    CROSS JOIN LATERAL (SELECT carbon.meter_interval_span(id) * tstzrange(p_from, p_to) AS s) x
    WHERE x.s IS NOT NULL AND NOT isempty(x.s)
$$;

-- Meters of a category in a region (NULL region: every region).
CREATE FUNCTION carbon.meters_of(p_category integer, p_region integer) RETURNS integer[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(m.id), '{}') FROM config.meter m JOIN carbon.meter_region r ON r.meter_id = m.id
    WHERE m.category_id = p_category AND (p_region IS NULL OR r.region_id = p_region)
$$;

-- Statement-level: the validity periods of the inserted, deleted and changed factors.
CREATE FUNCTION carbon.log_factor_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM carbon.log_meters_dirty(carbon.meters_of(category_id, region_id), valid_from, valid_to,
                                        'carbon: emission factor added')
        FROM (SELECT DISTINCT category_id, region_id, valid_from, valid_to FROM changed_new) n;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM carbon.log_meters_dirty(carbon.meters_of(category_id, region_id), valid_from, valid_to,
                                        'carbon: emission factor removed')
        FROM (SELECT DISTINCT category_id, region_id, valid_from, valid_to FROM changed_old) o;
    ELSE
        PERFORM carbon.log_meters_dirty(carbon.meters_of(category_id, region_id), valid_from, valid_to,
                                        'carbon: emission factor changed')
        FROM (SELECT n.category_id, n.region_id, n.valid_from, n.valid_to
              FROM changed_new n JOIN changed_old o USING (id) WHERE n IS DISTINCT FROM o
              UNION
              SELECT o.category_id, o.region_id, o.valid_from, o.valid_to
              FROM changed_new n JOIN changed_old o USING (id) WHERE n IS DISTINCT FROM o) c;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER emission_factor_insert AFTER INSERT ON config.emission_factor
    REFERENCING NEW TABLE AS changed_new FOR EACH STATEMENT EXECUTE FUNCTION carbon.log_factor_change();
CREATE TRIGGER emission_factor_update AFTER UPDATE ON config.emission_factor
    REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION carbon.log_factor_change();
CREATE TRIGGER emission_factor_delete AFTER DELETE ON config.emission_factor
    REFERENCING OLD TABLE AS changed_old FOR EACH STATEMENT EXECUTE FUNCTION carbon.log_factor_change();

-- Statement-level: the span of the changed intensity periods per region and category.
CREATE FUNCTION carbon.log_intensity_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM carbon.log_meters_dirty(carbon.meters_of(category_id, region_id), lo, hi,
                                        'carbon: grid intensity changed')
        FROM (SELECT region_id, category_id, min(ts) AS lo, max(ts_end) AS hi FROM changed_new
              GROUP BY region_id, category_id) n;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM carbon.log_meters_dirty(carbon.meters_of(category_id, region_id), lo, hi,
                                        'carbon: grid intensity changed')
        FROM (SELECT region_id, category_id, min(ts) AS lo, max(ts_end) AS hi FROM changed_old
              GROUP BY region_id, category_id) o;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER grid_intensity_insert AFTER INSERT ON carbon.grid_intensity
    REFERENCING NEW TABLE AS changed_new FOR EACH STATEMENT EXECUTE FUNCTION carbon.log_intensity_change();
CREATE TRIGGER grid_intensity_update AFTER UPDATE ON carbon.grid_intensity
    REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION carbon.log_intensity_change();
CREATE TRIGGER grid_intensity_delete AFTER DELETE ON carbon.grid_intensity
    REFERENCING OLD TABLE AS changed_old FOR EACH STATEMENT EXECUTE FUNCTION carbon.log_intensity_change();

-- A meter's region or category changed: all of its history.
CREATE FUNCTION carbon.log_meter_region_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.grid_region_id, OLD.category_id) IS DISTINCT FROM (NEW.grid_region_id, NEW.category_id) THEN
        PERFORM carbon.log_meters_dirty(ARRAY[NEW.id], '-infinity', 'infinity',
                                        'carbon: meter region or category changed');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER meter_carbon_recompute AFTER UPDATE OF grid_region_id, category_id ON config.meter
    FOR EACH ROW EXECUTE FUNCTION carbon.log_meter_region_change();

-- A space's region changed: all history of the meters linked to it or below it.
CREATE FUNCTION carbon.log_space_region_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.grid_region_id IS DISTINCT FROM NEW.grid_region_id THEN
        PERFORM carbon.log_meters_dirty(
            (SELECT coalesce(array_agg(DISTINCT sm.meter_id), '{}') FROM config.space_closure c
             JOIN config.space_meter sm ON sm.space_id = c.space_id WHERE c.ancestor_id = NEW.id),
            '-infinity', 'infinity', 'carbon: space region changed');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER space_carbon_recompute AFTER UPDATE OF grid_region_id ON config.space
    FOR EACH ROW EXECUTE FUNCTION carbon.log_space_region_change();

-- A category's coal-equivalent factor changed: all history of its meters.
CREATE FUNCTION carbon.log_kgce_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.kgce_factor IS DISTINCT FROM NEW.kgce_factor THEN
        PERFORM carbon.log_meters_dirty(carbon.meters_of(NEW.id, NULL), '-infinity', 'infinity',
                                        'carbon: category kgce factor changed');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER category_carbon_recompute AFTER UPDATE OF kgce_factor ON config.energy_category
    FOR EACH ROW EXECUTE FUNCTION carbon.log_kgce_change();

SELECT carbon.build_meter_rollups();

-- migrate:down
SELECT carbon.drop_meter_rollups();
DROP VIEW IF EXISTS api.carbon_monthly, api.carbon_daily, api.carbon_hourly;
DROP TRIGGER IF EXISTS category_carbon_recompute ON config.energy_category;
DROP TRIGGER IF EXISTS space_carbon_recompute ON config.space;
DROP TRIGGER IF EXISTS meter_carbon_recompute ON config.meter;
DROP FUNCTION IF EXISTS carbon.refresh_meter_rollup(text, timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS carbon.build_meter_rollups();
DROP FUNCTION IF EXISTS carbon.create_api_views();
DROP FUNCTION IF EXISTS carbon.drop_meter_rollups();
DROP FUNCTION IF EXISTS carbon.rollup_definition(text, text, timestamptz, text);
DROP FUNCTION IF EXISTS carbon.rollup_object(text);
DROP TABLE IF EXISTS carbon.rollup_setting;
DROP FUNCTION IF EXISTS carbon.compute_emissions(timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS carbon.meters_of(integer, integer);
DROP VIEW IF EXISTS carbon.category_scope, carbon.meter_region;
DROP TABLE IF EXISTS carbon.meter_emission;
DROP TABLE IF EXISTS carbon.grid_intensity;
DROP TABLE IF EXISTS config.emission_factor;
DROP FUNCTION IF EXISTS carbon.log_kgce_change(), carbon.log_space_region_change(),
    carbon.log_meter_region_change(), carbon.log_intensity_change(), carbon.log_factor_change();
DROP FUNCTION IF EXISTS carbon.log_meters_dirty(integer[], timestamptz, timestamptz, text);
DROP FUNCTION IF EXISTS carbon.meter_interval_span(integer);
DROP FUNCTION IF EXISTS carbon.flag_names(integer);
DROP TABLE IF EXISTS carbon.flag;
ALTER TABLE config.meter DROP COLUMN IF EXISTS grid_region_id;
ALTER TABLE config.space DROP COLUMN IF EXISTS grid_region_id;
DROP TABLE IF EXISTS config.carbon_region;
