-- Tenancy enforced by the database.
--
-- The application connects as `stayopen_app`: not the owner of any table, not a superuser, without
-- BYPASSRLS. Every tenant-owned table has a row-level security policy keyed on the MSP, and the
-- application sets the MSP per transaction with `set_config('app.tenant_id', …, true)`. With no
-- tenant set, `current_setting('app.tenant_id', true)` is NULL, or '' on a pooled connection after
-- a transaction that set it; NULLIF makes both NULL, so `tenant_id = NULL` matches no row.
--
-- The few lookups that must cross tenants before the tenant is known (sign-in by e-mail, a device
-- by its id, an enrolment token by its hash) are SECURITY DEFINER functions that return only the
-- tenant id (and the row id), never the row.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stayopen_app') THEN
        -- NOLOGIN here; deployments give it LOGIN and a password (infra/scripts do, for the demo).
        CREATE ROLE stayopen_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO stayopen_app;

CREATE FUNCTION stayopen_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

-- Users: four roles. Compliance officers and auditors are scoped to practices through
-- user_practices; an auditor's access expires.
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users DROP CONSTRAINT users_check;
CREATE TABLE user_practices (
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    practice_id uuid NOT NULL,
    PRIMARY KEY (user_id, practice_id),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE
);
INSERT INTO user_practices (tenant_id, user_id, practice_id)
    SELECT tenant_id, id, practice_id FROM users WHERE practice_id IS NOT NULL;
UPDATE users SET role = 'compliance_officer' WHERE role = 'practice_viewer';
ALTER TABLE users DROP COLUMN practice_id;
ALTER TABLE users
    ADD CONSTRAINT users_role_check
        CHECK (role IN ('msp_admin', 'msp_technician', 'compliance_officer', 'auditor')),
    ADD COLUMN display_name       text NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    -- Auditors only: when their access ends.
    ADD COLUMN access_expires_at  timestamptz,
    ADD COLUMN disabled_at        timestamptz,
    -- TOTP (RFC 6238) second factor: the shared secret, whether it has been confirmed, and the last
    -- time step accepted, so a code cannot be replayed.
    ADD COLUMN totp_secret        bytea,
    ADD COLUMN totp_enabled       boolean NOT NULL DEFAULT false,
    ADD COLUMN totp_last_step     bigint,
    ADD CONSTRAINT users_auditor_expires CHECK ((role = 'auditor') = (access_expires_at IS NOT NULL));
ALTER TABLE users ADD UNIQUE (tenant_id, id);

-- The MSP's security settings.
ALTER TABLE tenants ADD COLUMN require_totp_for_admins boolean NOT NULL DEFAULT false;

