-- Entity rollups: daily and monthly energy per organisation entity, by energy category
-- and energy item, with completeness counts.
-- Grain: one row per entity (space, equipment, combined_equipment, tenant, store,
-- shopfloor, cost_center), direction (input / output; only equipment and combined
-- equipment have outputs), category, item (0: meters without an item) and local day /
-- local month of the reporting zone. Only days where at least one of the entity's
-- meters has data get rows (then one per group, energy NULL for a group without data);
-- readers gap-fill with api.entity_series.
-- Written by jobs.rollups through energy.refresh_entity_rollups (from the per-meter
-- daily rollup, over dirty ranges) and energy.refresh_dirty_entities (over the whole
-- history of entities whose meter links changed, logged by the triggers below into
-- ops.entity_dirty). Read by api views, reports and completeness.
--
-- Membership (energy.entity_meter, current links, each meter once per entity):
--   space              every is_counted meter linked to the space or any space below it
--   equipment          its meters, input and output separately
--   combined_equipment its own meters plus its member equipment's meters
--   tenant/store/shopfloor  their linked meters
--   cost_center        the meters whose cost_center_id names it
-- Links have no validity dates, so a link change recomputes the entity's whole history:
-- reports always show the current organisation, never a mix of old and new links.

CREATE VIEW energy.entity_meter AS
SELECT 'space'::text AS entity_kind, c.ancestor_id AS entity_id, 'input'::text AS direction, sm.meter_id
FROM config.space_closure c
JOIN config.space_meter sm ON sm.space_id = c.space_id
JOIN config.meter m ON m.id = sm.meter_id AND m.is_counted
UNION
SELECT 'equipment', equipment_id, direction, meter_id FROM config.equipment_meter
UNION
SELECT 'combined_equipment', combined_equipment_id, direction, meter_id FROM config.combined_equipment_meter
UNION
SELECT 'combined_equipment', cm.combined_equipment_id, em.direction, em.meter_id
FROM config.combined_equipment_member cm JOIN config.equipment_meter em USING (equipment_id)
UNION
SELECT 'tenant', tenant_id, 'input', meter_id FROM config.tenant_meter
UNION
SELECT 'store', store_id, 'input', meter_id FROM config.store_meter
UNION
SELECT 'shopfloor', shopfloor_id, 'input', meter_id FROM config.shopfloor_meter
UNION
SELECT 'cost_center', cost_center_id, 'input', id FROM config.meter WHERE cost_center_id IS NOT NULL;

-- Every entity with its name, for joins in views and dashboards.
CREATE VIEW energy.entity AS
SELECT 'space'::text AS entity_kind, id AS entity_id, name FROM config.space
UNION ALL SELECT 'equipment', id, name FROM config.equipment
UNION ALL SELECT 'combined_equipment', id, name FROM config.combined_equipment
UNION ALL SELECT 'tenant', id, name FROM config.tenant
UNION ALL SELECT 'store', id, name FROM config.store
UNION ALL SELECT 'shopfloor', id, name FROM config.shopfloor
UNION ALL SELECT 'cost_center', id, name FROM config.cost_center;

CREATE TABLE energy.entity_daily (
    entity_kind text        NOT NULL CHECK (entity_kind IN ('space', 'equipment', 'combined_equipment',
                                                            'tenant', 'store', 'shopfloor', 'cost_center')),
    entity_id   integer     NOT NULL,
    direction   text        NOT NULL CHECK (direction IN ('input', 'output')),
    category_id integer     NOT NULL,
    item_id     integer     NOT NULL,   -- 0: meters without an energy item
    bucket      timestamptz NOT NULL,   -- local midnight
    energy      numeric,
    meters      integer     NOT NULL,   -- meters in this group: expected = meters × intervals of the day
    intervals   bigint      NOT NULL,
    valued      bigint      NOT NULL,
    estimated   bigint      NOT NULL,
    manual      bigint      NOT NULL,
    PRIMARY KEY (entity_kind, entity_id, direction, category_id, item_id, bucket)
);
CREATE TABLE energy.entity_monthly (LIKE energy.entity_daily INCLUDING ALL);

