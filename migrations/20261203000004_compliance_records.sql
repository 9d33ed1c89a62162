-- Compliance records (HIPAA 164.308(a)(7)): each practice's critical applications register, drills
-- and incidents built from the appliances' events, and the hourly availability roll-up the monthly
-- figures are read from. Kept six years (164.316(b)(2)); raw telemetry for fewer days.

CREATE TABLE critical_apps (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    tier        text NOT NULL CHECK (tier IN ('tier1', 'tier2', 'tier3')),
    endpoints   jsonb NOT NULL CHECK (jsonb_typeof(endpoints) = 'array'),
    owner       text NOT NULL DEFAULT '',
    note        text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX critical_apps_name ON critical_apps (practice_id, lower(name));

-- One drill of one appliance: opened by `drill_started`, closed by `drill_finished` or
-- `drill_failed` (a refused drill has only the latter and starts and ends at once).
CREATE TABLE drills (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id      uuid NOT NULL,
    appliance_id     uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    trigger          text NOT NULL CHECK (trigger IN ('scheduled', 'manual', 'local')),
    -- The start_drill command that started it, when there was one.
    command_id       uuid,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    outcome          text NOT NULL CHECK (outcome IN ('running', 'passed', 'failed')),
    reason           text NOT NULL DEFAULT '',
    backup_uplink    text,
    switchover_ms    integer,
    failback_ms      integer,
    apps             jsonb NOT NULL DEFAULT '[]',
    signed_by_name   text,
    signed_by_email  text,
    signed_at        timestamptz,
    sign_off_comment text,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX drills_practice_started ON drills (practice_id, started_at DESC, id DESC);
CREATE INDEX drills_appliance_started ON drills (appliance_id, started_at DESC);
CREATE UNIQUE INDEX drills_command ON drills (command_id) WHERE command_id IS NOT NULL;

-- A real outage of an appliance's primary line: opened by a `failover` that is not a drill,
-- closed by the `failback` (or telemetry showing the primary carrying traffic again).
CREATE TABLE incidents (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id         uuid NOT NULL,
    appliance_id        uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    started_at          timestamptz NOT NULL,
    ended_at            timestamptz,
    failed_uplinks      text[] NOT NULL DEFAULT '{}',
    backup_uplinks      text[] NOT NULL DEFAULT '{}',
    -- Time on a backup before backup_since, and since when traffic runs on one now.
    on_backup_secs      bigint NOT NULL DEFAULT 0,
    backup_since        timestamptz,
    traffic_kept_flowing boolean NOT NULL DEFAULT true,
    -- Per application, what the checks through the backup found: {"EHR": {"checks": 3,
    -- "unreachable": 1, "reason": "…"}}.
    apps                jsonb NOT NULL DEFAULT '{}',
    root_cause          text NOT NULL DEFAULT '',
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX incidents_practice_started ON incidents (practice_id, started_at DESC, id DESC);
CREATE UNIQUE INDEX incidents_one_open ON incidents (appliance_id) WHERE ended_at IS NULL;

CREATE TABLE incident_comments (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    incident_id uuid NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    author      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000)
);
CREATE INDEX incident_comments_incident ON incident_comments (incident_id, at);

-- Per appliance and hour (UTC), seconds: reported on (each telemetry sample covers the policy's
-- telemetry interval times its `samples`), with the primary uplink up or degraded, with any
-- uplink carrying traffic, and on a backup. Added to at ingest, once per stored message, so
-- replays do not count twice. Time nobody reported on is a gap, never up.
CREATE TABLE availability_hourly (
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    appliance_id   uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    hour           timestamptz NOT NULL,
    observed_secs  integer NOT NULL DEFAULT 0,
    primary_secs   integer NOT NULL DEFAULT 0,
    effective_secs integer NOT NULL DEFAULT 0,
    backup_secs    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (appliance_id, hour)
);

-- One scheduled drill per appliance and window, whichever cloud instance gets there first.
CREATE TABLE drill_schedule_runs (
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    appliance_id uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    command_id   uuid NOT NULL,
    queued_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (appliance_id, window_start)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['critical_apps', 'drills', 'incidents', 'incident_comments',
                             'availability_hourly', 'drill_schedule_runs']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = stayopen_current_tenant()) '
            'WITH CHECK (tenant_id = stayopen_current_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON critical_apps, drills, incidents, incident_comments,
    availability_hourly, drill_schedule_runs TO stayopen_app;

-- The tenants with an appliance whose desired policy schedules drills, for the drill scheduler.
CREATE FUNCTION stayopen_tenants_with_drill_schedules() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM appliances
          WHERE revoked_at IS NULL AND jsonb_typeof(desired_policy -> 'drill_schedule') = 'object' $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_drill_schedules() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_drill_schedules() TO stayopen_app;

-- Retention, for every tenant (hence SECURITY DEFINER): raw telemetry sent before
-- `telemetry_before` goes; roll-ups, events, drills and finished incidents go only before
-- `records_before` (six years and a margin). The audit log is not trimmed: its hash chain is
-- verified from the first row, so it is kept whole. Returns the rows deleted per kind.
CREATE FUNCTION stayopen_enforce_retention(telemetry_before timestamptz, records_before timestamptz)
    RETURNS TABLE (kind text, deleted bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM telemetry WHERE sent_at < telemetry_before;
    GET DIAGNOSTICS n = ROW_COUNT; kind := 'telemetry'; deleted := n; RETURN NEXT;
    DELETE FROM telemetry_hourly WHERE hour < records_before;
    GET DIAGNOSTICS n = ROW_COUNT; kind := 'telemetry_hourly'; deleted := n; RETURN NEXT;
    DELETE FROM availability_hourly WHERE hour < records_before;
    GET DIAGNOSTICS n = ROW_COUNT; kind := 'availability_hourly'; deleted := n; RETURN NEXT;
    DELETE FROM appliance_events WHERE sent_at < records_before;
    GET DIAGNOSTICS n = ROW_COUNT; kind := 'appliance_events'; deleted := n; RETURN NEXT;
    DELETE FROM drills WHERE started_at < records_before;
    GET DIAGNOSTICS n = ROW_COUNT; kind := 'drills'; deleted := n; RETURN NEXT;
    DELETE FROM incidents WHERE coalesce(ended_at, started_at) < records_before AND ended_at IS NOT NULL;
    GET DIAGNOSTICS n = ROW_COUNT; kind := 'incidents'; deleted := n; RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION stayopen_enforce_retention(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_enforce_retention(timestamptz, timestamptz) TO stayopen_app;
