-- Where alerts go: channels (webhooks for now), routing rules (which alerts to which channel), and
-- the notification outbox, written in the same transaction as the alert change it announces and
-- delivered with retries; a notification that exhausts its retries stays as a dead letter.

CREATE TABLE notification_channels (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    kind        text NOT NULL CHECK (kind IN ('webhook')),
    url         text NOT NULL,
    -- The HMAC-SHA256 key the receiver checks signatures with (shown once, at creation).
    secret      text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE TABLE routing_rules (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id   uuid NOT NULL,
    -- NULL: every practice of the MSP.
    practice_id  uuid,
    -- NULL: every kind.
    kinds        text[],
    min_severity text NOT NULL CHECK (min_severity IN ('info', 'warning', 'critical')),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES notification_channels(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    -- Creation order: a ticket's notifications go out in this order (open before close).
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    alert_id        uuid NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    channel_id      uuid NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    -- open, close (the alert resolved) or notice (informational, over when it happened).
    event           text NOT NULL CHECK (event IN ('open', 'close', 'notice')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (alert_id, channel_id, event)
);
CREATE INDEX notifications_due ON notifications (tenant_id, next_attempt_at) WHERE status = 'pending';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notification_channels', 'routing_rules', 'notifications']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = stayopen_current_tenant()) '
            'WITH CHECK (tenant_id = stayopen_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON notification_channels, routing_rules, notifications TO stayopen_app;

CREATE FUNCTION stayopen_tenants_with_due_notifications() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM notifications WHERE status = 'pending' AND next_attempt_at <= now() $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_due_notifications() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_due_notifications() TO stayopen_app;
