-- Billing: tariffs and who they apply to (config), monthly bills with revisions, and the
-- 15-minute interval cost with its hourly / daily / monthly rollups (billing).
-- Grain: config.tariff one row per tariff (label); config.tariff_assignment one row per
-- target (cost center + category, tenant + category, or meter) and validity span;
-- billing.bill one row per entity (meter, cost_center, tenant), category, billing period
-- and revision, billing.bill_line one row per priced line; billing.meter_cost one row per
-- meter and 15-minute interval. Written by app.tariffs (tariffs) and jobs.billing (the
-- rest); read by reports, the API and dashboards. Semantics: docs/billing.md.
-- Money is numeric everywhere: bill lines in cents, interval cost in micro-units, so
-- interval cost sums to the bills exactly.

-- A tariff: the validated URDB-shaped definition plus the Wattline extensions
-- (definition->'wattline'), and the object exactly as imported (source).
CREATE TABLE config.tariff (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label       text        NOT NULL UNIQUE CHECK (btrim(label) <> ''),
    name        text        NOT NULL CHECK (btrim(name) <> ''),
    utility     text,
    timezone    text        NOT NULL CHECK (config.valid_timezone(timezone)),
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    valid_from  timestamptz NOT NULL DEFAULT '-infinity',
    valid_to    timestamptz NOT NULL DEFAULT 'infinity',
    definition  jsonb       NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    source      jsonb       NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_from < valid_to)
);

-- Which tariff prices which meters, when. A cost center's assignment covers its meters of
-- the category; a tenant's assignment overrides it for the tenant's meters; a meter's
-- assignment overrides both (category implied by the meter).
CREATE TABLE config.tariff_assignment (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tariff_id      integer     NOT NULL REFERENCES config.tariff (id) ON DELETE RESTRICT,
    category_id    integer     REFERENCES config.energy_category (id) ON DELETE CASCADE,
    cost_center_id integer     REFERENCES config.cost_center (id) ON DELETE CASCADE,
    tenant_id      integer     REFERENCES config.tenant (id) ON DELETE CASCADE,
    meter_id       integer     REFERENCES config.meter (id) ON DELETE CASCADE,
    valid_from     timestamptz NOT NULL DEFAULT '-infinity',
    valid_to       timestamptz NOT NULL DEFAULT 'infinity',
    CHECK (num_nonnulls(cost_center_id, tenant_id, meter_id) = 1),
    CHECK (meter_id IS NOT NULL OR category_id IS NOT NULL),
    CHECK (valid_from < valid_to)
);
ALTER TABLE config.tariff_assignment ADD CONSTRAINT tariff_assignment_no_overlap
    EXCLUDE USING gist (coalesce(cost_center_id, 0) WITH =, coalesce(tenant_id, 0) WITH =,
                        coalesce(meter_id, 0) WITH =, coalesce(category_id, 0) WITH =,
                        tstzrange(valid_from, valid_to) WITH &&);
CREATE INDEX tariff_assignment_tariff_idx ON config.tariff_assignment (tariff_id);

-- Where a meter's reactive energy (kvarh) comes from, for power-factor rules: the
-- reactive meter is an ordinary meter (category such as 'reactive energy', unit kvarh).
CREATE TABLE config.reactive_meter (
    meter_id          integer NOT NULL PRIMARY KEY REFERENCES config.meter (id) ON DELETE CASCADE,
    reactive_meter_id integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    CHECK (meter_id <> reactive_meter_id)
);

-- Meters an assignment reaches (its meter, the tenant's or the cost center's meters of
-- the category), whatever the precedence: used to log what a change makes dirty.
CREATE FUNCTION config.tariff_assignment_meters(a config.tariff_assignment)
RETURNS SETOF integer LANGUAGE sql STABLE AS $$
    SELECT a.meter_id WHERE a.meter_id IS NOT NULL
    UNION
    SELECT tm.meter_id FROM config.tenant_meter tm JOIN config.meter m ON m.id = tm.meter_id
    WHERE tm.tenant_id = a.tenant_id AND m.category_id = a.category_id
    UNION
    SELECT m.id FROM config.meter m
    WHERE m.cost_center_id = a.cost_center_id AND m.category_id = a.category_id
$$;

