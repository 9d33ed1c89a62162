-- Row-level security on every tenant table and every partition, present and future, ENABLEd and
-- FORCEd.
--
-- Until now RLS was enabled on the partitioned `telemetry` parent only. PostgreSQL applies a
-- table's policies to queries naming *that* table: a partition named directly (`telemetry_2026_12`,
-- `telemetry_default`) had no policy, so the application role read every tenant's telemetry there
-- and could insert rows for any tenant. And nowhere was RLS FORCEd, so the tables' owner bypassed it.
--
-- FORCE and the owner. With FORCE, the owner's own sessions obey the policies too: a session
-- connected as the owner (migrations, an operator's psql) sees no tenant's rows unless it sets
-- `app.tenant_id`, like the application. (A superuser, or a role with BYPASSRLS, still bypasses
-- every policy: PostgreSQL offers no way to subject those to RLS; deploy with an owner that is
-- neither.) The cross-tenant work is done by the reviewed `stayopen_*` SECURITY DEFINER functions,
-- which run with the owner's rights on the application's behalf: lookups that return ids only, the
-- sweeps' "which tenants have work" questions, the telemetry roll-up, retention and partitioning.
-- They keep working through a second policy, `definer_functions`, granted to the owner role only
-- and true only while `current_user` (the function's owner) differs from `session_user` (the role
-- that logged in) — that is, only inside a SECURITY DEFINER function called by another role. The
-- application role can never satisfy it (it is not the owner and cannot become it), and neither can
-- an owner's own session. A data migration that must touch every tenant sets `app.tenant_id` for
-- each tenant in turn (`stayopen_tenant_ids()` lists them).

-- Enables and forces row-level security on `p_table` and gives it the two policies, unless it has
-- them already. Grants nothing: the table's privileges are its migration's decision.
CREATE FUNCTION stayopen_force_tenant_rls(p_table regclass) RETURNS void
    LANGUAGE plpgsql SET search_path = public, pg_temp
    AS $$
DECLARE
    owner_name name;
    key_column text;
BEGIN
    SELECT r.rolname INTO owner_name
    FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
    WHERE c.oid = p_table;
    -- `tenants` is keyed by its own id; every other tenant table by `tenant_id`.
    key_column := CASE WHEN p_table = 'tenants'::regclass THEN 'id' ELSE 'tenant_id' END;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = p_table AND polname = 'tenant_isolation') THEN
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s USING (%I = stayopen_current_tenant()) '
            'WITH CHECK (%I = stayopen_current_tenant())', p_table, key_column, key_column);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = p_table AND polname = 'definer_functions') THEN
        EXECUTE format(
            'CREATE POLICY definer_functions ON %s TO %I '
            'USING (current_user <> session_user) WITH CHECK (current_user <> session_user)',
            p_table, owner_name);
    END IF;
END
$$;

-- What every migration that creates a tenant table (one with a `tenant_id`) ends with: row-level
-- security enabled and forced, the `tenant_isolation` policy, and the application's data
-- privileges.
CREATE FUNCTION stayopen_protect_tenant_table(p_table regclass) RETURNS void
    LANGUAGE plpgsql SET search_path = public, pg_temp
    AS $$
BEGIN
    PERFORM stayopen_force_tenant_rls(p_table);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO stayopen_app', p_table);
END
$$;
REVOKE ALL ON FUNCTION stayopen_force_tenant_rls(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION stayopen_protect_tenant_table(regclass) FROM PUBLIC;

-- Every table that exists now: `tenants`, every table or partition with a `tenant_id` column. Their
-- privileges stay as their migrations made them (the audit log stays append-only).
DO $$
DECLARE
    t regclass;
BEGIN
    PERFORM stayopen_force_tenant_rls('tenants');
    FOR t IN
        SELECT c.oid::regclass
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
        ORDER BY c.relname
    LOOP
        PERFORM stayopen_force_tenant_rls(t);
    END LOOP;
END
$$;

-- New telemetry partitions are protected as they are created.
CREATE OR REPLACE FUNCTION stayopen_ensure_telemetry_partition(p_month date) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    first_day date := date_trunc('month', p_month)::date;
    name text := format('telemetry_%s', to_char(first_day, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Rows already in the default partition for this month would block the new partition; move
    -- them across.
    CREATE TEMP TABLE IF NOT EXISTS moving_telemetry (LIKE telemetry) ON COMMIT DROP;
    WITH moved AS (
        DELETE FROM telemetry_default
        WHERE sent_at >= first_day AND sent_at < (first_day + interval '1 month')
        RETURNING *
    )
    INSERT INTO moving_telemetry SELECT * FROM moved;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
        name, first_day, (first_day + interval '1 month')::date);
    PERFORM stayopen_protect_tenant_table(name::regclass);
    INSERT INTO telemetry SELECT * FROM moving_telemetry;
    DELETE FROM moving_telemetry;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION stayopen_ensure_telemetry_partition(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_ensure_telemetry_partition(date) TO stayopen_app;