-- Entities whose membership changed; consumed (deleted) by energy.refresh_dirty_entities.
-- entity_kind 'meter' means "every entity the meter belongs to".
CREATE TABLE ops.entity_dirty (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_kind text        NOT NULL,
    entity_id   integer     NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Trigger: log the entity named by column TG_ARGV[1] (kind TG_ARGV[0]) of the old and new row.
CREATE FUNCTION ops.log_entity_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v text;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        v := to_jsonb(OLD) ->> TG_ARGV[1];
        IF v IS NOT NULL THEN
            INSERT INTO ops.entity_dirty (entity_kind, entity_id, reason)
            VALUES (TG_ARGV[0], v::integer, TG_TABLE_NAME || ' ' || lower(TG_OP));
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        v := to_jsonb(NEW) ->> TG_ARGV[1];
        IF v IS NOT NULL THEN
            INSERT INTO ops.entity_dirty (entity_kind, entity_id, reason)
            VALUES (TG_ARGV[0], v::integer, TG_TABLE_NAME || ' ' || lower(TG_OP));
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER entity_dirty AFTER INSERT OR UPDATE OR DELETE ON config.space_meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('space', 'space_id');
CREATE TRIGGER entity_dirty AFTER UPDATE OF parent_id ON config.space
    FOR EACH ROW WHEN (OLD.parent_id IS DISTINCT FROM NEW.parent_id)
    EXECUTE FUNCTION ops.log_entity_change('space', 'parent_id');
CREATE TRIGGER entity_dirty AFTER INSERT OR UPDATE OR DELETE ON config.equipment_meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('equipment', 'equipment_id');
CREATE TRIGGER entity_dirty AFTER INSERT OR UPDATE OR DELETE ON config.combined_equipment_meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('combined_equipment', 'combined_equipment_id');
CREATE TRIGGER entity_dirty AFTER INSERT OR UPDATE OR DELETE ON config.combined_equipment_member
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('combined_equipment', 'combined_equipment_id');
CREATE TRIGGER entity_dirty AFTER INSERT OR UPDATE OR DELETE ON config.tenant_meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('tenant', 'tenant_id');
CREATE TRIGGER entity_dirty AFTER INSERT OR UPDATE OR DELETE ON config.store_meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('store', 'store_id');
CREATE TRIGGER entity_dirty AFTER INSERT OR UPDATE OR DELETE ON config.shopfloor_meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('shopfloor', 'shopfloor_id');
CREATE TRIGGER entity_dirty_cost_center AFTER INSERT OR UPDATE OF cost_center_id OR DELETE ON config.meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_entity_change('cost_center', 'cost_center_id');
CREATE TRIGGER entity_dirty_meter AFTER UPDATE OF is_counted, category_id, item_id ON config.meter
    FOR EACH ROW WHEN (OLD.is_counted IS DISTINCT FROM NEW.is_counted
                       OR OLD.category_id IS DISTINCT FROM NEW.category_id
                       OR OLD.item_id IS DISTINCT FROM NEW.item_id)
    EXECUTE FUNCTION ops.log_entity_change('meter', 'id');

-- Recompute entity rollups over [p_start, p_end), widened outward to whole local days
-- (daily) and months (monthly); infinite bounds mean the whole history. Which entities:
-- p_kind + p_entity_ids when given, else those holding any of p_meter_ids, else all.
-- Reads energy.meter_daily, so refresh the per-meter rollups first. Returns rows written.
-- The entities a refresh covers: p_kind + p_entity_ids when given, else those holding any
-- of p_meter_ids, else every entity with a meter. Shared by the energy and cost entity
-- rollups.
CREATE FUNCTION energy.entities_selected(p_meter_ids integer[], p_kind text, p_entity_ids integer[])
RETURNS TABLE (entity_kind text, entity_id integer)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT p_kind, unnest(p_entity_ids) WHERE p_kind IS NOT NULL
    UNION ALL
    SELECT DISTINCT em.entity_kind, em.entity_id FROM energy.entity_meter em
    WHERE p_kind IS NULL AND (p_meter_ids IS NULL OR em.meter_id = ANY (p_meter_ids))
$$;

CREATE FUNCTION energy.refresh_entity_rollups(p_start timestamptz, p_end timestamptz,
                                              p_meter_ids integer[] DEFAULT NULL,
                                              p_kind text DEFAULT NULL,
                                              p_entity_ids integer[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    zone text := energy.reporting_zone();
    d0 timestamptz := energy.bucket_start('day', p_start, zone, NULL);
    d1 timestamptz := energy.bucket_ceil('day', p_end, zone, NULL);
    m0 timestamptz := energy.bucket_start('month', p_start, zone, NULL);
    m1 timestamptz := energy.bucket_ceil('month', p_end, zone, NULL);
    everyone boolean := p_kind IS NULL AND p_meter_ids IS NULL;
    n bigint;
    total bigint := 0;
BEGIN
    IF p_start >= p_end THEN
        RETURN 0;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS entity_refresh_sel (entity_kind text, entity_id integer) ON COMMIT DROP;
    TRUNCATE entity_refresh_sel;
    INSERT INTO entity_refresh_sel SELECT * FROM energy.entities_selected(p_meter_ids, p_kind, p_entity_ids);
    ANALYZE entity_refresh_sel;

    DELETE FROM energy.entity_daily e
    WHERE e.bucket >= d0 AND e.bucket < d1
      AND (everyone OR EXISTS (SELECT 1 FROM entity_refresh_sel s
                               WHERE s.entity_kind = e.entity_kind AND s.entity_id = e.entity_id));
    WITH members AS (
        SELECT em.entity_kind, em.entity_id, em.direction, em.meter_id, m.category_id,
               coalesce(m.item_id, 0) AS item_id
        FROM entity_refresh_sel s
        JOIN energy.entity_meter em USING (entity_kind, entity_id)
        JOIN config.meter m ON m.id = em.meter_id
    ), groups AS (
        SELECT entity_kind, entity_id, direction, category_id, item_id, count(*)::integer AS meters
        FROM members GROUP BY 1, 2, 3, 4, 5
    ), data AS (
        SELECT mb.entity_kind, mb.entity_id, mb.direction, mb.category_id, mb.item_id, d.bucket,
               sum(d.energy) AS energy, sum(d.intervals) AS intervals, sum(d.valued) AS valued,
               sum(d.estimated) AS estimated, sum(d.manual) AS manual
        FROM members mb
        JOIN energy.meter_daily d ON d.meter_id = mb.meter_id AND d.bucket >= d0 AND d.bucket < d1
        GROUP BY 1, 2, 3, 4, 5, 6
    ), days AS (
        -- A day the entity reported on gets a row for every group, so the groups that
        -- reported nothing count as missing in its completeness.
        SELECT DISTINCT entity_kind, entity_id, bucket FROM data
    )
    INSERT INTO energy.entity_daily
    SELECT g.entity_kind, g.entity_id, g.direction, g.category_id, g.item_id, days.bucket,
           x.energy, g.meters, coalesce(x.intervals, 0), coalesce(x.valued, 0),
           coalesce(x.estimated, 0), coalesce(x.manual, 0)
    FROM groups g
    JOIN days USING (entity_kind, entity_id)
    LEFT JOIN data x USING (entity_kind, entity_id, direction, category_id, item_id, bucket);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;

    DELETE FROM energy.entity_monthly e
    WHERE e.bucket >= m0 AND e.bucket < m1
      AND (everyone OR EXISTS (SELECT 1 FROM entity_refresh_sel s
                               WHERE s.entity_kind = e.entity_kind AND s.entity_id = e.entity_id));
    INSERT INTO energy.entity_monthly
    SELECT e.entity_kind, e.entity_id, e.direction, e.category_id, e.item_id,
           time_bucket(INTERVAL '1 month', e.bucket, zone), sum(e.energy), max(e.meters),
           sum(e.intervals), sum(e.valued), sum(e.estimated), sum(e.manual)
    FROM energy.entity_daily e
    WHERE e.bucket >= m0 AND e.bucket < m1
      AND (everyone OR EXISTS (SELECT 1 FROM entity_refresh_sel s
                               WHERE s.entity_kind = e.entity_kind AND s.entity_id = e.entity_id))
    GROUP BY 1, 2, 3, 4, 5, 6;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END $$;

-- The entities to recompute when the given entities' membership changed: themselves, a
-- space's ancestors, the combined equipment holding changed equipment, every entity
-- holding a changed meter (kind 'meter'). One row per kind with its ids. Shared by the
-- energy and the cost entity rollups.
CREATE FUNCTION energy.entities_affected(p_kind text[], p_id integer[])
RETURNS TABLE (entity_kind text, entity_ids integer[])
LANGUAGE sql STABLE AS $$
    WITH d AS (
        SELECT * FROM unnest(p_kind, p_id) AS u(entity_kind, entity_id)
    ), x AS (
        SELECT entity_kind, entity_id FROM d WHERE entity_kind <> 'meter'
        UNION
        SELECT 'space', c.ancestor_id FROM d JOIN config.space_closure c
            ON d.entity_kind = 'space' AND c.space_id = d.entity_id
        UNION
        SELECT 'combined_equipment', cm.combined_equipment_id FROM d
        JOIN config.combined_equipment_member cm ON d.entity_kind = 'equipment' AND cm.equipment_id = d.entity_id
        UNION
        SELECT em.entity_kind, em.entity_id FROM d JOIN energy.entity_meter em
            ON d.entity_kind = 'meter' AND em.meter_id = d.entity_id
    )
    SELECT entity_kind, array_agg(entity_id ORDER BY entity_id) FROM x GROUP BY entity_kind
$$;

-- Empty an entity-change queue shaped like ops.entity_dirty (ops.entity_dirty itself, or
-- billing.entity_dirty) and expand what it held to the entities affected, per kind
-- (energy.entities_affected). Rows another transaction adds meanwhile stay for next time.
CREATE FUNCTION energy.take_dirty_entities(queue regclass)
RETURNS TABLE (entity_kind text, members integer[])
LANGUAGE plpgsql AS $$
DECLARE
    kinds text[];
    ids integer[];
BEGIN
    EXECUTE format('WITH d AS (DELETE FROM %s RETURNING entity_kind, entity_id) '
                   'SELECT array_agg(entity_kind), array_agg(entity_id) FROM d', queue)
    INTO kinds, ids;
    RETURN QUERY SELECT * FROM energy.entities_affected(kinds, ids);
END $$;

-- Consume ops.entity_dirty: recompute the whole history of every entity whose membership
-- changed. Returns rows written.
CREATE FUNCTION energy.refresh_dirty_entities() RETURNS bigint
LANGUAGE sql AS $$
    SELECT coalesce(sum(energy.refresh_entity_rollups('-infinity', 'infinity', NULL, t.entity_kind, t.members)), 0)::bigint
    FROM energy.take_dirty_entities('ops.entity_dirty') t
$$;

-- migrate:down
DROP FUNCTION IF EXISTS energy.refresh_dirty_entities();
DROP FUNCTION IF EXISTS energy.take_dirty_entities(regclass);
DROP FUNCTION IF EXISTS energy.entities_affected(text[], integer[]);
DROP FUNCTION IF EXISTS energy.refresh_entity_rollups(timestamptz, timestamptz, integer[], text, integer[]);
DROP FUNCTION IF EXISTS energy.entities_selected(integer[], text, integer[]);
DROP TRIGGER IF EXISTS entity_dirty_meter ON config.meter;
DROP TRIGGER IF EXISTS entity_dirty_cost_center ON config.meter;
DROP TRIGGER IF EXISTS entity_dirty ON config.shopfloor_meter;
DROP TRIGGER IF EXISTS entity_dirty ON config.store_meter;
DROP TRIGGER IF EXISTS entity_dirty ON config.tenant_meter;
DROP TRIGGER IF EXISTS entity_dirty ON config.combined_equipment_member;
DROP TRIGGER IF EXISTS entity_dirty ON config.combined_equipment_meter;
DROP TRIGGER IF EXISTS entity_dirty ON config.equipment_meter;
DROP TRIGGER IF EXISTS entity_dirty ON config.space;
DROP TRIGGER IF EXISTS entity_dirty ON config.space_meter;
DROP FUNCTION IF EXISTS ops.log_entity_change();
DROP TABLE IF EXISTS ops.entity_dirty;
DROP TABLE IF EXISTS energy.entity_monthly, energy.entity_daily;
DROP VIEW IF EXISTS energy.entity;
DROP VIEW IF EXISTS energy.entity_meter;