-- Log the reached meters' energy span inside the assignment's validity as dirty, so
-- jobs.billing re-prices it (reason 'tariff: …'; other stages ignore nothing, but a
-- rollup recompute of unchanged energy is harmless).
CREATE FUNCTION config.log_tariff_assignment_dirty(a config.tariff_assignment, reason text)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO ops.dirty_range (meter_id, range_start, range_end, reason)
    SELECT x.meter_id, greatest(a.valid_from, x.lo), least(a.valid_to, x.hi), reason
    FROM (
        SELECT am AS meter_id,
               (SELECT min(ts) FROM energy.meter_interval WHERE meter_id = am) AS lo,
               (SELECT max(ts) + interval '15 minutes' FROM energy.meter_interval WHERE meter_id = am) AS hi
        FROM config.tariff_assignment_meters(a) am
    ) x
    WHERE x.lo IS NOT NULL AND greatest(a.valid_from, x.lo) < least(a.valid_to, x.hi)
$$;

CREATE FUNCTION config.tariff_assignment_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM config.log_tariff_assignment_dirty(OLD, 'tariff: assignment changed');
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM config.log_tariff_assignment_dirty(NEW, 'tariff: assignment changed');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tariff_assignment_dirty AFTER INSERT OR UPDATE OR DELETE ON config.tariff_assignment
    FOR EACH ROW EXECUTE FUNCTION config.tariff_assignment_changed();

-- A corrected tariff re-prices every meter it reaches.
CREATE FUNCTION config.tariff_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.definition, OLD.valid_from, OLD.valid_to, OLD.timezone, OLD.currency)
       IS NOT DISTINCT FROM (NEW.definition, NEW.valid_from, NEW.valid_to, NEW.timezone, NEW.currency) THEN
        RETURN NULL;
    END IF;
    PERFORM config.log_tariff_assignment_dirty(a, 'tariff: definition changed')
    FROM config.tariff_assignment a WHERE a.tariff_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER tariff_dirty AFTER UPDATE ON config.tariff
    FOR EACH ROW EXECUTE FUNCTION config.tariff_changed();

-- Billing settings: how long after a period ends its bills stay open for late data.
CREATE TABLE billing.setting (
    singleton    boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    grace_period interval NOT NULL DEFAULT '5 days' CHECK (grace_period >= '0')
);
INSERT INTO billing.setting DEFAULT VALUES;

-- Up to where jobs.billing has priced each meter's energy (end of its last interval):
-- newer intervals are the incremental run's work besides the dirty-range log.
CREATE TABLE billing.meter_watermark (
    meter_id   integer PRIMARY KEY,
    data_until timestamptz NOT NULL
);

-- A bill: one entity, one category, one billing period, one revision. The open period's
-- bill (status 'open') is updated in place; a closed bill is never changed: a different
-- result makes revision n+1 (is_current moves to it; difference = total - previous_total).
CREATE TABLE billing.bill (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_kind    text        NOT NULL CHECK (entity_kind IN ('meter', 'cost_center', 'tenant')),
    entity_id      integer     NOT NULL,
    category_id    integer     NOT NULL,
    period_start   timestamptz NOT NULL,
    period_end     timestamptz NOT NULL,
    revision       integer     NOT NULL DEFAULT 1 CHECK (revision >= 1),
    is_current     boolean     NOT NULL DEFAULT true,
    status         text        NOT NULL CHECK (status IN ('open', 'closed')),
    currency       text        NOT NULL,
    energy         numeric     NOT NULL,   -- billed consumption, category unit
    subtotal       numeric(18, 2) NOT NULL, -- before taxes
    taxes          numeric(18, 2) NOT NULL,
    total          numeric(18, 2) NOT NULL,
    previous_total numeric(18, 2),          -- total of the revision this one replaces
    difference     numeric(18, 2),          -- total - previous_total
    computed_at    timestamptz NOT NULL DEFAULT now(),
    closed_at      timestamptz,
    UNIQUE (entity_kind, entity_id, category_id, period_start, revision),
    CHECK (period_start < period_end)
);
CREATE UNIQUE INDEX bill_current_uq ON billing.bill (entity_kind, entity_id, category_id, period_start)
    WHERE is_current;
CREATE INDEX bill_period_idx ON billing.bill (period_start, period_end);

