-- The api schema's configuration, raw-data and operations views: what the Grafana
-- dashboards (grafana/dashboards/*.json) and analysts read besides the energy, carbon and
-- billing views.
-- Grain: api.reporting one row; api.space one row per space; api.entity one row per
-- organisation entity; api.entity_meter one row per entity, direction and member meter;
-- api.meter one row per meter (its current point link); api.meter_raw one row per meter
-- and reading (the register times the link's multiplier, within the link's validity);
-- api.point_reading one row per point and reading;
-- api.meter_interval one row per meter and 15-minute interval; api.latest_reading one
-- row per point; api.collector_status one row per data source and point the collectors
-- report on; api.dead_letter one row per rejected message; api.job_run one row per stage
-- run; api.dirty_pending one row per stage with a cursor in the dirty-range log.
-- Written by nobody: views only read (config by site import, raw by collectors, energy by
-- jobs, ops by collectors and the job runner). Read by Grafana through the wattline_reader
-- role (sql/grafana_role.sql) and by analysts (docs/sql.md).

-- The reporting zone the rollups are bucketed in, and the TimescaleDB edition: dashboards
-- need the zone for local hours, days and months.
CREATE VIEW api.reporting AS
SELECT s.reporting_timezone, s.hour_origin, s.materialisation, ops.timescale_edition() AS edition
FROM energy.rollup_setting s;

-- The space tree: path from the root ('Enterprise/Site/Building', as site files name
-- spaces), depth (0 at a root), the effective time zone (own, else the nearest ancestor's)
-- and the site (the nearest ancestor-or-self of kind 'site').
CREATE VIEW api.space AS
WITH RECURSIVE tree AS (
    SELECT s.id, s.parent_id, s.name, s.kind, s.area_m2, s.timezone AS own_timezone,
           s.timezone AS eff_timezone, s.name::text AS path, 0 AS depth,
           CASE WHEN s.kind = 'site' THEN s.id END AS site_id,
           s.cost_center_id
    FROM config.space s WHERE s.parent_id IS NULL
    UNION ALL
    SELECT c.id, c.parent_id, c.name, c.kind, c.area_m2, c.timezone,
           coalesce(c.timezone, t.eff_timezone), t.path || '/' || c.name, t.depth + 1,
           CASE WHEN c.kind = 'site' THEN c.id ELSE t.site_id END,
           c.cost_center_id
    FROM config.space c JOIN tree t ON c.parent_id = t.id
)
SELECT t.id, t.parent_id, t.name, t.kind, t.path, t.depth, t.area_m2,
       coalesce(t.eff_timezone, r.reporting_timezone) AS timezone,
       t.site_id, site.name AS site, cc.name AS cost_center,
       EXISTS (SELECT 1 FROM config.space k WHERE k.parent_id = t.id) AS has_children
FROM tree t
LEFT JOIN config.space site ON site.id = t.site_id
LEFT JOIN config.cost_center cc ON cc.id = t.cost_center_id
LEFT JOIN energy.rollup_setting r ON true;

-- Every organisation entity with its space and floor area where it has them.
CREATE VIEW api.entity AS
SELECT 'space'::text AS entity_kind, id AS entity_id, name, id AS space_id, area_m2 FROM config.space
UNION ALL SELECT 'equipment', id, name, space_id, NULL::numeric FROM config.equipment
UNION ALL SELECT 'combined_equipment', id, name, space_id, NULL FROM config.combined_equipment
UNION ALL SELECT 'tenant', id, name, space_id, area_m2 FROM config.tenant
UNION ALL SELECT 'store', id, name, space_id, area_m2 FROM config.store
UNION ALL SELECT 'shopfloor', id, name, space_id, area_m2 FROM config.shopfloor
UNION ALL SELECT 'cost_center', id, name, NULL, NULL FROM config.cost_center;

-- Which meters make up each entity (the membership the entity rollups use: a space holds
-- the counted meters of its whole subtree).
CREATE VIEW api.entity_meter AS
SELECT em.entity_kind, em.entity_id, e.name AS entity, em.direction, em.meter_id, m.name AS meter,
       m.category_id, c.name AS category, c.unit
FROM energy.entity_meter em
JOIN config.meter m ON m.id = em.meter_id
JOIN config.energy_category c ON c.id = m.category_id
LEFT JOIN energy.entity e ON e.entity_kind = em.entity_kind AND e.entity_id = em.entity_id;

-- Meters with what they measure, their limits and the point feeding them now.
CREATE VIEW api.meter AS
SELECT m.id, m.name, m.kind, m.category_id, c.name AS category, c.unit, m.item_id, i.name AS item,
       m.is_counted, m.master_meter_id, ms.name AS master,
       m.hourly_low, m.hourly_high, m.register_max, m.formula,
       cc.name AS cost_center, mp.point_id, p.name AS point, p.data_source_id, ds.name AS data_source,
       mp.multiplier, mp.valid_from AS point_valid_from, m.description
FROM config.meter m
JOIN config.energy_category c ON c.id = m.category_id
LEFT JOIN config.energy_item i ON i.id = m.item_id
LEFT JOIN config.meter ms ON ms.id = m.master_meter_id
LEFT JOIN config.cost_center cc ON cc.id = m.cost_center_id
LEFT JOIN config.meter_point mp ON mp.meter_id = m.id AND mp.valid_from <= now() AND now() < mp.valid_to
LEFT JOIN config.point p ON p.id = mp.point_id
LEFT JOIN config.data_source ds ON ds.id = p.data_source_id;

-- A meter's register as read: each reading of the point that fed the meter at that
-- instant, times the link's multiplier. Filter on meter_id and ts: the join then walks
-- raw.point_value's unique (point_id, ts) index.
CREATE VIEW api.meter_raw AS
SELECT mp.meter_id, v.point_id, v.ts, v.value * mp.multiplier AS value, v.value AS point_value,
       mp.multiplier, v.quality
FROM config.meter_point mp
JOIN raw.point_value v ON v.point_id = mp.point_id AND v.ts >= mp.valid_from AND v.ts < mp.valid_to;

-- Every reading of every point (energy registers, power, analog and digital values) with
-- its point and data source. Filter on point_id or data_source_id and ts.
CREATE VIEW api.point_reading AS
SELECT p.data_source_id, ds.name AS data_source, v.point_id, p.name AS point, p.object_type, p.unit,
       v.ts, v.value, v.quality
FROM raw.point_value v
JOIN config.point p ON p.id = v.point_id
JOIN config.data_source ds ON ds.id = p.data_source_id;

-- 15-minute energy with its mean power (energy × 4 per hour: kW for a kWh meter) and the
-- names of its quality flags.
CREATE VIEW api.meter_interval AS
SELECT i.meter_id, i.ts, i.energy, i.energy * 4 AS power_kw, i.quality,
       energy.quality_names(i.quality) AS flags
FROM energy.meter_interval i;

-- The newest reading of every point: one backward step on the (point_id, ts) index each.
CREATE VIEW api.latest_reading AS
SELECT p.data_source_id, ds.name AS data_source, p.id AS point_id, p.name AS point, p.object_type,
       mp.meter_id, m.name AS meter, r.ts, r.value, p.unit, r.quality, now() - r.ts AS age
FROM config.point p
JOIN config.data_source ds ON ds.id = p.data_source_id
LEFT JOIN config.meter_point mp ON mp.point_id = p.id AND mp.valid_from <= now() AND now() < mp.valid_to
LEFT JOIN config.meter m ON m.id = mp.meter_id
LEFT JOIN LATERAL (
    SELECT v.ts, v.value, v.quality FROM raw.point_value v
    WHERE v.point_id = p.id ORDER BY v.ts DESC LIMIT 1
) r ON true;

-- Collector health per data source (point NULL) and per point, with a state word.
CREATE VIEW api.collector_status AS
SELECT s.data_source_id, ds.name AS data_source, ds.protocol, ds.enabled,
       nullif(s.point_id, 0) AS point_id, p.name AS point,
       s.last_success, s.last_error, s.last_error_at, s.consecutive_failures, s.updated_at,
       now() - s.last_success AS since_success,
       CASE WHEN s.consecutive_failures > 0 THEN 'failing'
            WHEN s.last_success IS NULL THEN 'never'
            ELSE 'ok' END AS state
FROM ops.collector_status s
LEFT JOIN config.data_source ds ON ds.id = s.data_source_id
LEFT JOIN config.point p ON p.id = nullif(s.point_id, 0);

-- Messages the collectors rejected, newest first by received_at.
CREATE VIEW api.dead_letter AS
SELECT d.id, d.received_at, d.data_source_id, ds.name AS data_source, d.topic, d.reason,
       left(d.payload, 500) AS payload, length(d.payload) AS payload_chars
FROM ops.dead_letter d
LEFT JOIN config.data_source ds ON ds.id = d.data_source_id;

-- Pipeline stage runs with their duration (NULL while running).
CREATE VIEW api.job_run AS
SELECT id, stage, started_at, finished_at,
       extract(epoch FROM finished_at - started_at)::double precision AS duration_s,
       range_start, range_end, rows_touched, status, error, host
FROM ops.job_run;

-- Work waiting in the dirty-range log for each stage: entries committed since the
-- snapshot of its last consumption (cursor), the oldest one's age and the time span
-- they cover.
CREATE VIEW api.dirty_pending AS
SELECT c.stage, c.seen::text AS cursor, c.updated_at AS cursor_moved_at,
       count(d.id) AS pending, min(d.created_at) AS oldest_logged_at,
       now() - min(d.created_at) AS oldest_age,
       min(d.range_start) AS range_start, max(d.range_end) AS range_end
FROM ops.stage_cursor c
LEFT JOIN ops.dirty_range d
       ON d.xact >= coalesce(pg_snapshot_xmin(c.seen), '0'::xid8)
      AND (c.seen IS NULL OR NOT pg_visible_in_snapshot(d.xact, c.seen))
GROUP BY c.stage;

-- migrate:down
DROP VIEW IF EXISTS api.dirty_pending, api.job_run, api.dead_letter, api.collector_status,
    api.latest_reading, api.meter_interval, api.point_reading, api.meter_raw, api.meter, api.entity_meter,
    api.entity, api.space, api.reporting;
