-- The hourly telemetry roll-up can no longer fail on one bad row (issue 15). Two uplinks reporting
-- rtt_ms = 1e308 overflowed its double precision sum; the roll-up then failed on every run, its
-- watermark never advanced, and every tenant's month charts stopped. Ingest now refuses such
-- values (cloud/src/domain/ingest.rs), and the roll-up itself takes only what ingest would accept
-- today: an uplink entry is rolled up when its name is a string of at most 64 characters, its
-- loss_pct a number in 0-100 and its rtt_ms absent, null or a number in 0-600000 ms; anything
-- else (old rows, rows written around ingest) is left out. Each tenant is rolled up in its own
-- subtransaction, so even a failure nobody foresaw costs only that tenant's rows of this run, and
-- the watermark always advances.

CREATE OR REPLACE FUNCTION stayopen_roll_up_telemetry() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    from_ts timestamptz;
    to_ts   timestamptz := now() - interval '1 minute';
    touched bigint := 0;
    rows_now bigint;
    tenant  uuid;
BEGIN
    SELECT received_before INTO from_ts FROM telemetry_rollup_watermark FOR UPDATE;
    IF from_ts >= to_ts THEN
        RETURN 0;
    END IF;
    FOR tenant IN
        SELECT DISTINCT t.tenant_id FROM telemetry t
        WHERE t.received_at >= from_ts AND t.received_at < to_ts
    LOOP
        BEGIN
            INSERT INTO telemetry_hourly AS h
                   (tenant_id, appliance_id, uplink, hour, samples, rtt_sum, rtt_samples, loss_sum)
            SELECT t.tenant_id, t.appliance_id, u ->> 'name', date_trunc('hour', t.sent_at),
                   count(*), coalesce(sum(v.rtt), 0), count(v.rtt), coalesce(sum(v.loss), 0)
            FROM telemetry t
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN jsonb_typeof(t.body -> 'uplinks') = 'array' THEN t.body -> 'uplinks'
                     ELSE '[]'::jsonb END) u
            CROSS JOIN LATERAL (SELECT
                CASE WHEN jsonb_typeof(u -> 'rtt_ms') = 'number'
                          AND (u ->> 'rtt_ms')::numeric BETWEEN 0 AND 600000
                     THEN (u ->> 'rtt_ms')::double precision END AS rtt,
                CASE WHEN jsonb_typeof(u -> 'loss_pct') = 'number'
                          AND (u ->> 'loss_pct')::numeric BETWEEN 0 AND 100
                     THEN (u ->> 'loss_pct')::double precision END AS loss,
                coalesce(jsonb_typeof(u -> 'rtt_ms'), 'null') = 'null' AS no_rtt) v
            WHERE t.tenant_id = tenant
              AND t.received_at >= from_ts AND t.received_at < to_ts
              AND jsonb_typeof(u -> 'name') = 'string'
              AND char_length(u ->> 'name') BETWEEN 1 AND 64
              AND v.loss IS NOT NULL
              AND (v.rtt IS NOT NULL OR v.no_rtt)
              AND isfinite(t.sent_at)
            GROUP BY 1, 2, 3, 4
            ON CONFLICT (appliance_id, hour, uplink) DO UPDATE SET
                samples     = h.samples + EXCLUDED.samples,
                rtt_sum     = h.rtt_sum + EXCLUDED.rtt_sum,
                rtt_samples = h.rtt_samples + EXCLUDED.rtt_samples,
                loss_sum    = h.loss_sum + EXCLUDED.loss_sum;
            GET DIAGNOSTICS rows_now = ROW_COUNT;
            touched := touched + rows_now;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'telemetry roll-up: tenant % skipped for telemetry received % to %: %',
                tenant, from_ts, to_ts, SQLERRM;
        END;
    END LOOP;
    UPDATE telemetry_rollup_watermark SET received_before = to_ts;
    RETURN touched;
END
$$;
REVOKE ALL ON FUNCTION stayopen_roll_up_telemetry() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_roll_up_telemetry() TO stayopen_app;
