-- wattline_reader: the read-only role Grafana (and analysts' tools) log in as.
-- Grain: one cluster-wide role; its privileges are per database. Written by migration
-- 0008 (the role, NOLOGIN) and `wattline db reader-password` (LOGIN PASSWORD, app/grafana.py);
-- read by PostgreSQL when Grafana connects.
--
-- It sees the api schema's views and nothing else: USAGE on schema api, SELECT on its
-- views (now and, through default privileges, those recreated later by rollup rebuilds),
-- no privilege on config, raw, energy, billing, carbon or ops. Views read their tables
-- with their owner's rights, but functions a view calls run with the caller's, so the
-- helpers the api views call and the api functions are SECURITY DEFINER with a fixed
-- search_path. Its sessions are read-only and time out after 60 s.
--
-- Roles are cluster-wide and every database runs this migration: creation is idempotent,
-- and the downgrade revokes here and drops the role only when no other database still
-- grants it anything.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wattline_reader') THEN
        CREATE ROLE wattline_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;   -- another database's migration created it at the same moment
END $$;
COMMENT ON ROLE wattline_reader IS 'Wattline: read-only access to the api schema (Grafana)';

-- Role settings, not per-database ones: a database copied from a template (tests, a
-- restore under another name) keeps them. They go with the role.
ALTER ROLE wattline_reader SET default_transaction_read_only = on;
ALTER ROLE wattline_reader SET statement_timeout = '60s';

GRANT USAGE ON SCHEMA api TO wattline_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA api TO wattline_reader;
-- Views dropped and recreated later (app.rollups.rebuild, carbon.build_meter_rollups) by
-- the role that ran the migrations keep the grant.
ALTER DEFAULT PRIVILEGES IN SCHEMA api GRANT SELECT ON TABLES TO wattline_reader;

-- Functions the api views call: run as their owner, so the reader needs no access to the
-- energy and carbon schemas. (A function created with CREATE FUNCTION, not replaced by
-- CREATE OR REPLACE, keeps these attributes.)
ALTER FUNCTION energy.reporting_zone() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION energy.expected_intervals(text, timestamptz, text)
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION energy.quality_names(integer) SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION carbon.flag_names(integer) SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION ops.timescale_edition() SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
-- The gap-filled series functions. sql/api_energy.sql re-creates them with CREATE OR
-- REPLACE when the rollups are rebuilt, which resets them to SECURITY INVOKER: the
-- dashboards therefore do not call them (they read the views), and analysts logged in as
-- the reader call them after a migration, not after a rebuild, until api_energy.sql
-- declares SECURITY DEFINER itself.
ALTER FUNCTION api.meter_series(integer, text, timestamptz, timestamptz)
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION api.entity_series(text, integer, integer, text, timestamptz, timestamptz, text)
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;

-- migrate:down
ALTER FUNCTION api.entity_series(text, integer, integer, text, timestamptz, timestamptz, text)
    SECURITY INVOKER RESET search_path;
ALTER FUNCTION api.meter_series(integer, text, timestamptz, timestamptz) SECURITY INVOKER RESET search_path;
ALTER FUNCTION ops.timescale_edition() SECURITY INVOKER RESET search_path;
ALTER FUNCTION carbon.flag_names(integer) SECURITY INVOKER RESET search_path;
ALTER FUNCTION energy.quality_names(integer) SECURITY INVOKER RESET search_path;
ALTER FUNCTION energy.expected_intervals(text, timestamptz, text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION energy.reporting_zone() SECURITY INVOKER RESET search_path;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wattline_reader') THEN
        RETURN;
    END IF;
    ALTER DEFAULT PRIVILEGES IN SCHEMA api REVOKE SELECT ON TABLES FROM wattline_reader;
    REVOKE ALL ON ALL TABLES IN SCHEMA api FROM wattline_reader;
    REVOKE ALL ON SCHEMA api FROM wattline_reader;
    BEGIN
        DROP ROLE wattline_reader;
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role wattline_reader kept: other databases still grant it privileges';
    END;
END $$;
