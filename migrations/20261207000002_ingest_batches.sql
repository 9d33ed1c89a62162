-- Batched ingest (issue 18): the tenants of every appliance a batch of device messages names, in
-- one call, so a batch opens one tenant transaction per tenant rather than one per message. Ids
-- only, as `stayopen_appliance_tenant` returns; an unknown appliance has no row.
CREATE FUNCTION stayopen_appliance_tenants(p_appliances uuid[])
    RETURNS TABLE (appliance_id uuid, tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT id, tenant_id FROM appliances WHERE id = ANY(p_appliances) $$;

REVOKE ALL ON FUNCTION stayopen_appliance_tenants(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_appliance_tenants(uuid[]) TO stayopen_app;
