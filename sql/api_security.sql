-- API security: people who log in, their refresh tokens, and the data scopes that limit
-- users and API keys to parts of the organisation.
-- Grain: one row per user / issued refresh token / user-or-key ↔ space-or-tenant grant.
-- Written by `wattline user create` and the API (app/users.py, app/api/services/config.py);
-- read by the API's authentication (app/api/security.py) on every request.
--
-- Data scopes are enforced in the application (app/scopes.py), not by row-level
-- security: the report rollups are continuous aggregates on the Community edition
-- (materialized views, outside RLS) and plain tables on the Apache edition, so one
-- filter in the application covers configuration, live data and reports alike.
--
-- A principal is restricted when `restricted` is true; it then sees the spaces (with
-- their subtrees) and tenants granted below and nothing else — deleting a granted space
-- narrows the scope, it never widens it to everything.

CREATE TABLE config.app_user (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        text        NOT NULL CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash   text        NOT NULL,                 -- argon2id, PHC string
    role            text        NOT NULL DEFAULT 'viewer' CHECK (role IN ('admin', 'engineer', 'viewer')),
    enabled         boolean     NOT NULL DEFAULT true,
    restricted      boolean     NOT NULL DEFAULT false,   -- true: only the granted spaces/tenants
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz,
    -- Login throttling: consecutive failures, and the lock they caused.
    failed_logins   integer     NOT NULL DEFAULT 0,
    locked_until    timestamptz
);
-- Usernames are case-insensitive for login.
CREATE UNIQUE INDEX app_user_username_uq ON config.app_user (lower(username));

CREATE TABLE config.user_space (
    user_id  integer NOT NULL REFERENCES config.app_user (id) ON DELETE CASCADE,
    space_id integer NOT NULL REFERENCES config.space (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, space_id)
);
CREATE TABLE config.user_tenant (
    user_id   integer NOT NULL REFERENCES config.app_user (id) ON DELETE CASCADE,
    tenant_id integer NOT NULL REFERENCES config.tenant (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, tenant_id)
);

-- API keys get the same kind of scope.
ALTER TABLE config.api_key ADD COLUMN restricted boolean NOT NULL DEFAULT false;
CREATE TABLE config.api_key_space (
    api_key_id integer NOT NULL REFERENCES config.api_key (id) ON DELETE CASCADE,
    space_id   integer NOT NULL REFERENCES config.space (id) ON DELETE CASCADE,
    PRIMARY KEY (api_key_id, space_id)
);
CREATE TABLE config.api_key_tenant (
    api_key_id integer NOT NULL REFERENCES config.api_key (id) ON DELETE CASCADE,
    tenant_id  integer NOT NULL REFERENCES config.tenant (id) ON DELETE CASCADE,
    PRIMARY KEY (api_key_id, tenant_id)
);

-- Refresh tokens: only SHA-256 of the token is stored. Each refresh revokes the token it
-- used and issues the next one of the same family; presenting a revoked token again
-- (a stolen copy) revokes the whole family.
CREATE TABLE config.refresh_token (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       integer     NOT NULL REFERENCES config.app_user (id) ON DELETE CASCADE,
    family        uuid        NOT NULL,
    token_sha256  bytea       NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    issued_at     timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX refresh_token_user_idx ON config.refresh_token (user_id);
CREATE INDEX refresh_token_family_idx ON config.refresh_token (family);

-- migrate:down
DROP TABLE IF EXISTS config.refresh_token, config.api_key_tenant, config.api_key_space,
    config.user_tenant, config.user_space, config.app_user;
ALTER TABLE config.api_key DROP COLUMN IF EXISTS restricted;
