-- Virtual meters: which formula each virtual meter's intervals were last computed with.
-- Grain: one row per virtual meter. Written and read by jobs.virtual: a virtual meter
-- whose formula differs from the one recorded here (new, or edited) is recomputed over
-- its inputs' whole history; otherwise only over its inputs' dirty ranges.
CREATE TABLE ops.virtual_meter_state (
    meter_id    integer     PRIMARY KEY,
    formula     text        NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE IF EXISTS ops.virtual_meter_state;
