-- Month charts without reading a month of telemetry: per appliance, uplink and hour, the sums and
-- counts of probe results (additive, so late messages simply add to their hour). A job rolls up
-- telemetry by arrival time behind a watermark, so each row is counted once, however late it came.

CREATE TABLE telemetry_hourly (
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    appliance_id uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    uplink       text NOT NULL,
    hour         timestamptz NOT NULL,
    samples      integer NOT NULL,
    rtt_sum      double precision NOT NULL,
    rtt_samples  integer NOT NULL,
    loss_sum     double precision NOT NULL,
    PRIMARY KEY (appliance_id, hour, uplink)
);
ALTER TABLE telemetry_hourly ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON telemetry_hourly USING (tenant_id = stayopen_current_tenant())
    WITH CHECK (tenant_id = stayopen_current_tenant());
GRANT SELECT ON telemetry_hourly TO stayopen_app;

CREATE INDEX telemetry_received_at ON telemetry (received_at);

CREATE TABLE telemetry_rollup_watermark (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Telemetry received before this is in telemetry_hourly.
    received_before timestamptz NOT NULL
);
INSERT INTO telemetry_rollup_watermark (received_before) VALUES ('-infinity');

-- Rolls up what arrived since the last run, up to a minute ago (an ingest transaction still open
-- then has its rows stamped earlier but not yet visible; a minute outlasts any of them). Returns the
-- hourly rows touched. Runs for all tenants, hence SECURITY DEFINER; it reads and writes only
-- these two tables.
CREATE FUNCTION stayopen_roll_up_telemetry() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    from_ts timestamptz;
    to_ts   timestamptz := now() - interval '1 minute';
    touched bigint;
BEGIN
    SELECT received_before INTO from_ts FROM telemetry_rollup_watermark FOR UPDATE;
    IF from_ts >= to_ts THEN
        RETURN 0;
    END IF;
    INSERT INTO telemetry_hourly AS h
           (tenant_id, appliance_id, uplink, hour, samples, rtt_sum, rtt_samples, loss_sum)
    SELECT t.tenant_id, t.appliance_id, u ->> 'name', date_trunc('hour', t.sent_at), count(*),
           coalesce(sum((u ->> 'rtt_ms')::double precision), 0), count(u ->> 'rtt_ms'),
           coalesce(sum((u ->> 'loss_pct')::double precision), 0)
    FROM telemetry t, jsonb_array_elements(t.body -> 'uplinks') u
    WHERE t.received_at >= from_ts AND t.received_at < to_ts
    GROUP BY 1, 2, 3, 4
    ON CONFLICT (appliance_id, hour, uplink) DO UPDATE SET
        samples     = h.samples + EXCLUDED.samples,
        rtt_sum     = h.rtt_sum + EXCLUDED.rtt_sum,
        rtt_samples = h.rtt_samples + EXCLUDED.rtt_samples,
        loss_sum    = h.loss_sum + EXCLUDED.loss_sum;
    GET DIAGNOSTICS touched = ROW_COUNT;
    UPDATE telemetry_rollup_watermark SET received_before = to_ts;
    RETURN touched;
END
$$;
REVOKE ALL ON FUNCTION stayopen_roll_up_telemetry() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_roll_up_telemetry() TO stayopen_app;
