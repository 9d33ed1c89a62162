-- Ingest attributes each telemetry sample to the incident whose time it falls in, open or ended
-- (samples and events reach ingest by separate paths, so a sample may arrive after the failback
-- that ended its incident). Both of its queries look incidents up by appliance and time; without
-- this index they scanned every incident (only open ones had an index, `incidents_one_open`).
CREATE INDEX incidents_appliance_started ON incidents (appliance_id, started_at DESC);
