-- Device identity (issue 12): an appliance's identity is its key, not its serial and MAC.
--
-- Serials are printed on the box and shown to every dashboard role, MACs are visible on the LAN,
-- and an enrolment token may be shared by a thousand boxes; none of them proves which box is
-- asking. So enrolling hardware that is already enrolled needs an MSP admin's explicit approval
-- (24 h, single use), and an appliance renews its certificate by signing with the key of the
-- certificate it holds. Every certificate the device CA issues is kept, and a superseded or revoked
-- one goes on the revocation list until it expires.

ALTER TABLE appliances
    -- The current certificate and its public key (the uncompressed P-256 point), which a renewal
    -- proof must be signed with.
    ADD COLUMN cert_pem                    text,
    ADD COLUMN cert_public_key             bytea,
    -- signed_at of the last renewal proof accepted: a proof must be strictly newer (no replay).
    ADD COLUMN last_key_proof_at           timestamptz,
    -- Until then, one enrolment of this hardware with a token of its practice (or its registered
    -- serial) is accepted without proof of the current key. Set by an MSP admin, consumed by use.
    ADD COLUMN reenrollment_approved_until timestamptz;

-- Enrolment tokens can be revoked before they expire or run out.
ALTER TABLE enrollment_tokens ADD COLUMN revoked_at timestamptz;
CREATE INDEX enrollment_tokens_practice ON enrollment_tokens (tenant_id, practice_id, created_at DESC);

-- Every certificate issued to an appliance. Issuing one supersedes the one before.
CREATE TABLE device_certificates (
    serial_hex    text PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    appliance_id  uuid NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
    -- NULL only for certificates issued before this table existed (their PEM was not kept).
    cert_pem      text,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    not_after     timestamptz NOT NULL,
    superseded_at timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX device_certificates_appliance ON device_certificates (appliance_id, issued_at DESC);
-- The revocation list reads the withdrawn, unexpired certificates of every tenant.
CREATE INDEX device_certificates_withdrawn ON device_certificates (not_after)
    WHERE superseded_at IS NOT NULL OR revoked_at IS NOT NULL;

INSERT INTO device_certificates (serial_hex, tenant_id, appliance_id, issued_at, not_after, revoked_at)
    SELECT cert_serial, tenant_id, id, enrolled_at, cert_not_after, revoked_at
    FROM appliances WHERE cert_serial IS NOT NULL AND cert_not_after IS NOT NULL;

ALTER TABLE device_certificates ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON device_certificates
    USING (tenant_id = stayopen_current_tenant()) WITH CHECK (tenant_id = stayopen_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON device_certificates TO stayopen_app;

-- The device CA's revocation list: revoked and superseded certificates that have not expired yet
-- (serials and the time they were withdrawn), across tenants since there is one CA. Same signature
-- as before, so its grants stay.
CREATE OR REPLACE FUNCTION stayopen_revoked_certificates() RETURNS TABLE (cert_serial text, revoked_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT serial_hex, least(revoked_at, superseded_at) FROM device_certificates
          WHERE (revoked_at IS NOT NULL OR superseded_at IS NOT NULL) AND not_after > now()
          ORDER BY serial_hex $$;
