-- energy.meter_interval: trustworthy 15-minute energy per meter.
-- Grain: one row per meter and 15-minute interval start (UTC). Written by
-- jobs.normalize (physical meters), jobs.virtual (virtual meters) and offline imports;
-- read by the rollups, billing, carbon and reports. Energy is in the category's unit.
--
-- quality is a bit set (energy.quality_flag names them):
--   1 measured · 2 interpolated · 4 estimated (gap) · 8 manual (offline/import)
--   16 virtual · 32 limit_violation · 64 rollover · 128 reset · 256 missing (virtual input absent)
CREATE TABLE energy.meter_interval (
    meter_id integer          NOT NULL,
    ts       timestamptz      NOT NULL,
    energy   double precision,
    quality  integer          NOT NULL DEFAULT 1,
    CHECK (time_bucket('15 minutes', ts) = ts)   -- quarter-hour starts (cheaper than extract(epoch), which is numeric)
);
SELECT create_hypertable('energy.meter_interval', by_range('ts', INTERVAL '7 days'),
                         create_default_indexes => false);
CREATE UNIQUE INDEX meter_interval_meter_ts_uq ON energy.meter_interval (meter_id, ts);

CREATE TABLE energy.quality_flag (
    bit         integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL
);
INSERT INTO energy.quality_flag VALUES
    (1,   'measured',        'both boundaries interpolated between readings at most one reading interval apart'),
    (2,   'interpolated',    'a boundary value was interpolated between readings'),
    (4,   'estimated',       'energy spread linearly across a gap in the readings'),
    (8,   'manual',          'from an offline meter or a manual import'),
    (16,  'virtual',         'computed from a virtual meter formula'),
    (32,  'limit_violation', 'outside the meter''s plausible hourly limits (kept, not zeroed)'),
    (64,  'rollover',        'the register wrapped at its maximum within the interval'),
    (128, 'reset',           'the register restarted from zero within the interval'),
    (256, 'missing',         'an input of a virtual meter was missing: energy is NULL');

-- Names of the flags set in a quality bit set, for people and dashboards.
CREATE FUNCTION energy.quality_names(q integer) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(name ORDER BY bit), '{}') FROM energy.quality_flag WHERE q & bit <> 0
$$;

-- energy.offline_value: what an offline meter's import file says, one row per meter and
-- local day (period 'day') or local month (period 'month', on the month's first day).
-- Written by `wattline import offline` (a newer import replaces the same days); read by
-- jobs.offline, which spreads each value over the 15-minute intervals of its period.
CREATE TABLE energy.offline_value (
    meter_id     integer     NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    period_start date        NOT NULL,
    period       text        NOT NULL CHECK (period IN ('day', 'month')),
    value        double precision NOT NULL CHECK (value >= 0 AND value < 'infinity'),
    imported_at  timestamptz NOT NULL DEFAULT now(),
    source       text,
    PRIMARY KEY (meter_id, period_start, period),
    CHECK (period = 'day' OR extract(day FROM period_start) = 1)
);

-- migrate:down
DROP TABLE IF EXISTS energy.offline_value;
DROP FUNCTION IF EXISTS energy.quality_names(integer);
DROP TABLE IF EXISTS energy.quality_flag;
DROP TABLE IF EXISTS energy.meter_interval;
