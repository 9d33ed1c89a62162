-- The tamper-evident audit log: every change anyone makes, written in the same transaction as the
-- change. Each row carries the SHA-256 of the previous row of its tenant, so an edited or deleted
-- row breaks the chain (`stayopen-cloud admin verify-audit`).

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- Position in the tenant's chain, from 1.
    seq         bigint NOT NULL,
    at          timestamptz NOT NULL,
    -- "user:<uuid>", "appliance:<uuid>" or "system:<what>".
    actor       text NOT NULL,
    action      text NOT NULL,
    target_type text NOT NULL,
    target_id   text NOT NULL,
    before      jsonb,
    after       jsonb,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    UNIQUE (tenant_id, seq)
);

-- MSP names are unique (case-insensitively): operators and support find an MSP by its name.
CREATE UNIQUE INDEX tenants_name_unique ON tenants (lower(name));
