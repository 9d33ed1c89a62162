-- Policies (layered MSP → practice → appliance), each appliance's desired and reported
-- configuration, and the command queue. All tenant-owned, all under row-level security.

CREATE TABLE policies (
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    scope       text NOT NULL CHECK (scope IN ('msp', 'practice', 'appliance')),
    -- The tenant's id for 'msp', else the practice's or the appliance's.
    scope_id    uuid NOT NULL,
    -- The settings this layer overrides: a partial policy, validated by the API.
    overrides   jsonb NOT NULL CHECK (jsonb_typeof(overrides) = 'object'),
    revision    bigint NOT NULL DEFAULT 1,
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, scope, scope_id)
);

-- Desired: what the cloud wants the appliance to run (the effective policy, versioned). Reported:
-- the version the appliance says it runs. They differ while a change is on its way, or when the
-- appliance cannot apply it: drift.
ALTER TABLE appliances
    ADD COLUMN desired_version  bigint NOT NULL DEFAULT 0,
    ADD COLUMN desired_policy   jsonb,
    ADD COLUMN desired_at       timestamptz,
    ADD COLUMN reported_version bigint,
    ADD COLUMN reported_at      timestamptz,
    ADD COLUMN revoked_at       timestamptz,
    -- The client certificate issued at the last enrolment.
    ADD COLUMN cert_serial      text,
    ADD COLUMN cert_not_after   timestamptz,
    -- sent_at of the presence message in force. The broker keeps one log per topic filter, so a
    -- telemetry message sent before a clean goodbye can be ingested after it; it must not mark the
    -- appliance online again.
    ADD COLUMN presence_at      timestamptz;

CREATE TABLE commands (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    appliance_id  uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    kind          text NOT NULL,
    spec          jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'delivered', 'acknowledged', 'succeeded', 'failed', 'expired')),
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    delivered_at  timestamptz,
    deliveries    integer NOT NULL DEFAULT 0,
    acknowledged_at timestamptz,
    finished_at   timestamptz,
    detail        text,
    result        jsonb
);
CREATE INDEX commands_appliance_created ON commands (appliance_id, created_at DESC);
CREATE INDEX commands_pending ON commands (tenant_id, status) WHERE status IN ('queued', 'delivered');

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['policies', 'commands']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = stayopen_current_tenant()) '
            'WITH CHECK (tenant_id = stayopen_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON policies, commands TO stayopen_app;

-- The tenants with commands to deliver or expire, for the delivery loop, which then works inside
-- each tenant's own transaction.
CREATE FUNCTION stayopen_tenants_with_pending_commands() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM commands WHERE status IN ('queued', 'delivered') $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_pending_commands() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_pending_commands() TO stayopen_app;
