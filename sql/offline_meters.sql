-- Offline meters: how their imported daily / monthly values become 15-minute energy.
-- Grain: config.meter.load_profile is one optional 24-value hourly weight profile per
-- meter (local hours 0..23 of the reporting zone; NULL spreads evenly);
-- energy.offline_applied is one row per offline value already spread into
-- energy.meter_interval (the value, import time and profile it was spread with).
-- Written by `wattline site import` (load_profile) and jobs.offline (offline_applied);
-- read by jobs.offline, which compares energy.offline_value with offline_applied to find
-- what a newer import added, changed or removed.

-- A profile is 24 finite, non-negative weights with a positive sum.
CREATE FUNCTION config.valid_load_profile(p double precision[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p IS NULL OR (
        array_ndims(p) = 1 AND cardinality(p) = 24
        AND (SELECT bool_and(w >= 0 AND w < 'infinity') AND sum(w) > 0 FROM unnest(p) w)
    )
$$;
ALTER TABLE config.meter ADD COLUMN load_profile double precision[]
    CONSTRAINT meter_load_profile_valid CHECK (config.valid_load_profile(load_profile));

CREATE TABLE energy.offline_applied (
    meter_id     integer          NOT NULL,
    period_start date             NOT NULL,
    period       text             NOT NULL,
    value        double precision NOT NULL,
    imported_at  timestamptz      NOT NULL,
    load_profile double precision[],
    PRIMARY KEY (meter_id, period_start, period)
);

-- migrate:down
DROP TABLE IF EXISTS energy.offline_applied;
ALTER TABLE config.meter DROP COLUMN IF EXISTS load_profile;
DROP FUNCTION IF EXISTS config.valid_load_profile(double precision[]);
