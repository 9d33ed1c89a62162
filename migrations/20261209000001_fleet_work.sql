-- Daily fleet work (issue 19): one state model that every list, count and page reads, tags to
-- find and act on groups of appliances, and sites that carry what a technician needs to call the
-- practice.

-- An appliance's state, worst first: `offline` (not heard from within the heartbeat, or said
-- goodbye), `on_backup` (online, traffic on a backup uplink), `degraded` (online on its primary,
-- but an uplink is degraded or down, or none carries traffic: one more failure and the practice
-- is cut off), `primary` (online on its primary with every uplink up). The dashboard's lists,
-- filters, sorting, practice roll-ups and totals all call this one function, so they never
-- disagree. Heard-from is judged against the database's clock, as the heartbeat sweep does.
CREATE FUNCTION stayopen_appliance_state(
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
             OR (jsonb_typeof(last_telemetry -> 'uplinks') = 'array'
                 AND jsonb_path_exists(last_telemetry,
                                       '$.uplinks[*] ? (@.health == "degraded" || @.health == "down")'))
             THEN 'degraded'
        ELSE 'primary'
    END $$;
GRANT EXECUTE ON FUNCTION stayopen_appliance_state(boolean, timestamptz, boolean, text, jsonb, double precision)
    TO stayopen_app;

-- Tags: short lower-case labels ("dental", "cellular-only", "pilot") an MSP puts on appliances
-- and practices to search, filter and act on them together.
ALTER TABLE appliances ADD COLUMN tags text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(tags) <= 20);
ALTER TABLE practices ADD COLUMN tags text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(tags) <= 20);
CREATE INDEX appliances_tags ON appliances USING gin (tags);
-- Serial prefix search ("SO-SIM-00") without reading every appliance of a large MSP.
CREATE INDEX appliances_serial_prefix ON appliances (tenant_id, serial text_pattern_ops);

-- What a technician needs to call the practice about a site: where it is, who is on site, and
-- each ISP with its circuit id and support line: `[{"uplink", "isp", "circuit_id",
-- "support_phone"}]`.
ALTER TABLE sites
    ADD COLUMN address       text NOT NULL DEFAULT '' CHECK (length(address) <= 500),
    ADD COLUMN contact_name  text NOT NULL DEFAULT '' CHECK (length(contact_name) <= 200),
    ADD COLUMN contact_phone text NOT NULL DEFAULT '' CHECK (length(contact_phone) <= 50),
    ADD COLUMN contact_email text NOT NULL DEFAULT '' CHECK (length(contact_email) <= 254),
    ADD COLUMN isps          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(isps) = 'array');
