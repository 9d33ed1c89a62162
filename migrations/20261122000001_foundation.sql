-- Foundation schema: tenants (MSPs), their practices and sites, dashboard users, enrolment tokens,
-- appliances with their MQTT credentials, and what the appliances report.
-- Every row that belongs to a tenant carries tenant_id, so every query can and must filter by it.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE practices (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

CREATE TABLE sites (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The composite key makes it impossible to attach a site to another tenant's practice.
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE,
    UNIQUE (practice_id, name),
    UNIQUE (tenant_id, id)
);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email         text NOT NULL UNIQUE CHECK (email = lower(email) AND position('@' in email) > 1),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('msp_admin', 'practice_viewer')),
    practice_id   uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE,
    CHECK ((role = 'practice_viewer') = (practice_id IS NOT NULL))
);

CREATE TABLE enrollment_tokens (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id  uuid NOT NULL,
    site_id      uuid NOT NULL,
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash   bytea NOT NULL UNIQUE,
    expires_at   timestamptz NOT NULL,
    max_uses     integer NOT NULL CHECK (max_uses > 0),
    uses         integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    created_by   uuid REFERENCES users(id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites(tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE appliances (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id        uuid NOT NULL,
    site_id            uuid NOT NULL,
    serial             text NOT NULL,
    mac                text NOT NULL,
    model              text NOT NULL,
    agent_version      text NOT NULL,
    -- SHA-256 of the MQTT password: a 256-bit random secret, so a fast hash is enough and keeps the
    -- broker's per-connection check cheap.
    mqtt_password_hash bytea NOT NULL,
    enrolled_at        timestamptz NOT NULL DEFAULT now(),
    online             boolean NOT NULL DEFAULT false,
    last_seen          timestamptz,
    active_uplink      text,
    last_telemetry     jsonb,
    -- sent_at of last_telemetry, so replayed older telemetry never overwrites the current state.
    last_telemetry_at  timestamptz,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites(tenant_id, id) ON DELETE CASCADE,
    -- Re-enrolling the same hardware reuses the appliance: one row per physical box.
    UNIQUE (serial, mac)
);
CREATE INDEX appliances_tenant_practice ON appliances (tenant_id, practice_id);

CREATE TABLE telemetry (
    message_id   uuid PRIMARY KEY,
    appliance_id uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    sent_at      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    body         jsonb NOT NULL
);
CREATE INDEX telemetry_appliance_sent_at ON telemetry (appliance_id, sent_at DESC);

CREATE TABLE appliance_events (
    message_id   uuid PRIMARY KEY,
    appliance_id uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind         text NOT NULL,
    sent_at      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    body         jsonb NOT NULL
);
CREATE INDEX appliance_events_appliance_sent_at ON appliance_events (appliance_id, sent_at DESC);

-- Every MQTT message ingest refused, with the reason, so a misbehaving device can be diagnosed and
-- nothing disappears silently. The payload is truncated to 4 KiB.
CREATE TABLE ingest_rejections (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea NOT NULL
);
CREATE INDEX ingest_rejections_received_at ON ingest_rejections (received_at DESC);
