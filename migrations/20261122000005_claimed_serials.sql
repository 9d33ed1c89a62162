-- Zero-touch enrolment: an MSP registers the serial numbers of the appliances it ships to a
-- practice, with each box's factory key (from the vendor's manifest; only its SHA-256 is kept). An
-- appliance that presents a registered serial and its factory key enrols without anyone typing a
-- token on site. A serial belongs to at most one MSP.

CREATE TABLE claimed_serials (
    serial                text PRIMARY KEY CHECK (length(serial) BETWEEN 1 AND 128),
    tenant_id             uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id           uuid NOT NULL,
    site_id               uuid NOT NULL,
    factory_key_hash      bytea NOT NULL,
    created_by            text NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    enrolled_appliance_id uuid REFERENCES appliances(id) ON DELETE SET NULL,
    enrolled_at           timestamptz,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX claimed_serials_practice ON claimed_serials (tenant_id, practice_id);

ALTER TABLE claimed_serials ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON claimed_serials
    USING (tenant_id = stayopen_current_tenant()) WITH CHECK (tenant_id = stayopen_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON claimed_serials TO stayopen_app;

-- Which MSP claimed a serial: for enrolment (before any tenant is known) and to refuse a second
-- MSP's claim with a clear conflict.
CREATE FUNCTION stayopen_claimed_serial_tenant(p_serial text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT tenant_id FROM claimed_serials WHERE serial = p_serial $$;
REVOKE ALL ON FUNCTION stayopen_claimed_serial_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_claimed_serial_tenant(text) TO stayopen_app;

-- The device CA's revocation list spans every tenant (one CA): certificate serials and revocation
-- times only, for the CRL an external broker checks.
CREATE FUNCTION stayopen_revoked_certificates() RETURNS TABLE (cert_serial text, revoked_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT cert_serial, revoked_at FROM appliances
          WHERE revoked_at IS NOT NULL AND cert_serial IS NOT NULL AND cert_not_after > now() $$;
REVOKE ALL ON FUNCTION stayopen_revoked_certificates() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_revoked_certificates() TO stayopen_app;
