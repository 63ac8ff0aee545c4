-- Schemas and the TimescaleDB extension.
-- Grain: database-wide. Written by migration 0001; read by everything.
-- Concerns are separated by schema (as MyEMS separates databases) while joins stay possible.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE SCHEMA IF NOT EXISTS config;   -- organisation, meters, points, data sources, tariffs, users
CREATE SCHEMA IF NOT EXISTS raw;      -- readings as collected
CREATE SCHEMA IF NOT EXISTS energy;   -- 15-minute energy and its rollups
CREATE SCHEMA IF NOT EXISTS billing;  -- interval cost, bills, bill lines
CREATE SCHEMA IF NOT EXISTS carbon;   -- interval emissions by scope
CREATE SCHEMA IF NOT EXISTS ops;      -- job runs, dirty ranges, collector status, dead letters, audit
CREATE SCHEMA IF NOT EXISTS api;      -- stable views for Grafana and analysts

-- Which TimescaleDB edition serves this database: 'apache' (no continuous aggregates,
-- compression, gapfill or policies) or 'timescale' (Community, all of them).
CREATE OR REPLACE FUNCTION ops.timescale_edition() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT coalesce(current_setting('timescaledb.license', true), 'unknown') $$;

-- migrate:down
DROP FUNCTION IF EXISTS ops.timescale_edition();
DROP SCHEMA IF EXISTS api CASCADE;
DROP SCHEMA IF EXISTS ops CASCADE;
DROP SCHEMA IF EXISTS carbon CASCADE;
DROP SCHEMA IF EXISTS billing CASCADE;
DROP SCHEMA IF EXISTS energy CASCADE;
DROP SCHEMA IF EXISTS raw CASCADE;
DROP SCHEMA IF EXISTS config CASCADE;
