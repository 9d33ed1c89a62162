-- Sign-in throttling kept in PostgreSQL, so every cloud instance shares it and a burst of
-- concurrent requests cannot outrun it (`cloud/src/domain/access/throttle.rs` explains the scheme).
--
-- One row per throttle key: the SHA-256 of the key's scope and subject (an account, an account and
-- an address, or an address), so the table holds neither e-mail addresses nor client addresses.
-- `tat` is the key's theoretical arrival time (the generic cell rate algorithm): how far into the
-- future its admitted attempts have been booked. `last_success_at`, on account-and-address keys,
-- marks an address the account signed in from. The table holds no tenant's data and no
-- `tenant_id`: sign-in is throttled before the tenant is known.
CREATE TABLE signin_throttle (
    key             bytea PRIMARY KEY CHECK (length(key) = 32),
    tat             timestamptz,
    last_success_at timestamptz,
    -- After this the row says nothing any more and may be deleted.
    expires_at      timestamptz NOT NULL
);
CREATE INDEX signin_throttle_expires_at ON signin_throttle (expires_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON signin_throttle TO stayopen_app;

-- E-mail addresses are unique per MSP, not across MSPs: refusing another MSP's address told the
-- creator that it exists elsewhere. Sign-in tries every account with the address (see
-- `sessions::sign_in`).
ALTER TABLE users DROP CONSTRAINT users_email_key;
ALTER TABLE users ADD CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email);

-- Sign-in's candidates: every account with the address, with its MSP's name (to choose between
-- two whose password matches). Ids and the name only, as the other lookups.
CREATE FUNCTION stayopen_signin_candidates(p_email text)
    RETURNS TABLE (user_id uuid, tenant_id uuid, tenant_name text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT u.id, u.tenant_id, t.name FROM users u JOIN tenants t ON t.id = u.tenant_id
          WHERE u.email = lower(p_email) ORDER BY u.id $$;
REVOKE ALL ON FUNCTION stayopen_signin_candidates(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_signin_candidates(text) TO stayopen_app;

-- Claimed serials (zero-touch enrolment) are unique per MSP, not across MSPs: refusing a serial
-- another MSP registered told the registrant that it exists there. Enrolment tries every MSP that
-- registered the serial and takes the one whose factory key digest matches (the earliest
-- registration if several do).
ALTER TABLE claimed_serials DROP CONSTRAINT claimed_serials_pkey;
ALTER TABLE claimed_serials ADD PRIMARY KEY (tenant_id, serial);
CREATE INDEX claimed_serials_serial ON claimed_serials (serial);

CREATE FUNCTION stayopen_claimed_serial_tenants(p_serial text) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM claimed_serials WHERE serial = p_serial ORDER BY created_at, tenant_id $$;
REVOKE ALL ON FUNCTION stayopen_claimed_serial_tenants(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_claimed_serial_tenants(text) TO stayopen_app;
