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
-- carbon.meter_emission view, one row per meter and 15-minute interval (UTC start) of
--                       energy.meter_interval for meters whose category is in the inventory
--                       (has a factor or a series): scope, location- and market-based
--                       kgCO2e, kgce (numeric), the factors used and flags, computed on read
--                       from the current factors. Read by reports (15-minute resolution)
--                       and by the definition of the rollups.
-- carbon.meter_hourly / meter_daily / meter_monthly: tables per meter, scope and local
--                       bucket of the energy rollups' reporting zone; one definition
--                       (carbon.rollup_definition: sums over carbon.meter_emission), filled
--                       by jobs.carbon through carbon.refresh_meter_rollup from the hourly
--                       energy rollup and the factor timeline (carbon.factor_timeline),
--                       the same rows on both editions. Read by the api views
--                       api.carbon_hourly, api.carbon_daily and api.carbon_monthly.
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

-- The meters in the carbon inventory: category, grid region (rkey: 0 for none), scope,
-- coal-equivalent factor.
CREATE VIEW carbon.meter_carbon AS
SELECT mt.id AS meter_id, mt.category_id, r.region_id, coalesce(r.region_id, 0) AS rkey, cs.scope,
       c.kgce_factor
FROM config.meter mt
JOIN config.energy_category c ON c.id = mt.category_id
JOIN carbon.category_scope cs ON cs.category_id = mt.category_id
JOIN carbon.meter_region r ON r.meter_id = mt.id;

-- Interval emissions ----------------------------------------------------------------------
-- carbon.meter_emission: the rule of docs/carbon.md, interval by interval, over
-- energy.meter_interval and the current factors and series. A view, not a table: the
-- stage materialises only the rollups (35 M interval rows a year for 1,000 meters cost
-- more to write than everything else). kgCO2e and kgce are numeric products
-- (energy::numeric × factor), so the rollups, sums of them, are exact and do not depend
-- on summation order. Predicates on meter_id and ts reach the interval hypertable's index.
CREATE VIEW carbon.meter_emission AS
SELECT i.meter_id, i.ts, m.scope,
       i.energy::numeric * coalesce(gl.k, lf.k) AS kgco2e_location,
       i.energy::numeric * coalesce(gm.k, mf.k, gl.k, lf.k) AS kgco2e_market,
       i.energy::numeric * m.kgce_factor AS kgce,
       CASE WHEN gl.k IS NULL THEN lf.id END AS location_factor_id,
       CASE WHEN gm.k IS NULL THEN mf.id END AS market_factor_id,
       (CASE WHEN gl.k IS NOT NULL THEN 1 ELSE 0 END)
       | (CASE WHEN gm.k IS NOT NULL THEN 2 ELSE 0 END)
       | (CASE WHEN gm.k IS NULL AND mf.k IS NULL THEN 4 ELSE 0 END)
       | (CASE WHEN (gl.k IS NULL AND lf.dflt) OR (gm.k IS NULL AND mf.dflt) THEN 8 ELSE 0 END)
       | (CASE WHEN gl.k IS NULL AND lf.k IS NULL THEN 16 ELSE 0 END)
       | (CASE WHEN i.energy IS NULL THEN 32 ELSE 0 END)
       | (CASE WHEN m.region_id IS NULL THEN 64 ELSE 0 END) AS flags
FROM energy.meter_interval i
JOIN carbon.meter_carbon m ON m.meter_id = i.meter_id
LEFT JOIN LATERAL (   -- periods are at most an hour long and never overlap: one short index range
                      -- (LIMIT keeps it a parameterised index scan)
    SELECT g.kgco2e_per_kwh AS k FROM carbon.grid_intensity g
    WHERE g.region_id = m.region_id AND g.category_id = m.category_id AND g.basis = 'location'
      AND g.ts <= i.ts AND g.ts > i.ts - INTERVAL '1 hour' AND g.ts_end > i.ts LIMIT 1) gl ON true
LEFT JOIN LATERAL (
    SELECT g.kgco2e_per_kwh AS k FROM carbon.grid_intensity g
    WHERE g.region_id = m.region_id AND g.category_id = m.category_id AND g.basis = 'market'
      AND g.ts <= i.ts AND g.ts > i.ts - INTERVAL '1 hour' AND g.ts_end > i.ts LIMIT 1) gm ON true
