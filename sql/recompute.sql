-- Recomputation triggers: configuration changes that rewrite history log dirty ranges.
-- Grain: one ops.dirty_range row per changed meter (or point) and affected span.
-- Written by these triggers on config.meter_point, config.meter and config.point_cleaning;
-- read by jobs.clean and jobs.normalize, which recompute the span on their next run (and
-- log what they rewrote for the stages after them). Late and repaired readings need no
-- trigger: app.readings.write_readings logs them itself.
--
-- Spans are bounded by the data that exists (energy.meter_data_span), so a link valid
-- from -infinity yields a finite range. Reasons start with 'config:'; jobs.normalize
-- consumes meter entries with that prefix.

-- A meter's point, validity or multiplier changed: the old and the new validity spans.
CREATE FUNCTION ops.log_meter_point_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    affected tstzrange;
    span     tstzrange;
    m        integer;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.point_id = NEW.point_id AND OLD.valid_from = NEW.valid_from
       AND OLD.valid_to = NEW.valid_to AND OLD.multiplier = NEW.multiplier AND OLD.meter_id = NEW.meter_id THEN
        RETURN NULL;
    END IF;
    FOR m, affected IN
        SELECT OLD.meter_id, tstzrange(OLD.valid_from, OLD.valid_to) WHERE TG_OP IN ('UPDATE', 'DELETE')
        UNION ALL
        SELECT NEW.meter_id, tstzrange(NEW.valid_from, NEW.valid_to) WHERE TG_OP IN ('UPDATE', 'INSERT')
    LOOP
        span := energy.meter_data_span(m) * affected;
        IF span IS NOT NULL AND NOT isempty(span) THEN
            INSERT INTO ops.dirty_range (meter_id, range_start, range_end, reason)
            VALUES (m, lower(span), upper(span), 'config: meter point or multiplier changed');
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER meter_point_recompute AFTER INSERT OR UPDATE OR DELETE ON config.meter_point
    FOR EACH ROW EXECUTE FUNCTION ops.log_meter_point_change();

-- A meter's register maximum, plausible limits or kind changed: all of its history.
CREATE FUNCTION ops.log_meter_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    span tstzrange;
BEGIN
    IF (OLD.register_max, OLD.hourly_low, OLD.hourly_high, OLD.kind)
       IS NOT DISTINCT FROM (NEW.register_max, NEW.hourly_low, NEW.hourly_high, NEW.kind) THEN
        RETURN NULL;
    END IF;
    span := energy.meter_data_span(NEW.id);
    IF span IS NOT NULL THEN
        INSERT INTO ops.dirty_range (meter_id, range_start, range_end, reason)
        VALUES (NEW.id, lower(span), upper(span), 'config: meter register maximum or limits changed');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER meter_recompute AFTER UPDATE ON config.meter
    FOR EACH ROW EXECUTE FUNCTION ops.log_meter_change();

-- A point's cleaning thresholds or gap threshold changed: all of its readings.
CREATE FUNCTION ops.log_point_cleaning_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    p  integer := CASE WHEN TG_OP = 'DELETE' THEN OLD.point_id ELSE NEW.point_id END;
    lo timestamptz;
    hi timestamptz;
BEGIN
    SELECT min(ts), max(ts) + interval '1 microsecond' INTO lo, hi FROM raw.point_value WHERE point_id = p;
    IF lo IS NOT NULL THEN
        INSERT INTO ops.dirty_range (point_id, range_start, range_end, reason)
        VALUES (p, lo, hi, 'config: cleaning thresholds changed');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER point_cleaning_recompute AFTER INSERT OR UPDATE OR DELETE ON config.point_cleaning
    FOR EACH ROW EXECUTE FUNCTION ops.log_point_cleaning_change();

-- migrate:down
DROP TRIGGER IF EXISTS point_cleaning_recompute ON config.point_cleaning;
DROP TRIGGER IF EXISTS meter_recompute ON config.meter;
DROP TRIGGER IF EXISTS meter_point_recompute ON config.meter_point;
DROP FUNCTION IF EXISTS ops.log_point_cleaning_change();
DROP FUNCTION IF EXISTS ops.log_meter_change();
DROP FUNCTION IF EXISTS ops.log_meter_point_change();
