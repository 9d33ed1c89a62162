-- How much of the whole fleet has gone silent, across tenants, for the heartbeat sweep: when most
-- appliances stop talking at the same moment, the cloud (its broker, its network) is what failed,
-- not the appliances, and nobody is declared offline. Returns counts only, never tenant data.
CREATE FUNCTION stayopen_fleet_silence(p_secs double precision, OUT silent bigint, OUT online bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT count(*) FILTER (WHERE last_seen < now() - make_interval(secs => p_secs)),
                 count(*)
          FROM appliances WHERE online AND revoked_at IS NULL $$;
REVOKE ALL ON FUNCTION stayopen_fleet_silence(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_fleet_silence(double precision) TO stayopen_app;
