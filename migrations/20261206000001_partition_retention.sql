-- Retention of raw telemetry by partition (issue 18, data growth). At 10,000 appliances reporting
-- every 10 s a month of raw telemetry is 2.6 billion rows; deleting them row by row would take
-- hours and leave as many dead tuples for vacuum. Whole monthly partitions past the cut-off are
-- dropped instead (constant time, the space returned at once); only the month the cut-off falls
-- in, and rows that landed in the default partition, are deleted row by row. Everything else is as
-- before: roll-ups, events, drills and finished incidents six years and a margin, the audit log
-- never. Returns the rows deleted per kind, and the monthly partitions dropped as
-- `telemetry_partitions`.
CREATE OR REPLACE FUNCTION stayopen_enforce_retention(telemetry_before timestamptz, records_before timestamptz)
    RETURNS TABLE (kind text, deleted bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    n bigint;
    dropped bigint := 0;
    month record;
BEGIN
    FOR month IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry'::regclass
          AND c.relname ~ '^telemetry_[0-9]{4}_[0-9]{2}$'
          AND to_date(substr(c.relname, 11), 'YYYY_MM') + interval '1 month' <= telemetry_before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', month.relname);
        dropped := dropped + 1;
    END LOOP;
    kind := 'telemetry_partitions'; deleted := dropped; RETURN NEXT;
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
