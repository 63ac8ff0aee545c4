-- config.api_key: credentials for machines calling the HTTP API (push ingest today,
-- reads and writes as the API grows). Grain: one row per issued key.
-- Written by `wattline apikey create|revoke` (app/apikeys.py); read by the API's
-- authentication (app/api/keys.py) on every request.
--
-- The key itself is never stored: only its public prefix (to find the row) and the
-- SHA-256 of the whole key. Keys are 256-bit random strings, so a fast hash is as safe
-- as a slow password hash here and keeps verification to microseconds per request.
CREATE TABLE config.api_key (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL CHECK (btrim(name) <> ''),
    prefix         text        NOT NULL UNIQUE CHECK (prefix ~ '^[a-z0-9]{8,32}$'),
    secret_sha256  bytea       NOT NULL CHECK (octet_length(secret_sha256) = 32),
    scopes         text[]      NOT NULL CHECK (cardinality(scopes) > 0
                                               AND scopes <@ ARRAY['read', 'write', 'ingest']::text[]),
    -- Optional: the key may only push to this data source's points.
    data_source_id integer     REFERENCES config.data_source (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    revoked_at     timestamptz,
    last_used_at   timestamptz,
    CHECK (expires_at IS NULL OR expires_at > created_at)
);

-- migrate:down
DROP TABLE IF EXISTS config.api_key;
