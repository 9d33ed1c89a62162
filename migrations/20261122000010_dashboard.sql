-- What the dashboard needs at fleet size: whether an appliance runs on a backup uplink as a column
-- (kept by ingest) so practice roll-ups are counts, not JSON walks; indexes for per-practice
-- roll-ups and open-alert counts.

ALTER TABLE appliances ADD COLUMN on_backup boolean NOT NULL DEFAULT false;
UPDATE appliances a SET on_backup = a.active_uplink IS NOT NULL AND a.active_uplink IS DISTINCT FROM (
    SELECT u ->> 'name' FROM jsonb_array_elements(a.last_telemetry -> 'uplinks') u
    ORDER BY (u ->> 'priority')::integer LIMIT 1)
WHERE a.last_telemetry IS NOT NULL;

CREATE INDEX appliances_by_practice_serial ON appliances (practice_id, serial);
CREATE INDEX alerts_unresolved_by_practice ON alerts (practice_id) WHERE state <> 'resolved';
