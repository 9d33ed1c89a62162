-- "Degraded" narrowed (issue 19): an appliance on its primary is degraded when the practice is one
-- failure from being cut off or is suffering now: an uplink is down (no backup left, or the
-- primary is gone and nothing took over), none carries traffic, or the one carrying it is
-- degraded. A standby that is merely lossy or slow (an LTE backup with a weak signal) still backs
-- the practice up, so it no longer makes the appliance degraded: in the demo it made 11 of 20
-- healthy boxes "degraded".
CREATE OR REPLACE FUNCTION stayopen_appliance_state(
    online boolean,
    last_seen timestamptz,
    on_backup boolean,
    active_uplink text,
    last_telemetry jsonb,
    offline_after_secs double precision
) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN NOT online OR last_seen IS NULL
             OR last_seen <= now() - make_interval(secs => offline_after_secs) THEN 'offline'
        WHEN on_backup THEN 'on_backup'
        WHEN active_uplink IS NULL
             OR coalesce(jsonb_path_exists(last_telemetry, '$.uplinks[*] ? (@.health == "down")'), false)
             OR coalesce(jsonb_path_exists(last_telemetry,
                                           '$.uplinks[*] ? (@.name == $active && @.health == "degraded")',
                                           jsonb_build_object('active', active_uplink)), false)
             THEN 'degraded'
        ELSE 'primary'
    END $$;
