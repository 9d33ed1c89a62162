-- Ingest at 20,000 telemetry messages a second (issue 18): the foreign key from telemetry to
-- appliances checked every inserted row against its appliance (a lookup and a KEY SHARE lock per
-- row, about a tenth of PostgreSQL's time per message at that rate). Ingest already checks each
-- appliance, in the same transaction, under the row lock it takes to update the appliance's
-- state, and it is the only writer of telemetry. What the key also did, deleting an appliance's
-- telemetry with it (and, through appliances, a tenant's), is kept by a statement-level trigger:
-- one DELETE per statement that deletes appliances, as the owner, whatever the deleting role's
-- tenant, as the cascade did.
ALTER TABLE telemetry DROP CONSTRAINT telemetry_appliance_id_fkey1;

CREATE FUNCTION stayopen_delete_appliances_telemetry() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    DELETE FROM telemetry t USING deleted_appliances d WHERE t.appliance_id = d.id;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION stayopen_delete_appliances_telemetry() FROM PUBLIC;

CREATE TRIGGER appliances_delete_their_telemetry
    AFTER DELETE ON appliances
    REFERENCING OLD TABLE AS deleted_appliances
    FOR EACH STATEMENT EXECUTE FUNCTION stayopen_delete_appliances_telemetry();
