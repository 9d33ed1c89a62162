-- People-facing names for the ids the audit log, policy layers and commands store (issue 19): an
-- address instead of `user:3e672afd-…`, a serial instead of `appliance:…`. Read under the
-- caller's row-level security, so a name from another tenant never shows; what no longer exists
-- (a deleted user) keeps its stored id.

-- `t` as a uuid, or NULL when it is not one (so a lookup by it can use the primary key).
CREATE FUNCTION stayopen_uuid_or_null(t text) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN t ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                      THEN t::uuid END $$;

-- Who an actor label (`user:<id>`, `api_token:<id>`, `appliance:<id>`, `system:<what>`) is.
CREATE FUNCTION stayopen_actor_name(actor text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        CASE split_part(actor, ':', 1)
            WHEN 'user' THEN (SELECT u.email FROM users u
                              WHERE u.id = stayopen_uuid_or_null(split_part(actor, ':', 2)))
            WHEN 'api_token' THEN (SELECT 'API token "' || t.name || '"' FROM api_tokens t
                                   WHERE t.id = stayopen_uuid_or_null(split_part(actor, ':', 2)))
            WHEN 'appliance' THEN (SELECT a.serial FROM appliances a
                                   WHERE a.id = stayopen_uuid_or_null(split_part(actor, ':', 2)))
            WHEN 'system' THEN 'StayOpen (' || replace(split_part(actor, ':', 2), '_', ' ') || ')'
        END,
        actor) $$;

-- What an audit target (`target_type`, `target_id`) is called; '' when it has no name or is gone.
CREATE FUNCTION stayopen_target_name(target_type text, target_id text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(
        CASE target_type
            WHEN 'appliance' THEN (SELECT a.serial FROM appliances a
                                   WHERE a.id = stayopen_uuid_or_null(target_id))
            WHEN 'user' THEN (SELECT u.email FROM users u WHERE u.id = stayopen_uuid_or_null(target_id))
            WHEN 'practice' THEN (SELECT p.name FROM practices p
                                  WHERE p.id = stayopen_uuid_or_null(target_id))
            WHEN 'site' THEN (SELECT p.name || ' / ' || s.name FROM sites s
                              JOIN practices p ON p.id = s.practice_id
                              WHERE s.id = stayopen_uuid_or_null(target_id))
            WHEN 'alert' THEN (SELECT replace(al.kind, '_', ' ') || ' on ' || a.serial FROM alerts al
                               JOIN appliances a ON a.id = al.appliance_id
                               WHERE al.id = stayopen_uuid_or_null(target_id))
            WHEN 'api_token' THEN (SELECT t.name FROM api_tokens t
                                   WHERE t.id = stayopen_uuid_or_null(target_id))
            WHEN 'notification_channel' THEN (SELECT c.name FROM notification_channels c
                                              WHERE c.id = stayopen_uuid_or_null(target_id))
            WHEN 'critical_app' THEN (SELECT c.name FROM critical_apps c
                                      WHERE c.id = stayopen_uuid_or_null(target_id))
            WHEN 'msp' THEN (SELECT t.name FROM tenants t WHERE t.id = stayopen_uuid_or_null(target_id))
        END,
        '') $$;

GRANT EXECUTE ON FUNCTION stayopen_uuid_or_null(text) TO stayopen_app;
GRANT EXECUTE ON FUNCTION stayopen_actor_name(text) TO stayopen_app;
GRANT EXECUTE ON FUNCTION stayopen_target_name(text, text) TO stayopen_app;
