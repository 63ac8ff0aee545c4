-- Configuration model: the organisation tree, what is metered, and how it is read.
-- Grain: one row per configured thing. Written by `wattline site import` and the API;
-- read by collectors (data sources, points), jobs (meters, links) and reports.
-- Integrity lives here: no cycles in the space tree, unique names where users look
-- things up by name, and deliberate ON DELETE rules (history-bearing rows RESTRICT).

CREATE TABLE config.cost_center (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    external_id text,
    description text
);

CREATE TABLE config.space (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id      integer REFERENCES config.space (id) ON DELETE RESTRICT,
    name           text NOT NULL CHECK (btrim(name) <> ''),
    kind           text NOT NULL DEFAULT 'custom'
                   CHECK (kind IN ('enterprise', 'site', 'building', 'floor', 'room', 'custom')),
    area_m2        numeric CHECK (area_m2 IS NULL OR area_m2 >= 0),
    timezone       text,
    cost_center_id integer REFERENCES config.cost_center (id) ON DELETE SET NULL,
    description    text,
    CHECK (parent_id IS NULL OR parent_id <> id)
);
-- Sibling names are unique (roots among roots), so a path names one space.
CREATE UNIQUE INDEX space_sibling_name_uq ON config.space (coalesce(parent_id, 0), name);
CREATE INDEX space_parent_idx ON config.space (parent_id);

-- Reject a parent assignment that would close a loop: walk up from the new parent.
CREATE FUNCTION config.space_no_cycle() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.parent_id IS NULL THEN
        RETURN NEW;
    END IF;
    IF EXISTS (
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM config.space WHERE id = NEW.parent_id
            UNION
            SELECT s.id, s.parent_id FROM config.space s JOIN up ON s.id = up.parent_id
        )
        SELECT 1 FROM up WHERE id = NEW.id
    ) THEN
        RAISE EXCEPTION 'space % (%) cannot be placed under space %: that would make a cycle',
            NEW.id, NEW.name, NEW.parent_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'space_no_cycle';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER space_no_cycle BEFORE INSERT OR UPDATE OF parent_id ON config.space
    FOR EACH ROW EXECUTE FUNCTION config.space_no_cycle();

-- A time zone must be an IANA name PostgreSQL knows.
CREATE FUNCTION config.valid_timezone(tz text) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT tz IS NULL OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = tz) $$;
ALTER TABLE config.space ADD CONSTRAINT space_timezone_valid CHECK (config.valid_timezone(timezone));

CREATE TABLE config.energy_category (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    unit        text NOT NULL,
    kgce_factor numeric NOT NULL DEFAULT 0 CHECK (kgce_factor >= 0),  -- kg coal equivalent per unit
    description text
);

CREATE TABLE config.energy_item (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    category_id integer NOT NULL REFERENCES config.energy_category (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (btrim(name) <> ''),
    UNIQUE (category_id, name),
    UNIQUE (id, category_id)   -- lets meter reference (item, category) consistently
);

CREATE TABLE config.data_source (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    protocol         text NOT NULL CHECK (protocol IN ('modbus-tcp', 'mqtt', 'http')),
    connection       jsonb NOT NULL DEFAULT '{}'::jsonb,
    poll_interval_s  numeric NOT NULL DEFAULT 60 CHECK (poll_interval_s > 0),
    enabled          boolean NOT NULL DEFAULT true,
    description      text,
    -- Minimal shape checks; app/validation.py gives the full, named errors.
    CHECK (jsonb_typeof(connection) = 'object'),
    CHECK (protocol <> 'modbus-tcp' OR connection ? 'host'),
    CHECK (protocol <> 'mqtt' OR (connection ? 'host' AND connection ? 'topics'))
);

CREATE TABLE config.point (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_source_id integer NOT NULL REFERENCES config.data_source (id) ON DELETE RESTRICT,
    name           text NOT NULL CHECK (btrim(name) <> ''),
    object_type    text NOT NULL CHECK (object_type IN ('energy', 'analog', 'digital')),
    address        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(address) = 'object'),
    ratio          double precision NOT NULL DEFAULT 1,
    "offset"       double precision NOT NULL DEFAULT 0,
    low_limit      double precision,
    high_limit     double precision,
    unit           text,
    description    text,
    UNIQUE (data_source_id, name),
    CHECK (low_limit IS NULL OR high_limit IS NULL OR low_limit <= high_limit)
);

