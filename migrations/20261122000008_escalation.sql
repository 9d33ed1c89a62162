-- Escalation and reminders. A routing rule with a delay notifies only if its alert is still open
-- (not acknowledged, not resolved) when the delay has passed: the next target hears about what
-- nobody took. A rule with a repeat interval reminds its channel until the alert is acknowledged.

ALTER TABLE routing_rules
    ADD COLUMN delay_secs  integer NOT NULL DEFAULT 0 CHECK (delay_secs BETWEEN 0 AND 86400),
    ADD COLUMN repeat_secs integer CHECK (repeat_secs BETWEEN 1 AND 86400);

ALTER TABLE notifications
    -- Deliver only while the alert is still open; otherwise the notification is cancelled.
    ADD COLUMN requires_open boolean NOT NULL DEFAULT false,
    ADD COLUMN repeat_secs   integer,
    DROP CONSTRAINT notifications_status_check,
    ADD CONSTRAINT notifications_status_check
        CHECK (status IN ('pending', 'delivered', 'dead', 'cancelled')),
    DROP CONSTRAINT notifications_event_check,
    ADD CONSTRAINT notifications_event_check
        CHECK (event IN ('open', 'close', 'notice', 'reminder')),
    DROP CONSTRAINT notifications_alert_id_channel_id_event_key;
-- Each alert change reaches a channel once; reminders repeat.
CREATE UNIQUE INDEX notifications_once ON notifications (alert_id, channel_id, event)
    WHERE event <> 'reminder';

-- Tenants with unresolved failover alerts, for the "on backup too long" sweep.
CREATE FUNCTION stayopen_tenants_with_open_failovers() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM alerts WHERE kind = 'failover' AND state <> 'resolved' $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_open_failovers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_open_failovers() TO stayopen_app;

-- Tenants with device certificates expiring within p_days, for the certificate sweep.
CREATE FUNCTION stayopen_tenants_with_expiring_certificates(p_days integer) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM appliances
          WHERE revoked_at IS NULL AND cert_not_after < now() + make_interval(days => p_days) $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_expiring_certificates(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_expiring_certificates(integer) TO stayopen_app;
