-- Issue 15: the live-update stream authenticates with a short-lived, single-use ticket instead of
-- the access token in its query string (which the request log used to record), and the key that
-- signs access tokens is shared by every cloud instance through the database.

-- A ticket opens one live-update stream, once, within seconds of being issued. Only its SHA-256
-- is stored. It names who asked for it: a signed-in user (and the sign-in, the refresh-token
-- family, so that signing out also closes the stream) or an API token.
CREATE TABLE stream_tickets (
    ticket_hash  bytea PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id      uuid REFERENCES users(id) ON DELETE CASCADE,
    session_id   uuid,
    api_token_id uuid REFERENCES api_tokens(id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CHECK ((user_id IS NULL) <> (api_token_id IS NULL))
);
CREATE INDEX stream_tickets_expiry ON stream_tickets (tenant_id, expires_at);

-- The stream's request knows no tenant until the ticket names one: the id only.
CREATE FUNCTION stayopen_stream_ticket_tenant(p_hash bytea) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM stream_tickets WHERE ticket_hash = p_hash $$;

SELECT stayopen_protect_tenant_table('stream_tickets');

-- The HMAC key that signs access tokens when none is configured: created once, by whichever
-- instance starts first (INSERT … ON CONFLICT DO NOTHING), and read by every instance, so a token
-- issued by one is accepted by all and survives restarts. One row; the application may read it
-- and create it, never change or delete it.
CREATE TABLE access_token_keys (
    id         smallint PRIMARY KEY CHECK (id = 1),
    secret     text NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON access_token_keys FROM stayopen_app;
GRANT SELECT, INSERT ON access_token_keys TO stayopen_app;