LEFT JOIN LATERAL (   -- the region's own factor, else the one without region
    SELECT f.id, f.kgco2e_per_unit AS k, f.region_id IS NULL AS dflt FROM config.emission_factor f
    WHERE f.category_id = m.category_id AND f.basis = 'location'
      AND (f.region_id = m.region_id OR f.region_id IS NULL) AND f.valid_from <= i.ts AND f.valid_to > i.ts
    ORDER BY f.region_id IS NULL LIMIT 1) lf ON true
LEFT JOIN LATERAL (
    SELECT f.id, f.kgco2e_per_unit AS k, f.region_id IS NULL AS dflt FROM config.emission_factor f
    WHERE f.category_id = m.category_id AND f.basis = 'market'
      AND (f.region_id = m.region_id OR f.region_id IS NULL) AND f.valid_from <= i.ts AND f.valid_to > i.ts
    ORDER BY f.region_id IS NULL LIMIT 1) mf ON true;

-- The factor timeline over [p_lo, p_hi) (finite) for the (category, region) pairs of the
-- given meters (NULL: all): [lo, hi) segments cut at every factor validity boundary and
-- every intensity period boundary, each with what applies throughout it — the static
-- factors (region's own, else without region: *_default) with their ids, the intensity
-- values, and the resulting per-unit factors lk (location) and mk (market) and the
-- flags they imply (all but energy_missing and no_region, which depend on the meter
-- and the interval). A few rows per pair without series, one per period with series.
CREATE FUNCTION carbon.factor_timeline(p_lo timestamptz, p_hi timestamptz, p_meter_ids integer[] DEFAULT NULL)
RETURNS TABLE (category_id integer, region_id integer, rkey integer, lo timestamptz, hi timestamptz,
               lf_id integer, mf_id integer, gl_k numeric, gm_k numeric, lk numeric, mk numeric, sflags integer)
LANGUAGE sql STABLE AS $$
    WITH grp AS (
        SELECT DISTINCT m.category_id, m.region_id, m.rkey FROM carbon.meter_carbon m
        WHERE p_meter_ids IS NULL OR m.meter_id = ANY (p_meter_ids)
    ),
    cuts AS (
        SELECT g.category_id, g.region_id, g.rkey, c.t
        FROM grp g
        CROSS JOIN LATERAL (
            SELECT p_lo AS t
            UNION SELECT p_hi
            UNION SELECT b.t FROM config.emission_factor f, LATERAL (VALUES (f.valid_from), (f.valid_to)) b(t)
                  WHERE f.category_id = g.category_id AND (f.region_id = g.region_id OR f.region_id IS NULL)
                    AND b.t > p_lo AND b.t < p_hi
            UNION SELECT b.t FROM carbon.grid_intensity gi, LATERAL (VALUES (gi.ts), (gi.ts_end)) b(t)
                  WHERE gi.region_id = g.region_id AND gi.category_id = g.category_id
                    AND gi.ts < p_hi AND gi.ts_end > p_lo AND b.t > p_lo AND b.t < p_hi
        ) c
    ),
    seg AS (
        SELECT c.category_id, c.region_id, c.rkey, c.t AS lo,
               lead(c.t) OVER (PARTITION BY c.category_id, c.rkey ORDER BY c.t) AS hi
        FROM cuts c
    ),
    st AS (
        SELECT s.category_id, s.region_id, s.rkey, s.lo, s.hi,
               lf.id AS lf_id, lf.k AS lf_k, lf.dflt AS l_default,
               mf.id AS mf_id, mf.k AS mf_k, mf.dflt AS m_default, gl.k AS gl_k, gm.k AS gm_k
        FROM seg s
        LEFT JOIN LATERAL (
            SELECT g.kgco2e_per_kwh AS k FROM carbon.grid_intensity g
            WHERE g.region_id = s.region_id AND g.category_id = s.category_id AND g.basis = 'location'
              AND g.ts <= s.lo AND g.ts > s.lo - INTERVAL '1 hour' AND g.ts_end > s.lo LIMIT 1) gl ON true
        LEFT JOIN LATERAL (
            SELECT g.kgco2e_per_kwh AS k FROM carbon.grid_intensity g
            WHERE g.region_id = s.region_id AND g.category_id = s.category_id AND g.basis = 'market'
              AND g.ts <= s.lo AND g.ts > s.lo - INTERVAL '1 hour' AND g.ts_end > s.lo LIMIT 1) gm ON true
        LEFT JOIN LATERAL (
            SELECT f.id, f.kgco2e_per_unit AS k, f.region_id IS NULL AS dflt FROM config.emission_factor f
            WHERE f.category_id = s.category_id AND f.basis = 'location'
              AND (f.region_id = s.region_id OR f.region_id IS NULL) AND f.valid_from <= s.lo AND f.valid_to > s.lo
            ORDER BY f.region_id IS NULL LIMIT 1) lf ON true
        LEFT JOIN LATERAL (
            SELECT f.id, f.kgco2e_per_unit AS k, f.region_id IS NULL AS dflt FROM config.emission_factor f
            WHERE f.category_id = s.category_id AND f.basis = 'market'
              AND (f.region_id = s.region_id OR f.region_id IS NULL) AND f.valid_from <= s.lo AND f.valid_to > s.lo
            ORDER BY f.region_id IS NULL LIMIT 1) mf ON true
        WHERE s.hi IS NOT NULL
    )
    SELECT category_id, region_id, rkey, lo, hi,
           CASE WHEN gl_k IS NULL THEN lf_id END, CASE WHEN gm_k IS NULL THEN mf_id END, gl_k, gm_k,
           coalesce(gl_k, lf_k), coalesce(gm_k, mf_k, gl_k, lf_k),
           (CASE WHEN gl_k IS NOT NULL THEN 1 ELSE 0 END)
           | (CASE WHEN gm_k IS NOT NULL THEN 2 ELSE 0 END)
           | (CASE WHEN gm_k IS NULL AND mf_k IS NULL THEN 4 ELSE 0 END)
           | (CASE WHEN (gl_k IS NULL AND l_default) OR (gm_k IS NULL AND m_default) THEN 8 ELSE 0 END)
           | (CASE WHEN gl_k IS NULL AND lf_k IS NULL THEN 16 ELSE 0 END)
    FROM st
$$;

-- Rollups ----------------------------------------------------------------------------------
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

-- THE definition of each carbon rollup: per meter, scope and bucket, the sums of the
-- interval emissions (numeric), the intervals present and the union of their flags;
-- hours by the energy rollups' fixed origin, days and months in their zone, months from
-- days. The rollups are tables on both editions (their source is a view joining factors,
-- which a continuous aggregate cannot follow); carbon.refresh_meter_rollup fills hours and
-- days by a faster route that gives exactly these rows (tests/test_carbon_rollups.py),
-- and months with this very SELECT.
CREATE FUNCTION carbon.rollup_definition(granularity text, zone text, origin timestamptz,
                                         filter text DEFAULT '')
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF granularity IN ('hour', 'day') THEN
        RETURN format($q$SELECT meter_id, scope,
       %1$s AS bucket,
       sum(kgco2e_location) AS kgco2e_location,
       sum(kgco2e_market) AS kgco2e_market,
       sum(kgce) AS kgce,
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

-- (Re)create the carbon rollups, empty tables, in the energy rollups' zone and hour
-- origin. Returns the materialisation ('table'). The caller fills them
-- (app.carbon.rebuild_rollups).
CREATE FUNCTION carbon.build_meter_rollups() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    e energy.rollup_setting;
    g text;
BEGIN
    SELECT * INTO e FROM energy.rollup_setting;
    IF e.reporting_timezone IS NULL THEN
        RAISE EXCEPTION 'the energy rollups are not built: carbon rollups follow their zone';
    END IF;
    PERFORM carbon.drop_meter_rollups();
    INSERT INTO carbon.rollup_setting (reporting_timezone, hour_origin, materialisation)
    VALUES (e.reporting_timezone, e.hour_origin, 'table');
    FOREACH g IN ARRAY ARRAY['hour', 'day', 'month'] LOOP
        PERFORM energy.create_rollup_object('carbon', carbon.rollup_object(g),
                                            carbon.rollup_definition(g, e.reporting_timezone, e.hour_origin),
                                            'table', 'meter_id, scope, bucket');
    END LOOP;
    PERFORM carbon.create_api_views();
    RETURN 'table';
END $$;

-- [lo, hi) clamped to the span of the meters' hourly energy when a bound is infinite.
CREATE FUNCTION carbon.data_window(p_lo timestamptz, p_hi timestamptz, p_meter_ids integer[],
                                   OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    lo := p_lo;
    hi := p_hi;
    IF isfinite(lo) AND isfinite(hi) THEN
        RETURN;
    END IF;
    SELECT greatest(lo, min(h.bucket)), least(hi, max(h.bucket) + INTERVAL '1 hour') INTO lo, hi
    FROM energy.meter_hourly h
    WHERE h.bucket >= p_lo AND h.bucket < p_hi AND (p_meter_ids IS NULL OR h.meter_id = ANY (p_meter_ids));
END $$;

-- The buckets of one rollup (hour or day) lying wholly inside [p_start, p_end): their rows
-- for the meters (NULL: all) are deleted, and the window is returned clamped to where the
-- meters have hourly energy (NULL or empty: nothing to recompute).
CREATE FUNCTION carbon.clear_window(granularity text, p_start timestamptz, p_end timestamptz,
                                    p_meter_ids integer[], OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    s carbon.rollup_setting;
BEGIN
    SELECT * INTO s FROM carbon.rollup_setting;
    lo := energy.bucket_ceil(granularity, p_start, s.reporting_timezone, s.hour_origin);
    hi := energy.bucket_start(granularity, p_end, s.reporting_timezone, s.hour_origin);
    IF lo >= hi THEN
        RETURN;
    END IF;
    EXECUTE format('DELETE FROM carbon.%I WHERE bucket >= $1 AND bucket < $2 '
                   'AND ($3::integer[] IS NULL OR meter_id = ANY ($3))', carbon.rollup_object(granularity))
        USING lo, hi, p_meter_ids;
    SELECT w.lo, w.hi INTO lo, hi FROM carbon.data_window(lo, hi, p_meter_ids) w;
END $$;

-- Hourly rollup, buckets wholly inside [p_start, p_end), for the given meters (NULL: all).
-- An hour in which the factor timeline does not change is the meter's hourly energy
-- (energy.meter_hourly: sum(energy::numeric)) times the factors: exactly the sum of the
-- interval products, without reading the intervals. Hours with a timeline boundary
-- inside (a factor change off the hour, 15/30-minute series, an hour origin at :30 with
-- hourly series) are summed from the intervals, each priced by its own segment. Reads
-- energy.meter_hourly, so the energy rollups must be current over the range (jobs.carbon
-- runs after jobs.rollups). Returns the intervals covered.
CREATE FUNCTION carbon.refresh_hourly(p_start timestamptz, p_end timestamptz, p_meter_ids integer[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s  carbon.rollup_setting;
    lo timestamptz;
    hi timestamptz;
    n  bigint;
BEGIN
    SELECT * INTO s FROM carbon.rollup_setting;
    SELECT w.lo, w.hi INTO lo, hi FROM carbon.clear_window('hour', p_start, p_end, p_meter_ids) w;
    IF lo IS NULL OR lo >= hi THEN
        RETURN 0;
    END IF;

    DROP TABLE IF EXISTS pg_temp.carbon_tl, pg_temp.carbon_hour, pg_temp.carbon_quarter, pg_temp.carbon_m;
    CREATE TEMP TABLE carbon_m AS
        SELECT m.*, CASE WHEN m.region_id IS NULL THEN 64 ELSE 0 END AS mflags FROM carbon.meter_carbon m
        WHERE p_meter_ids IS NULL OR m.meter_id = ANY (p_meter_ids);
    CREATE TEMP TABLE carbon_tl AS
        SELECT t.*, energy.bucket_ceil('hour', t.lo, s.reporting_timezone, s.hour_origin) AS hour_ceil,
               energy.bucket_start('hour', t.hi, s.reporting_timezone, s.hour_origin) AS hour_floor,
               CASE WHEN time_bucket(INTERVAL '15 minutes', t.lo) = t.lo THEN t.lo
                    ELSE time_bucket(INTERVAL '15 minutes', t.lo) + INTERVAL '15 minutes' END AS q_ceil
        FROM carbon.factor_timeline(lo, hi, p_meter_ids) t;
    -- Whole hours inside one segment.
    CREATE TEMP TABLE carbon_hour AS
        SELECT t.category_id, t.rkey, b.bucket, t.lk, t.mk, t.sflags
        FROM carbon_tl t
        CROSS JOIN LATERAL generate_series(t.hour_ceil, t.hi - INTERVAL '1 hour', INTERVAL '1 hour') b(bucket);
    -- The quarter hours of the other hours, each with its segment: those before the
    -- segment's first whole hour and those after its last.
    CREATE TEMP TABLE carbon_quarter AS
        SELECT DISTINCT t.category_id, t.rkey, q.ts,
               time_bucket(INTERVAL '1 hour', q.ts, origin => s.hour_origin) AS bucket, t.lk, t.mk, t.sflags
        FROM carbon_tl t
        CROSS JOIN LATERAL (
            SELECT generate_series(t.q_ceil, least(t.hi, t.hour_ceil) - INTERVAL '1 microsecond',
                                   INTERVAL '15 minutes') AS ts
            UNION ALL
            SELECT generate_series(greatest(t.q_ceil, t.hour_floor), t.hi - INTERVAL '1 microsecond',
                                   INTERVAL '15 minutes')
            WHERE t.hour_floor >= t.hour_ceil
        ) q;
    ANALYZE carbon_m, carbon_hour, carbon_quarter;

    WITH ins AS (
        INSERT INTO carbon.meter_hourly (meter_id, scope, bucket, kgco2e_location, kgco2e_market, kgce, intervals, flags)
        SELECT h.meter_id, m.scope, h.bucket, h.energy * c.lk, h.energy * c.mk, h.energy * m.kgce_factor,
               h.intervals, c.sflags | m.mflags | CASE WHEN h.valued < h.intervals THEN 32 ELSE 0 END
        FROM energy.meter_hourly h
        JOIN carbon_m m ON m.meter_id = h.meter_id
        JOIN carbon_hour c ON c.category_id = m.category_id AND c.rkey = m.rkey AND c.bucket = h.bucket
        WHERE h.bucket >= lo AND h.bucket < hi AND (p_meter_ids IS NULL OR h.meter_id = ANY (p_meter_ids))
        -- no ORDER BY: the hash joins keep the order of energy.meter_hourly, which its
        -- refresh wrote in (meter, bucket) order; sorting millions of rows costs more
        RETURNING intervals)
    SELECT coalesce(sum(intervals), 0) INTO n FROM ins;

    IF EXISTS (SELECT 1 FROM carbon_quarter) THEN
        WITH ins AS (
            INSERT INTO carbon.meter_hourly (meter_id, scope, bucket, kgco2e_location, kgco2e_market, kgce, intervals, flags)
            SELECT i.meter_id, m.scope, c.bucket, sum(i.energy::numeric * c.lk), sum(i.energy::numeric * c.mk),
                   sum(i.energy::numeric * m.kgce_factor), count(*),
                   bit_or(c.sflags | m.mflags | CASE WHEN i.energy IS NULL THEN 32 ELSE 0 END)
            FROM energy.meter_interval i
            JOIN carbon_m m ON m.meter_id = i.meter_id
            JOIN carbon_quarter c ON c.category_id = m.category_id AND c.rkey = m.rkey AND c.ts = i.ts
            WHERE i.ts >= lo AND i.ts < hi AND (p_meter_ids IS NULL OR i.meter_id = ANY (p_meter_ids))
            GROUP BY i.meter_id, m.scope, c.bucket
            ORDER BY 1, 2, 3
            RETURNING intervals)
        SELECT n + coalesce(sum(intervals), 0) INTO n FROM ins;
    END IF;
    DROP TABLE carbon_m, carbon_tl, carbon_hour, carbon_quarter;
    RETURN n;
END $$;

-- Daily rollup, days wholly inside [p_start, p_end), for the given meters (NULL: all).
-- A day lying wholly in one segment of the factor timeline is the meter's daily energy
-- (energy.meter_daily) times the factors, exactly as for hours. Other days are the sum of
-- their hourly rows where the local day is a whole number of hour buckets (every zone
-- whose offsets differ by whole hours), else (Lord Howe Island in winter) the sum of the
-- interval view. Reads energy.meter_daily and carbon.meter_hourly (refresh hours first).
CREATE FUNCTION carbon.refresh_daily(p_start timestamptz, p_end timestamptz, p_meter_ids integer[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s  carbon.rollup_setting;
    lo timestamptz;
    hi timestamptz;
    n  bigint;
    k  bigint;
BEGIN
    SELECT * INTO s FROM carbon.rollup_setting;
    SELECT w.lo, w.hi INTO lo, hi FROM carbon.clear_window('day', p_start, p_end, p_meter_ids) w;
    IF lo IS NULL OR lo >= hi THEN
        RETURN 0;
    END IF;
    lo := energy.bucket_start('day', lo, s.reporting_timezone, s.hour_origin);
    hi := energy.bucket_ceil('day', hi, s.reporting_timezone, s.hour_origin);

    DROP TABLE IF EXISTS pg_temp.carbon_m, pg_temp.carbon_tl, pg_temp.carbon_days, pg_temp.carbon_day,
        pg_temp.carbon_vday, pg_temp.carbon_vhour;
    CREATE TEMP TABLE carbon_m AS
        SELECT m.*, CASE WHEN m.region_id IS NULL THEN 64 ELSE 0 END AS mflags FROM carbon.meter_carbon m
        WHERE p_meter_ids IS NULL OR m.meter_id = ANY (p_meter_ids);
    CREATE TEMP TABLE carbon_tl AS SELECT * FROM carbon.factor_timeline(lo, hi, p_meter_ids);
    -- The local days of the window, as the energy rollups bucket them.
    CREATE TEMP TABLE carbon_days AS
        SELECT d, energy.bucket_next('day', d, s.reporting_timezone) AS d_end
        FROM (SELECT DISTINCT time_bucket(INTERVAL '1 day', x, s.reporting_timezone) AS d
              FROM generate_series(lo, hi - INTERVAL '15 minutes', INTERVAL '15 minutes') x) b;
    CREATE INDEX ON carbon_days (d);
    ANALYZE carbon_days;
    -- Days wholly inside one segment, with the segment's factors.
    CREATE TEMP TABLE carbon_day AS
        SELECT t.category_id, t.rkey, y.d, t.lk, t.mk, t.sflags
        FROM carbon_tl t
        CROSS JOIN LATERAL (SELECT y.d FROM carbon_days y
                            WHERE y.d >= t.lo AND y.d < t.hi AND y.d_end <= t.hi) y;
    -- The other days of each (category, region).
    CREATE TEMP TABLE carbon_vday AS
        SELECT g.category_id, g.rkey, y.d, y.d_end,
               time_bucket(INTERVAL '1 hour', y.d, origin => s.hour_origin) = y.d
               AND time_bucket(INTERVAL '1 hour', y.d_end, origin => s.hour_origin) = y.d_end AS whole_hours
        FROM (SELECT DISTINCT category_id, rkey FROM carbon_m) g CROSS JOIN carbon_days y
        WHERE NOT EXISTS (SELECT 1 FROM carbon_day c
                          WHERE c.category_id = g.category_id AND c.rkey = g.rkey AND c.d = y.d);
    -- Their hour buckets, where the day is whole hours.
    CREATE TEMP TABLE carbon_vhour AS
        SELECT v.category_id, v.rkey, v.d, b.bucket
        FROM carbon_vday v
        CROSS JOIN LATERAL generate_series(v.d, v.d_end - INTERVAL '1 hour', INTERVAL '1 hour') b(bucket)
        WHERE v.whole_hours;
    ANALYZE carbon_m, carbon_day, carbon_vday, carbon_vhour;

    WITH ins AS (
        INSERT INTO carbon.meter_daily (meter_id, scope, bucket, kgco2e_location, kgco2e_market, kgce, intervals, flags)
        SELECT e.meter_id, m.scope, e.bucket, e.energy * c.lk, e.energy * c.mk, e.energy * m.kgce_factor,
               e.intervals, c.sflags | m.mflags | CASE WHEN e.valued < e.intervals THEN 32 ELSE 0 END
        FROM energy.meter_daily e
        JOIN carbon_m m ON m.meter_id = e.meter_id
        JOIN carbon_day c ON c.category_id = m.category_id AND c.rkey = m.rkey AND c.d = e.bucket
        WHERE e.bucket >= lo AND e.bucket < hi AND (p_meter_ids IS NULL OR e.meter_id = ANY (p_meter_ids))
        RETURNING 1)
    SELECT count(*) INTO n FROM ins;

    IF EXISTS (SELECT 1 FROM carbon_vhour) THEN
        INSERT INTO carbon.meter_daily (meter_id, scope, bucket, kgco2e_location, kgco2e_market, kgce, intervals, flags)
        SELECT h.meter_id, h.scope, v.d, sum(h.kgco2e_location), sum(h.kgco2e_market), sum(h.kgce),
               sum(h.intervals)::bigint, bit_or(h.flags)
        FROM carbon.meter_hourly h
        JOIN carbon_m m ON m.meter_id = h.meter_id
        JOIN carbon_vhour v ON v.category_id = m.category_id AND v.rkey = m.rkey AND v.bucket = h.bucket
        WHERE h.bucket >= lo AND h.bucket < hi AND (p_meter_ids IS NULL OR h.meter_id = ANY (p_meter_ids))
          AND h.meter_id IN (SELECT m2.meter_id FROM carbon_m m2
                             WHERE EXISTS (SELECT 1 FROM carbon_vday v2 WHERE v2.category_id = m2.category_id
                                           AND v2.rkey = m2.rkey AND v2.whole_hours))
        GROUP BY h.meter_id, h.scope, v.d;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
    IF EXISTS (SELECT 1 FROM carbon_vday WHERE NOT whole_hours) THEN
        INSERT INTO carbon.meter_daily (meter_id, scope, bucket, kgco2e_location, kgco2e_market, kgce, intervals, flags)
        SELECT e.meter_id, e.scope, v.d, sum(e.kgco2e_location), sum(e.kgco2e_market), sum(e.kgce),
               count(*), bit_or(e.flags)
        FROM carbon_vday v
        JOIN carbon_m m ON m.category_id = v.category_id AND m.rkey = v.rkey
        JOIN carbon.meter_emission e ON e.meter_id = m.meter_id AND e.ts >= v.d AND e.ts < v.d_end
        WHERE NOT v.whole_hours
        GROUP BY e.meter_id, e.scope, v.d;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
    DROP TABLE carbon_m, carbon_tl, carbon_days, carbon_day, carbon_vday, carbon_vhour;
    RETURN n;
END $$;

-- Recompute one rollup's buckets lying wholly inside [p_start, p_end) for the given
-- meters (NULL: all); the window shrinks inward to whole buckets, as
-- refresh_continuous_aggregate does. Callers widen outward first and refresh hour, day,
-- month in that order (app.carbon).
CREATE FUNCTION carbon.refresh_meter_rollup(granularity text, p_start timestamptz, p_end timestamptz,
                                            p_meter_ids integer[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s carbon.rollup_setting;
BEGIN
    SELECT * INTO s FROM carbon.rollup_setting;
    IF s.materialisation IS DISTINCT FROM 'table' THEN
        RAISE EXCEPTION 'the carbon rollups are not built: run carbon.build_meter_rollups()';
    END IF;
    IF granularity = 'hour' THEN
        RETURN carbon.refresh_hourly(p_start, p_end, p_meter_ids);
    ELSIF granularity = 'day' THEN
        RETURN carbon.refresh_daily(p_start, p_end, p_meter_ids);
    ELSIF granularity <> 'month' THEN
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
DROP FUNCTION IF EXISTS carbon.refresh_daily(timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS carbon.refresh_hourly(timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS carbon.clear_window(text, timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS carbon.data_window(timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS carbon.build_meter_rollups();
DROP FUNCTION IF EXISTS carbon.create_api_views();
DROP FUNCTION IF EXISTS carbon.drop_meter_rollups();
DROP FUNCTION IF EXISTS carbon.rollup_definition(text, text, timestamptz, text);
DROP FUNCTION IF EXISTS carbon.rollup_object(text);
DROP TABLE IF EXISTS carbon.rollup_setting;
DROP FUNCTION IF EXISTS carbon.factor_timeline(timestamptz, timestamptz, integer[]);
DROP VIEW IF EXISTS carbon.meter_emission;
DROP VIEW IF EXISTS carbon.meter_carbon;
DROP FUNCTION IF EXISTS carbon.meters_of(integer, integer);
DROP VIEW IF EXISTS carbon.category_scope, carbon.meter_region;
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
