-- api views of cost and bills, for Grafana and analysts.
-- Grain: api.cost_daily / api.cost_monthly one row per meter and local day / month of the
-- reporting zone (the rollups' TOU periods summed); api.entity_cost_daily / _monthly one
-- row per entity (space subtree, tenant, store, shopfloor, equipment, combined equipment,
-- cost center), direction and category, read from the entity cost rollups;
-- api.entity_cost_period_daily / _monthly the same by energy item and TOU period;
-- api.bill one row per bill revision; api.bill_line one row per line.
-- Written by migrations; read by the dashboards (wattline_reader) and analysts.
--
-- The cost rollups are rebuilt (DROP … CASCADE) when the reporting zone changes, so the
-- views read them through a definer function: no view depends on the rollup objects, and
-- the reader role needs no rights on the billing schema.
CREATE FUNCTION billing.api_cost(granularity text)
RETURNS TABLE (meter_id integer, bucket timestamptz, energy_charge numeric, allocated_charge numeric,
               total numeric, intervals bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    -- The rollups appear when the billing stage first builds them.
    IF to_regclass(format('billing.%I', billing.cost_rollup_object(granularity))) IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT meter_id, bucket, sum(energy_charge)::numeric, sum(allocated_charge)::numeric, '
        'sum(total)::numeric, sum(intervals)::bigint FROM billing.%I GROUP BY meter_id, bucket',
        billing.cost_rollup_object(granularity));
END $$;

CREATE FUNCTION billing.api_zone() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT coalesce((SELECT reporting_timezone FROM billing.cost_rollup_setting), energy.reporting_zone())
$$;

CREATE VIEW api.cost_daily AS
SELECT c.meter_id, m.name AS meter, m.category_id, cat.name AS category, c.bucket,
       (c.bucket AT TIME ZONE billing.api_zone())::date AS day,
       c.energy_charge, c.allocated_charge, c.total, c.intervals
FROM billing.api_cost('day') c
JOIN config.meter m ON m.id = c.meter_id
JOIN config.energy_category cat ON cat.id = m.category_id;

CREATE VIEW api.cost_monthly AS
SELECT c.meter_id, m.name AS meter, m.category_id, cat.name AS category, c.bucket,
       (c.bucket AT TIME ZONE billing.api_zone())::date AS month,
       c.energy_charge, c.allocated_charge, c.total, c.intervals
FROM billing.api_cost('month') c
JOIN config.meter m ON m.id = c.meter_id
JOIN config.energy_category cat ON cat.id = m.category_id;

-- Cost of an entity, from the entity cost rollups (the meters energy.entity_meter counts
-- for it), items and TOU periods summed. meters: meters with cost in the bucket (in the
-- TOU period with the most of them).
CREATE FUNCTION billing.api_entity_cost(granularity text)
RETURNS TABLE (entity_kind text, entity_id integer, direction text, category_id integer, bucket timestamptz,
               energy_charge numeric, allocated_charge numeric, total numeric, meters bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT entity_kind, entity_id, direction, category_id, bucket, sum(energy_charge), sum(allocated_charge),
           sum(total), max(meters)::bigint
    FROM (SELECT entity_kind, entity_id, direction, category_id, bucket, period,
                 sum(energy_charge) AS energy_charge, sum(allocated_charge) AS allocated_charge,
                 sum(total) AS total, sum(meters) AS meters
          FROM billing.entity_cost_daily WHERE granularity = 'day'
          GROUP BY entity_kind, entity_id, direction, category_id, bucket, period
          UNION ALL
          SELECT entity_kind, entity_id, direction, category_id, bucket, period,
                 sum(energy_charge), sum(allocated_charge), sum(total), sum(meters)
          FROM billing.entity_cost_monthly WHERE granularity = 'month'
          GROUP BY entity_kind, entity_id, direction, category_id, bucket, period) x
    GROUP BY entity_kind, entity_id, direction, category_id, bucket
$$;

CREATE VIEW api.entity_cost_daily AS
SELECT c.entity_kind, c.entity_id, e.name AS entity, c.direction, c.category_id, cat.name AS category,
       c.bucket, (c.bucket AT TIME ZONE billing.api_zone())::date AS day,
       c.energy_charge, c.allocated_charge, c.total, c.meters
FROM billing.api_entity_cost('day') c
JOIN config.energy_category cat ON cat.id = c.category_id
LEFT JOIN energy.entity e ON e.entity_kind = c.entity_kind AND e.entity_id = c.entity_id;

CREATE VIEW api.entity_cost_monthly AS
SELECT c.entity_kind, c.entity_id, e.name AS entity, c.direction, c.category_id, cat.name AS category,
       c.bucket, (c.bucket AT TIME ZONE billing.api_zone())::date AS month,
       c.energy_charge, c.allocated_charge, c.total, c.meters
FROM billing.api_entity_cost('month') c
JOIN config.energy_category cat ON cat.id = c.category_id
LEFT JOIN energy.entity e ON e.entity_kind = c.entity_kind AND e.entity_id = c.entity_id;

-- Cost of an entity by TOU period (period NULL: intervals priced without one) and energy
-- item (item_id 0: meters without one), straight from the entity cost rollups.
CREATE VIEW api.entity_cost_period_daily AS
SELECT c.entity_kind, c.entity_id, e.name AS entity, c.direction, c.category_id, cat.name AS category,
       c.item_id, nullif(c.period, -1) AS period, c.bucket,
       (c.bucket AT TIME ZONE billing.api_zone())::date AS day,
       c.energy_charge, c.allocated_charge, c.total, c.meters, c.intervals
FROM billing.entity_cost_daily c
JOIN config.energy_category cat ON cat.id = c.category_id
LEFT JOIN energy.entity e ON e.entity_kind = c.entity_kind AND e.entity_id = c.entity_id;

CREATE VIEW api.entity_cost_period_monthly AS
SELECT c.entity_kind, c.entity_id, e.name AS entity, c.direction, c.category_id, cat.name AS category,
       c.item_id, nullif(c.period, -1) AS period, c.bucket,
       (c.bucket AT TIME ZONE billing.api_zone())::date AS month,
       c.energy_charge, c.allocated_charge, c.total, c.meters, c.intervals
FROM billing.entity_cost_monthly c
JOIN config.energy_category cat ON cat.id = c.category_id
LEFT JOIN energy.entity e ON e.entity_kind = c.entity_kind AND e.entity_id = c.entity_id;

CREATE VIEW api.tariff AS
SELECT id, label, name, utility, timezone, currency, valid_from, valid_to, version, updated_at
FROM config.tariff;

CREATE VIEW api.bill AS
SELECT b.id, b.entity_kind, b.entity_id,
       coalesce(m.name, cc.name, t.name) AS entity,
       b.category_id, cat.name AS category, cat.unit,
       b.period_start, b.period_end,
       (b.period_start AT TIME ZONE billing.api_zone())::date AS period_start_local,
       b.revision, b.is_current, b.status, b.currency, b.energy, b.subtotal, b.taxes, b.total,
       b.previous_total, b.difference, b.computed_at, b.closed_at
FROM billing.bill b
JOIN config.energy_category cat ON cat.id = b.category_id
LEFT JOIN config.meter m ON b.entity_kind = 'meter' AND m.id = b.entity_id
LEFT JOIN config.cost_center cc ON b.entity_kind = 'cost_center' AND cc.id = b.entity_id
LEFT JOIN config.tenant t ON b.entity_kind = 'tenant' AND t.id = b.entity_id;

CREATE VIEW api.bill_line AS
SELECT l.bill_id, b.entity_kind, b.entity_id, b.period_start, b.revision, b.is_current, b.status,
       b.currency, l.line_no, l.kind, l.tariff_id, tf.label AS tariff, l.segment_start, l.segment_end,
       l.period, l.tier, l.description, l.quantity, l.unit, l.rate, l.amount
FROM billing.bill_line l
JOIN billing.bill b ON b.id = l.bill_id
LEFT JOIN config.tariff tf ON tf.id = l.tariff_id;

-- migrate:down
DROP VIEW IF EXISTS api.bill_line, api.bill, api.tariff, api.entity_cost_period_monthly,
    api.entity_cost_period_daily, api.entity_cost_monthly, api.entity_cost_daily,
    api.cost_monthly, api.cost_daily;
DROP FUNCTION IF EXISTS billing.api_entity_cost(text);
DROP FUNCTION IF EXISTS billing.api_zone();
DROP FUNCTION IF EXISTS billing.api_cost(text);