CREATE TABLE config.meter (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    kind            text NOT NULL DEFAULT 'physical' CHECK (kind IN ('physical', 'virtual', 'offline')),
    category_id     integer NOT NULL REFERENCES config.energy_category (id) ON DELETE RESTRICT,
    item_id         integer,
    is_counted      boolean NOT NULL DEFAULT true,   -- counts toward its spaces' totals
    hourly_low      double precision,                -- plausible energy per hour
    hourly_high     double precision,
    register_max    numeric CHECK (register_max IS NULL OR register_max > 0),  -- rollover point
    master_meter_id integer REFERENCES config.meter (id) ON DELETE SET NULL,
    cost_center_id  integer REFERENCES config.cost_center (id) ON DELETE SET NULL,
    formula         text,                            -- virtual meters only
    description     text,
    FOREIGN KEY (item_id, category_id) REFERENCES config.energy_item (id, category_id) ON DELETE RESTRICT,
    CHECK ((kind = 'virtual') = (formula IS NOT NULL)),
    CHECK (master_meter_id IS NULL OR master_meter_id <> id),
    CHECK (hourly_low IS NULL OR hourly_high IS NULL OR hourly_low <= hourly_high)
);
CREATE INDEX meter_master_idx ON config.meter (master_meter_id);

-- Which point feeds a physical meter, from when, with which multiplier (CT ratio…).
-- History-bearing: a change of point or multiplier from a date is a new row.
CREATE TABLE config.meter_point (
    meter_id   integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    point_id   integer NOT NULL REFERENCES config.point (id) ON DELETE RESTRICT,
    valid_from timestamptz NOT NULL DEFAULT '-infinity',
    valid_to   timestamptz NOT NULL DEFAULT 'infinity',
    multiplier double precision NOT NULL DEFAULT 1,
    PRIMARY KEY (meter_id, valid_from),
    CHECK (valid_from < valid_to)
);
CREATE INDEX meter_point_point_idx ON config.meter_point (point_id);
-- No two rows of one meter overlap in time.
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE config.meter_point ADD CONSTRAINT meter_point_no_overlap
    EXCLUDE USING gist (meter_id WITH =, tstzrange(valid_from, valid_to) WITH &&);

CREATE TABLE config.equipment (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    space_id       integer REFERENCES config.space (id) ON DELETE SET NULL,
    cost_center_id integer REFERENCES config.cost_center (id) ON DELETE SET NULL,
    description    text
);

CREATE TABLE config.combined_equipment (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    space_id       integer REFERENCES config.space (id) ON DELETE SET NULL,
    cost_center_id integer REFERENCES config.cost_center (id) ON DELETE SET NULL,
    description    text
);

CREATE TABLE config.combined_equipment_member (
    combined_equipment_id integer NOT NULL REFERENCES config.combined_equipment (id) ON DELETE CASCADE,
    equipment_id          integer NOT NULL REFERENCES config.equipment (id) ON DELETE CASCADE,
    PRIMARY KEY (combined_equipment_id, equipment_id)
);

CREATE TABLE config.tenant (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    tenant_type    text,
    space_id       integer REFERENCES config.space (id) ON DELETE SET NULL,
    cost_center_id integer REFERENCES config.cost_center (id) ON DELETE SET NULL,
    lease_start    date,
    lease_end      date,
    area_m2        numeric CHECK (area_m2 IS NULL OR area_m2 >= 0),
    contact        text,
    CHECK (lease_start IS NULL OR lease_end IS NULL OR lease_start <= lease_end)
);

