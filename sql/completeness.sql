-- Data completeness per local day: how much of each meter's and entity's energy was
-- measured, estimated (spread across a reading gap), manual (offline / import) or missing.
-- Grain: one row per meter and local day (api.meter_completeness_daily); one row per
-- entity, direction, energy category and local day (api.entity_completeness_daily).
-- Written by nobody (views over energy.meter_daily and energy.entity_daily, which
-- jobs.rollups refreshes); read by the Data quality dashboard and reports.
--
-- The four classes split the expected intervals exactly (shares sum to 1):
--   expected  15-minute intervals in the local day (92 / 96 / 100), × meters for entities
--   estimated intervals with a value flagged estimated (4)
--   manual    intervals with a value flagged manual (8), not estimated
--   measured  every other interval with a value (measured, interpolated, virtual from good inputs)
--   missing   expected − intervals with a value (absent rows, and virtual meters' NULLs)
-- Shares are the counts over expected, rounded to 6 decimals.
-- Idempotent (CREATE OR REPLACE): app.rollups.rebuild re-runs it after rebuilding the rollups.

CREATE OR REPLACE VIEW api.meter_completeness_daily AS
SELECT d.meter_id,
       m.name                                           AS meter,
       (d.bucket AT TIME ZONE s.reporting_timezone)::date AS day,
       d.bucket,
       x.expected,
       d.valued                                         AS present,
       d.valued - d.estimated - d.manual                AS measured,
       d.estimated,
       d.manual,
       x.expected - d.valued                            AS missing,
       round((d.valued - d.estimated - d.manual)::numeric / x.expected, 6) AS measured_share,
       round(d.estimated::numeric / x.expected, 6)      AS estimated_share,
       round(d.manual::numeric / x.expected, 6)         AS manual_share,
       round((x.expected - d.valued)::numeric / x.expected, 6) AS missing_share
FROM energy.meter_daily d
CROSS JOIN energy.rollup_setting s
JOIN config.meter m ON m.id = d.meter_id
CROSS JOIN LATERAL (SELECT energy.expected_intervals('day', d.bucket, s.reporting_timezone)::bigint AS expected) x;

CREATE OR REPLACE VIEW api.entity_completeness_daily AS
SELECT t.entity_kind, t.entity_id, n.name AS entity, t.direction, t.category_id, c.name AS category,
       (t.bucket AT TIME ZONE s.reporting_timezone)::date AS day,
       t.bucket, t.meters,
       t.expected,
       t.valued                                         AS present,
       t.valued - t.estimated - t.manual                AS measured,
       t.estimated,
       t.manual,
       t.expected - t.valued                            AS missing,
       round((t.valued - t.estimated - t.manual)::numeric / t.expected, 6) AS measured_share,
       round(t.estimated::numeric / t.expected, 6)      AS estimated_share,
       round(t.manual::numeric / t.expected, 6)         AS manual_share,
       round((t.expected - t.valued)::numeric / t.expected, 6) AS missing_share
FROM (
    SELECT e.entity_kind, e.entity_id, e.direction, e.category_id, e.bucket,
           sum(e.meters)::bigint AS meters,
           sum(e.meters)::bigint * energy.expected_intervals('day', e.bucket, energy.reporting_zone()) AS expected,
           sum(e.valued)::bigint AS valued, sum(e.estimated)::bigint AS estimated,
           sum(e.manual)::bigint AS manual
    FROM energy.entity_daily e
    GROUP BY e.entity_kind, e.entity_id, e.direction, e.category_id, e.bucket
) t
CROSS JOIN energy.rollup_setting s
JOIN config.energy_category c ON c.id = t.category_id
LEFT JOIN energy.entity n ON n.entity_kind = t.entity_kind AND n.entity_id = t.entity_id;

-- migrate:down
DROP VIEW IF EXISTS api.entity_completeness_daily;
DROP VIEW IF EXISTS api.meter_completeness_daily;