-- One priced line: quantity × rate = amount (rounded half up to cents). period/tier are
-- the tariff's 0-based TOU period and tier indexes (NULL where they do not apply).
CREATE TABLE billing.bill_line (
    bill_id       bigint      NOT NULL REFERENCES billing.bill (id) ON DELETE CASCADE,
    line_no       integer     NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('energy', 'demand', 'fixed', 'minimum',
                                                       'power_factor', 'tax')),
    tariff_id     integer     NOT NULL,
    segment_start timestamptz NOT NULL,
    segment_end   timestamptz NOT NULL,
    period        integer,
    tier          integer,
    description   text        NOT NULL,
    quantity      numeric     NOT NULL,
    unit          text        NOT NULL,
    rate          numeric     NOT NULL,
    amount        numeric(18, 2) NOT NULL,
    PRIMARY KEY (bill_id, line_no)
);

-- Interval cost: the meter's bill spread onto its 15-minute intervals. energy_charge is
-- the energy lines at the interval's effective rate; allocated_charge the demand, fixed,
-- minimum, power-factor and tax lines allocated by the rule in docs/billing.md.
-- flags: 1 allocated charges present · 2 holiday · 4 weekend/holiday schedule ·
--        8 bill open (to date) · 16 energy missing (NULL or no interval row)
CREATE TABLE billing.meter_cost (
    meter_id         integer     NOT NULL,
    ts               timestamptz NOT NULL,
    tariff_id        integer     NOT NULL,
    period           smallint,
    energy_charge    numeric     NOT NULL,
    allocated_charge numeric     NOT NULL,
    total            numeric     NOT NULL,
    flags            smallint    NOT NULL DEFAULT 0,
    CHECK (time_bucket('15 minutes', ts) = ts)   -- quarter-hour starts (extract(epoch) is numeric: slower)
);
SELECT create_hypertable('billing.meter_cost', by_range('ts', INTERVAL '7 days'),
                         create_default_indexes => false);
CREATE UNIQUE INDEX meter_cost_meter_ts_uq ON billing.meter_cost (meter_id, ts);

