-- raw.point_value: every reading as collected, after the point's ratio and offset.
-- Grain: one row per point and timestamp. Written by collectors (batch COPY through a
-- staging table, ON CONFLICT DO NOTHING) and file imports; read by jobs.clean and
-- jobs.normalize. Hypertable with 1-day chunks; only the unique (point_id, ts) index:
-- the default ts DESC index would cost 30-40 % of ingest speed and no query needs it.
--
-- quality bits: 0 = good; 1 = outside point limits (flagged by the writer, kept);
-- higher bits are set by jobs.clean (see sql/raw_cleaning.sql when present).
CREATE TABLE raw.point_value (
    point_id integer          NOT NULL,
    ts       timestamptz      NOT NULL,
    value    double precision NOT NULL,
    quality  smallint         NOT NULL DEFAULT 0
);
SELECT create_hypertable('raw.point_value', by_range('ts', INTERVAL '1 day'),
                         create_default_indexes => false);
CREATE UNIQUE INDEX point_value_point_ts_uq ON raw.point_value (point_id, ts);

-- migrate:down
DROP TABLE IF EXISTS raw.point_value;
