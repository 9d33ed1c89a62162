-- Alerts: one row per occurrence of a condition on an appliance. While a condition's alert is not
-- resolved, the same condition folds into it (count, last_seen) instead of opening another.

CREATE TABLE alerts (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id     uuid NOT NULL,
    appliance_id    uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    kind            text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state           text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    -- What within the appliance the alert is about (an uplink's name), or ''.
    subject         text NOT NULL DEFAULT '',
    summary         text NOT NULL,
    count           integer NOT NULL DEFAULT 1,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_by     text,
    resolved_at     timestamptz,
    resolution      text,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX alerts_one_unresolved ON alerts (appliance_id, kind, subject) WHERE state <> 'resolved';
CREATE INDEX alerts_tenant_recent ON alerts (tenant_id, last_seen DESC);
CREATE INDEX alerts_tenant_unresolved ON alerts (tenant_id, state) WHERE state <> 'resolved';

CREATE TABLE alert_comments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    alert_id   uuid NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    author     text NOT NULL,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_comments_alert ON alert_comments (alert_id, id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['alerts', 'alert_comments']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = stayopen_current_tenant()) '
            'WITH CHECK (tenant_id = stayopen_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON alerts, alert_comments TO stayopen_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO stayopen_app;

-- Tenants with appliances marked online that have been silent longer than p_secs: the heartbeat
-- sweep then works inside each tenant's transaction.
CREATE FUNCTION stayopen_tenants_with_silent_appliances(p_secs double precision) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM appliances
          WHERE online AND revoked_at IS NULL AND last_seen < now() - make_interval(secs => p_secs) $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_silent_appliances(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_silent_appliances(double precision) TO stayopen_app;