-- Cost rollups billing.cost_daily / cost_monthly, built with the energy rollups' machinery
-- (sql/energy_rollups.sql): one SQL definition per grain, materialised as a table on
-- every edition, which billing.refresh_cost_rollup refills over whole buckets with the
-- very same SELECT (the billing stage writes the days that lie wholly inside the periods
-- it re-priced straight from its priced arrays, the same rows:
-- tests/test_billing_entity_cost.py compares them). Not a continuous aggregate even where
-- the edition has them: the stage writes interval cost and rollups in one transaction,
-- and a continuous aggregate can only be refreshed outside it, after the commit.
-- Grain: one row per meter, local day / month of the reporting zone and energy TOU period
-- (`period`, -1 for intervals without one), so a cost breakdown by TOU period reads
-- rollups, not 15-minute rows. Sum over `period` for a meter's bucket total.
-- There is no hourly cost rollup: an hour is four interval rows, and materialising
-- 24 rows per meter and day cost as much as writing the interval cost itself; hourly
-- cost reports group billing.meter_cost (app/reports/metrics.py).
CREATE TABLE billing.cost_rollup_setting (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    reporting_timezone text        NOT NULL CHECK (config.valid_timezone(reporting_timezone)),
    hour_origin        timestamptz NOT NULL,
    materialisation    text        NOT NULL CHECK (materialisation IN ('table', 'cagg')),
    built_at           timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION billing.cost_rollup_object(granularity text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE granularity WHEN 'day' THEN 'cost_daily' WHEN 'month' THEN 'cost_monthly' END
$$;

CREATE FUNCTION billing.cost_rollup_definition(granularity text, zone text, origin timestamptz,
                                               filter text DEFAULT '')
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF granularity = 'day' THEN
        RETURN format($q$SELECT meter_id,
       time_bucket(INTERVAL '1 day', ts, %L) AS bucket,
       coalesce(period, -1)::smallint AS period,
       sum(energy_charge) AS energy_charge, sum(allocated_charge) AS allocated_charge,
       sum(total) AS total, count(*) AS intervals
FROM billing.meter_cost %s
GROUP BY meter_id, time_bucket(INTERVAL '1 day', ts, %L), coalesce(period, -1)$q$,
            zone, filter, zone);
    ELSIF granularity = 'month' THEN
        RETURN format($q$SELECT meter_id,
       time_bucket(INTERVAL '1 month', bucket, %L) AS bucket,
       period,
       sum(energy_charge) AS energy_charge, sum(allocated_charge) AS allocated_charge,
       sum(total) AS total, sum(intervals)::bigint AS intervals
FROM billing.cost_daily %s
GROUP BY meter_id, time_bucket(INTERVAL '1 month', bucket, %L), period$q$,
            zone, filter, zone);
    END IF;
    RAISE EXCEPTION 'unknown cost rollup granularity %: use day or month', granularity;
END $$;

CREATE FUNCTION billing.drop_cost_rollups() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g text;
BEGIN
    FOREACH g IN ARRAY ARRAY['month', 'day'] LOOP
        PERFORM energy.drop_rollup_object('billing', billing.cost_rollup_object(g));
    END LOOP;
    PERFORM energy.drop_rollup_object('billing', 'cost_hourly');   -- materialised by earlier builds
END $$;

-- (Re)create the cost rollups, empty, in `zone`; the caller refills them.
CREATE FUNCTION billing.build_cost_rollups(zone text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    origin timestamptz;
    kind   text := 'table';   -- on every edition (see above)
    g      text;
BEGIN
    IF zone IS NULL OR NOT config.valid_timezone(zone) THEN
        RAISE EXCEPTION 'unknown IANA time zone %', quote_nullable(zone)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    origin := '2020-01-01 00:00'::timestamp AT TIME ZONE zone;
    PERFORM billing.drop_cost_rollups();
    -- Entity cost rollups follow the zone of the per-meter ones: the caller refills them.
    TRUNCATE billing.entity_cost_daily, billing.entity_cost_monthly;
    INSERT INTO billing.cost_rollup_setting (reporting_timezone, hour_origin, materialisation, built_at)
    VALUES (zone, origin, kind, now())
    ON CONFLICT (singleton) DO UPDATE
        SET reporting_timezone = EXCLUDED.reporting_timezone, hour_origin = EXCLUDED.hour_origin,
            materialisation = EXCLUDED.materialisation, built_at = EXCLUDED.built_at;
    FOREACH g IN ARRAY ARRAY['day', 'month'] LOOP
        PERFORM energy.create_rollup_object('billing', billing.cost_rollup_object(g),
                                            billing.cost_rollup_definition(g, zone, origin), kind,
                                            'meter_id, bucket, period');
    END LOOP;
    RETURN kind;
END $$;

-- Table path: recompute the buckets lying wholly inside [p_start, p_end) for the meters
-- (NULL: all), shrinking inward to whole buckets like refresh_continuous_aggregate.
CREATE FUNCTION billing.refresh_cost_rollup(granularity text, p_start timestamptz, p_end timestamptz,
                                            p_meter_ids integer[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s billing.cost_rollup_setting;
BEGIN
    SELECT * INTO s FROM billing.cost_rollup_setting;
    IF s.materialisation IS DISTINCT FROM 'table' THEN
        RAISE EXCEPTION 'billing cost rollups are not tables here (%): build them first, or '
            'refresh the continuous aggregates outside a transaction', s.materialisation;
    END IF;
    IF granularity NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'unknown cost rollup granularity %: use day or month', granularity;
    END IF;
    RETURN energy.refill_rollup_table(
        'billing', billing.cost_rollup_object(granularity),
        billing.cost_rollup_definition(granularity, s.reporting_timezone, s.hour_origin,
                                       energy.rollup_refresh_filter(granularity)),
        'meter_id, bucket, period',
        energy.bucket_ceil(granularity, p_start, s.reporting_timezone, s.hour_origin),
        energy.bucket_start(granularity, p_end, s.reporting_timezone, s.hour_origin),
        p_meter_ids);
END $$;

-- Entity cost rollups: daily and monthly cost per organisation entity, by direction,
-- energy category, energy item (0: meters without one) and TOU period (-1: none), the
-- cost counterpart of energy.entity_daily / entity_monthly (sql/entity_rollups.sql) with
-- the same membership (energy.entity_meter: a space counts the is_counted meters of its
-- whole subtree; equipment, combined equipment, tenants, stores, shopfloors and cost
-- centers their linked meters). Grain: one row per entity, direction, category, item,
-- period and local day / month of the cost rollups' zone that has cost; meters = the
-- group's meters with cost in that period and bucket, intervals = their interval rows.
-- Written by jobs.billing through billing.refresh_entity_cost_rollups (from
-- billing.cost_daily, over the months it re-priced) and billing.refresh_dirty_cost_entities
-- (whole history of entities whose meter links changed); read by reports and api views.
CREATE TABLE billing.entity_cost_daily (
    entity_kind      text        NOT NULL CHECK (entity_kind IN ('space', 'equipment', 'combined_equipment',
                                                                 'tenant', 'store', 'shopfloor', 'cost_center')),
    entity_id        integer     NOT NULL,
    bucket           timestamptz NOT NULL,   -- local midnight (local month start in _monthly)
    direction        text        NOT NULL CHECK (direction IN ('input', 'output')),
    category_id      integer     NOT NULL,
    item_id          integer     NOT NULL,   -- 0: meters without an energy item
    period           smallint    NOT NULL,   -- energy TOU period, -1: none
    energy_charge    numeric     NOT NULL,
    allocated_charge numeric     NOT NULL,
    total            numeric     NOT NULL,
    meters           integer     NOT NULL,
    intervals        bigint      NOT NULL,
    PRIMARY KEY (entity_kind, entity_id, bucket, direction, category_id, item_id, period)
);
CREATE TABLE billing.entity_cost_monthly (LIKE billing.entity_cost_daily INCLUDING ALL);

-- Entities whose membership changed, for the billing stage: a copy of every entry the
-- link triggers of sql/entity_rollups.sql log into ops.entity_dirty (which the rollups
-- stage consumes before billing runs). Consumed by billing.refresh_dirty_cost_entities.
CREATE TABLE billing.entity_dirty (LIKE ops.entity_dirty INCLUDING ALL);

CREATE FUNCTION billing.copy_entity_dirty() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO billing.entity_dirty (entity_kind, entity_id, reason)
    VALUES (NEW.entity_kind, NEW.entity_id, NEW.reason);
    RETURN NULL;
END $$;
CREATE TRIGGER entity_dirty_for_billing AFTER INSERT ON ops.entity_dirty
    FOR EACH ROW EXECUTE FUNCTION billing.copy_entity_dirty();

-- Recompute entity cost rollups over [p_start, p_end), widened outward to whole local
-- days (daily) and months (monthly) of the cost rollups' zone; infinite bounds mean the
-- whole history. Which entities: p_kind + p_entity_ids when given, else those holding
-- any of p_meter_ids, else all. Reads billing.cost_daily, so refresh it first. Returns
-- rows written (0 while the cost rollups are not built).
CREATE FUNCTION billing.refresh_entity_cost_rollups(p_start timestamptz, p_end timestamptz,
                                                    p_meter_ids integer[] DEFAULT NULL,
                                                    p_kind text DEFAULT NULL,
                                                    p_entity_ids integer[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    zone text := (SELECT reporting_timezone FROM billing.cost_rollup_setting);
    d0 timestamptz;
    d1 timestamptz;
    m0 timestamptz;
    m1 timestamptz;
    everyone boolean := p_kind IS NULL AND p_meter_ids IS NULL;
    n bigint;
    total bigint := 0;
BEGIN
    IF zone IS NULL OR p_start >= p_end OR to_regclass('billing.cost_daily') IS NULL THEN
        RETURN 0;
    END IF;
    d0 := energy.bucket_start('day', p_start, zone, NULL);
    d1 := energy.bucket_ceil('day', p_end, zone, NULL);
    m0 := energy.bucket_start('month', p_start, zone, NULL);
    m1 := energy.bucket_ceil('month', p_end, zone, NULL);
    CREATE TEMP TABLE IF NOT EXISTS entity_cost_refresh_sel (entity_kind text, entity_id integer) ON COMMIT DROP;
    TRUNCATE entity_cost_refresh_sel;
    INSERT INTO entity_cost_refresh_sel SELECT * FROM energy.entities_selected(p_meter_ids, p_kind, p_entity_ids);
    ANALYZE entity_cost_refresh_sel;

    DELETE FROM billing.entity_cost_daily e
    WHERE e.bucket >= d0 AND e.bucket < d1
      AND (everyone OR EXISTS (SELECT 1 FROM entity_cost_refresh_sel s
                               WHERE s.entity_kind = e.entity_kind AND s.entity_id = e.entity_id));
    INSERT INTO billing.entity_cost_daily
    SELECT em.entity_kind, em.entity_id, d.bucket, em.direction, m.category_id, coalesce(m.item_id, 0),
           d.period, sum(d.energy_charge), sum(d.allocated_charge), sum(d.total), count(*)::integer,
           sum(d.intervals)::bigint
    FROM entity_cost_refresh_sel s
    JOIN energy.entity_meter em USING (entity_kind, entity_id)
    JOIN config.meter m ON m.id = em.meter_id
    JOIN billing.cost_daily d ON d.meter_id = em.meter_id AND d.bucket >= d0 AND d.bucket < d1
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;

    DELETE FROM billing.entity_cost_monthly e
    WHERE e.bucket >= m0 AND e.bucket < m1
      AND (everyone OR EXISTS (SELECT 1 FROM entity_cost_refresh_sel s
                               WHERE s.entity_kind = e.entity_kind AND s.entity_id = e.entity_id));
    INSERT INTO billing.entity_cost_monthly
    SELECT e.entity_kind, e.entity_id, time_bucket(INTERVAL '1 month', e.bucket, zone), e.direction,
           e.category_id, e.item_id, e.period, sum(e.energy_charge), sum(e.allocated_charge), sum(e.total),
           max(e.meters), sum(e.intervals)
    FROM billing.entity_cost_daily e
    WHERE e.bucket >= m0 AND e.bucket < m1
      AND (everyone OR EXISTS (SELECT 1 FROM entity_cost_refresh_sel s
                               WHERE s.entity_kind = e.entity_kind AND s.entity_id = e.entity_id))
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY 1, 2, 3, 4, 5, 6, 7;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END $$;

-- Consume billing.entity_dirty: recompute the whole cost history of every entity whose
-- membership changed (energy.take_dirty_entities). Returns rows written.
CREATE FUNCTION billing.refresh_dirty_cost_entities() RETURNS bigint
LANGUAGE sql AS $$
    SELECT coalesce(sum(billing.refresh_entity_cost_rollups('-infinity', 'infinity', NULL, t.entity_kind, t.members)), 0)::bigint
    FROM energy.take_dirty_entities('billing.entity_dirty') t
$$;

-- migrate:down
SELECT billing.drop_cost_rollups();
DROP FUNCTION IF EXISTS billing.refresh_dirty_cost_entities();
DROP FUNCTION IF EXISTS billing.refresh_entity_cost_rollups(timestamptz, timestamptz, integer[], text, integer[]);
DROP TRIGGER IF EXISTS entity_dirty_for_billing ON ops.entity_dirty;
DROP FUNCTION IF EXISTS billing.copy_entity_dirty();
DROP TABLE IF EXISTS billing.entity_dirty, billing.entity_cost_monthly, billing.entity_cost_daily;
DROP FUNCTION IF EXISTS billing.refresh_cost_rollup(text, timestamptz, timestamptz, integer[]);
DROP FUNCTION IF EXISTS billing.build_cost_rollups(text);
DROP FUNCTION IF EXISTS billing.drop_cost_rollups();
DROP FUNCTION IF EXISTS billing.cost_rollup_definition(text, text, timestamptz, text);
DROP FUNCTION IF EXISTS billing.cost_rollup_object(text);
DROP TABLE IF EXISTS billing.cost_rollup_setting;
DROP TABLE IF EXISTS billing.meter_cost;
DROP TABLE IF EXISTS billing.bill_line, billing.bill, billing.meter_watermark, billing.setting;
DROP TRIGGER IF EXISTS tariff_dirty ON config.tariff;
DROP TRIGGER IF EXISTS tariff_assignment_dirty ON config.tariff_assignment;
DROP FUNCTION IF EXISTS config.tariff_changed();
DROP FUNCTION IF EXISTS config.tariff_assignment_changed();
DROP FUNCTION IF EXISTS config.log_tariff_assignment_dirty(config.tariff_assignment, text);
DROP FUNCTION IF EXISTS config.tariff_assignment_meters(config.tariff_assignment);
DROP TABLE IF EXISTS config.reactive_meter, config.tariff_assignment, config.tariff;