-- Refresh tokens: opaque, stored hashed, single use. Each sign-in starts a family; refreshing
-- replaces the token with the next one of its family. Presenting a used token again means it was
-- stolen, so the whole family is revoked.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Long-lived API tokens for MSP automation: hashed, scoped, revocable.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE,
    -- 'read' or 'operate' (read plus appliance operations).
    scope        text NOT NULL CHECK (scope IN ('read', 'operate')),
    created_by   uuid REFERENCES users(id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Telemetry, partitioned by month of sent_at so old months are dropped whole. A unique key must
-- include the partition key, so (message_id, sent_at) is the primary key and ingest also checks
-- message_id alone (indexed) before inserting; it stores one appliance's messages one at a time.
ALTER TABLE telemetry RENAME TO telemetry_unpartitioned;
ALTER INDEX telemetry_appliance_sent_at RENAME TO telemetry_unpartitioned_appliance_sent_at;
CREATE TABLE telemetry (
    message_id   uuid NOT NULL,
    appliance_id uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    sent_at      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    body         jsonb NOT NULL,
    PRIMARY KEY (message_id, sent_at)
) PARTITION BY RANGE (sent_at);
CREATE INDEX telemetry_appliance_sent_at ON telemetry (appliance_id, sent_at DESC);
CREATE INDEX telemetry_message_id ON telemetry (message_id);
-- Rows outside every monthly partition (a device with a wrong clock) still land somewhere.
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;

-- Creates the partition for the month containing `p_month` if it is missing. SECURITY DEFINER:
-- only the owner may create partitions, and the application calls this daily for the months ahead.
CREATE FUNCTION stayopen_ensure_telemetry_partition(p_month date) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    first_day date := date_trunc('month', p_month)::date;
    name text := format('telemetry_%s', to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Rows already in the default partition for this month would block the new partition; move
    -- them across.
    CREATE TEMP TABLE IF NOT EXISTS moving_telemetry (LIKE telemetry) ON COMMIT DROP;
    WITH moved AS (
        DELETE FROM telemetry_default
        WHERE sent_at >= first_day AND sent_at < (first_day + interval '1 month')
        RETURNING *
    )
    INSERT INTO moving_telemetry SELECT * FROM moved;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
        name, first_day, (first_day + interval '1 month')::date);
    INSERT INTO telemetry SELECT * FROM moving_telemetry;
    DELETE FROM moving_telemetry;
    RETURN true;
END
$$;
SELECT stayopen_ensure_telemetry_partition(date_trunc('month', now())::date);
SELECT stayopen_ensure_telemetry_partition((date_trunc('month', now()) + interval '1 month')::date);
INSERT INTO telemetry SELECT * FROM telemetry_unpartitioned;
DROP TABLE telemetry_unpartitioned;

-- Row-level security on every tenant-owned table.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = stayopen_current_tenant()) WITH CHECK (id = stayopen_current_tenant());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['practices', 'sites', 'users', 'user_practices', 'enrollment_tokens',
                             'appliances', 'telemetry', 'appliance_events', 'audit_log',
                             'refresh_tokens', 'api_tokens']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = stayopen_current_tenant()) '
            'WITH CHECK (tenant_id = stayopen_current_tenant())', t);
    END LOOP;
END
$$;

-- Privileges: data only. The audit log is append-only for the application.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO stayopen_app;
REVOKE UPDATE, DELETE ON audit_log FROM stayopen_app;
REVOKE ALL ON _sqlx_migrations FROM stayopen_app;
-- Tables made by later migrations (run by the owner) get the same data privileges.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO stayopen_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO stayopen_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO stayopen_app;

-- Cross-tenant lookups, each returning only ids.
CREATE FUNCTION stayopen_user_by_email(p_email text) RETURNS TABLE (user_id uuid, tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT id, tenant_id FROM users WHERE email = lower(p_email) $$;

CREATE FUNCTION stayopen_appliance_tenant(p_appliance uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM appliances WHERE id = p_appliance $$;

CREATE FUNCTION stayopen_hardware_tenant(p_serial text, p_mac text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM appliances WHERE serial = p_serial AND mac = p_mac $$;

CREATE FUNCTION stayopen_enrollment_token_tenant(p_hash bytea) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM enrollment_tokens WHERE token_hash = p_hash $$;

CREATE FUNCTION stayopen_refresh_token_tenant(p_hash bytea) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM refresh_tokens WHERE token_hash = p_hash $$;

CREATE FUNCTION stayopen_api_token_tenant(p_hash bytea) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM api_tokens WHERE token_hash = p_hash $$;

-- For work that visits every tenant in turn (verify-audit, re-publishing desired configuration).
CREATE FUNCTION stayopen_tenant_ids() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT id FROM tenants ORDER BY id $$;

-- An MSP name is unique across tenants; the check must see them all.
CREATE FUNCTION stayopen_tenant_name_taken(p_name text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM tenants WHERE lower(name) = lower(p_name)) $$;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['stayopen_user_by_email(text)', 'stayopen_appliance_tenant(uuid)',
                             'stayopen_hardware_tenant(text, text)',
                             'stayopen_enrollment_token_tenant(bytea)',
                             'stayopen_refresh_token_tenant(bytea)', 'stayopen_api_token_tenant(bytea)',
                             'stayopen_tenant_ids()', 'stayopen_tenant_name_taken(text)',
                             'stayopen_ensure_telemetry_partition(date)']
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO stayopen_app', f);
    END LOOP;
END
$$;
