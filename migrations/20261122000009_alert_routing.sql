-- Who hears what, and when: e-mail channels beside webhooks, a practice's clinic hours and time zone
-- (which routes apply and how urgent an alert is), maintenance windows that mute planned work, and
-- a per-practice rate limit that folds a storm into one digest. Also the per-appliance condition
-- state the "uplink degraded" and "metered data over budget" rules keep between telemetry messages.

ALTER TABLE practices
    ADD COLUMN time_zone    text NOT NULL DEFAULT 'UTC',
    -- {"mon": [["08:00", "18:00"]], "tue": …}; NULL: no hours set, every hour counts as open.
    ADD COLUMN clinic_hours jsonb;

ALTER TABLE notification_channels
    DROP CONSTRAINT notification_channels_kind_check,
    ADD CONSTRAINT notification_channels_kind_check CHECK (kind IN ('webhook', 'email')),
    ALTER COLUMN url DROP NOT NULL,
    ALTER COLUMN secret DROP NOT NULL,
    -- E-mail: addresses (people or lists) and users (their current address, while enabled).
    ADD COLUMN recipients text[] NOT NULL DEFAULT '{}',
    ADD COLUMN user_ids   uuid[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT notification_channels_target CHECK (
        (kind = 'webhook' AND url IS NOT NULL AND secret IS NOT NULL)
        OR (kind = 'email' AND cardinality(recipients) + cardinality(user_ids) > 0));

ALTER TABLE routing_rules
    -- always; clinic_hours (an alert raised after hours waits for the opening, and goes out only if
    -- nobody took it meanwhile); after_hours (the on-call route: only while the practice is closed).
    ADD COLUMN during text NOT NULL DEFAULT 'always'
        CHECK (during IN ('always', 'clinic_hours', 'after_hours'));

ALTER TABLE alerts
    -- Raised inside a maintenance window: recorded for the record, never notified.
    ADD COLUMN muted       boolean NOT NULL DEFAULT false,
    -- Raised while the practice was closed (its severity capped by the policy).
    ADD COLUMN after_hours boolean NOT NULL DEFAULT false;

ALTER TABLE notifications
    ALTER COLUMN alert_id DROP NOT NULL,
    ADD COLUMN practice_id uuid,
    -- A digest: the alerts it folds together.
    ADD COLUMN digest_of   uuid[],
    DROP CONSTRAINT notifications_status_check,
    ADD CONSTRAINT notifications_status_check
        CHECK (status IN ('pending', 'delivered', 'dead', 'cancelled', 'held', 'digested')),
    DROP CONSTRAINT notifications_event_check,
    ADD CONSTRAINT notifications_event_check
        CHECK (event IN ('open', 'close', 'notice', 'reminder', 'digest')),
    ADD CONSTRAINT notifications_subject CHECK ((event = 'digest') = (alert_id IS NULL));
UPDATE notifications n SET practice_id = a.practice_id FROM alerts a WHERE a.id = n.alert_id;
ALTER TABLE notifications ALTER COLUMN practice_id SET NOT NULL;
CREATE INDEX notifications_per_practice ON notifications (channel_id, practice_id, created_at);
CREATE INDEX notifications_held ON notifications (tenant_id, channel_id, practice_id) WHERE status = 'held';

CREATE TABLE maintenance_windows (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id  uuid NOT NULL,
    -- NULL: every appliance of the practice.
    appliance_id uuid REFERENCES appliances(id) ON DELETE CASCADE,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    reason       text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX maintenance_windows_by_practice ON maintenance_windows (tenant_id, practice_id, ends_at);

ALTER TABLE appliances
    -- Per uplink: since when it has been degraded, and this month's metered data.
    ADD COLUMN uplink_conditions jsonb NOT NULL DEFAULT '{}';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['maintenance_windows']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = stayopen_current_tenant()) '
            'WITH CHECK (tenant_id = stayopen_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON maintenance_windows TO stayopen_app;

-- Tenants with notifications held by the rate limit for longer than p_secs: their digest is due.
CREATE FUNCTION stayopen_tenants_with_due_digests(p_secs double precision) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM notifications
          WHERE status = 'held' AND created_at < now() - make_interval(secs => p_secs) $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_due_digests(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_due_digests(double precision) TO stayopen_app;

-- Tenants with enrolled appliances, for the slow sweeps (drills overdue, flapping that calmed down).
CREATE FUNCTION stayopen_tenants_with_appliances() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM appliances WHERE revoked_at IS NULL $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_appliances() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_appliances() TO stayopen_app;

-- The last drill and recent failovers of an appliance, for "drill overdue" and "flapping".
CREATE INDEX appliance_events_by_kind ON appliance_events (appliance_id, kind, sent_at DESC);
