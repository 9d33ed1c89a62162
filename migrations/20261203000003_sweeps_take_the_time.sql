-- The sweeps, the digests and the notification dispatcher take the current time from the cloud's
-- clock (which tests control) instead of the database's now(); the functions that find the
-- tenants with work due take it as a parameter too. Same answers, at the time given.

DROP FUNCTION stayopen_tenants_with_silent_appliances(double precision);
CREATE FUNCTION stayopen_tenants_with_silent_appliances(p_secs double precision, p_now timestamptz)
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM appliances
          WHERE online AND revoked_at IS NULL AND last_seen < p_now - make_interval(secs => p_secs) $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_silent_appliances(double precision, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_silent_appliances(double precision, timestamptz) TO stayopen_app;

DROP FUNCTION stayopen_fleet_silence(double precision);
CREATE FUNCTION stayopen_fleet_silence(p_secs double precision, p_now timestamptz,
                                       OUT silent bigint, OUT online bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT count(*) FILTER (WHERE last_seen < p_now - make_interval(secs => p_secs)),
                 count(*)
          FROM appliances WHERE online AND revoked_at IS NULL $$;
REVOKE ALL ON FUNCTION stayopen_fleet_silence(double precision, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_fleet_silence(double precision, timestamptz) TO stayopen_app;

DROP FUNCTION stayopen_tenants_with_expiring_certificates(integer);
CREATE FUNCTION stayopen_tenants_with_expiring_certificates(p_days integer, p_now timestamptz)
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM appliances
          WHERE revoked_at IS NULL AND cert_not_after < p_now + make_interval(days => p_days) $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_expiring_certificates(integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_expiring_certificates(integer, timestamptz) TO stayopen_app;

DROP FUNCTION stayopen_tenants_with_due_digests(double precision);
CREATE FUNCTION stayopen_tenants_with_due_digests(p_secs double precision, p_now timestamptz)
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM notifications
          WHERE status = 'held' AND created_at < p_now - make_interval(secs => p_secs) $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_due_digests(double precision, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_due_digests(double precision, timestamptz) TO stayopen_app;

DROP FUNCTION stayopen_tenants_with_due_notifications();
CREATE FUNCTION stayopen_tenants_with_due_notifications(p_now timestamptz) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM notifications
          WHERE status = 'pending' AND next_attempt_at <= p_now $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_due_notifications(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_due_notifications(timestamptz) TO stayopen_app;