CREATE TABLE config.store (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    space_id       integer REFERENCES config.space (id) ON DELETE SET NULL,
    cost_center_id integer REFERENCES config.cost_center (id) ON DELETE SET NULL,
    area_m2        numeric CHECK (area_m2 IS NULL OR area_m2 >= 0)
);

CREATE TABLE config.shopfloor (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    space_id       integer REFERENCES config.space (id) ON DELETE SET NULL,
    cost_center_id integer REFERENCES config.cost_center (id) ON DELETE SET NULL,
    area_m2        numeric CHECK (area_m2 IS NULL OR area_m2 >= 0)
);

-- Entity <-> meter links. Deleting the entity or the meter removes the link; the
-- meter's energy history stays.
CREATE TABLE config.space_meter (
    space_id integer NOT NULL REFERENCES config.space (id) ON DELETE CASCADE,
    meter_id integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    PRIMARY KEY (space_id, meter_id)
);
CREATE TABLE config.equipment_meter (
    equipment_id integer NOT NULL REFERENCES config.equipment (id) ON DELETE CASCADE,
    meter_id     integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    direction    text NOT NULL DEFAULT 'input' CHECK (direction IN ('input', 'output')),
    PRIMARY KEY (equipment_id, meter_id)
);
CREATE TABLE config.combined_equipment_meter (
    combined_equipment_id integer NOT NULL REFERENCES config.combined_equipment (id) ON DELETE CASCADE,
    meter_id              integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    direction             text NOT NULL DEFAULT 'input' CHECK (direction IN ('input', 'output')),
    PRIMARY KEY (combined_equipment_id, meter_id)
);
CREATE TABLE config.tenant_meter (
    tenant_id integer NOT NULL REFERENCES config.tenant (id) ON DELETE CASCADE,
    meter_id  integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, meter_id)
);
CREATE TABLE config.store_meter (
    store_id integer NOT NULL REFERENCES config.store (id) ON DELETE CASCADE,
    meter_id integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    PRIMARY KEY (store_id, meter_id)
);
CREATE TABLE config.shopfloor_meter (
    shopfloor_id integer NOT NULL REFERENCES config.shopfloor (id) ON DELETE CASCADE,
    meter_id     integer NOT NULL REFERENCES config.meter (id) ON DELETE CASCADE,
    PRIMARY KEY (shopfloor_id, meter_id)
);
CREATE INDEX space_meter_meter_idx ON config.space_meter (meter_id);
CREATE INDEX equipment_meter_meter_idx ON config.equipment_meter (meter_id);
CREATE INDEX tenant_meter_meter_idx ON config.tenant_meter (meter_id);

-- Every space with all its descendants (itself included), for subtree totals.
CREATE VIEW config.space_closure AS
WITH RECURSIVE tree(ancestor_id, space_id, depth) AS (
    SELECT id, id, 0 FROM config.space
    UNION ALL
    SELECT t.ancestor_id, s.id, t.depth + 1
    FROM tree t JOIN config.space s ON s.parent_id = t.space_id
)
SELECT ancestor_id, space_id, depth FROM tree;

-- migrate:down
DROP VIEW IF EXISTS config.space_closure;
DROP TABLE IF EXISTS config.shopfloor_meter, config.store_meter, config.tenant_meter,
    config.combined_equipment_meter, config.equipment_meter, config.space_meter,
    config.shopfloor, config.store, config.tenant, config.combined_equipment_member,
    config.combined_equipment, config.equipment, config.meter_point, config.meter,
    config.point, config.data_source, config.energy_item, config.energy_category,
    config.space, config.cost_center;
DROP FUNCTION IF EXISTS config.space_no_cycle();
DROP FUNCTION IF EXISTS config.valid_timezone(text);
