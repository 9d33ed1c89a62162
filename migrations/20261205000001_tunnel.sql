-- The relay registry (issue 16): each appliance's WireGuard public key, its inner address and the
-- StayOpen relay it tunnels to; the relays themselves, which poll their peer list with a token.
--
-- Relays are the operator's infrastructure, not a tenant's: one relay serves the appliances of
-- every MSP, so `relays` has no tenant_id and no row-level security. What crosses tenants about
-- the appliances (a relay's peer list, how many appliances each relay serves, whether a key is
-- already someone else's) goes through the SECURITY DEFINER functions below, which return only
-- what the caller needs.

CREATE TABLE relays (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    -- Where appliances send their tunnel's packets: host:port.
    endpoint     text NOT NULL CHECK (length(endpoint) BETWEEN 3 AND 260),
    -- WireGuard public key, base64 of 32 bytes.
    public_key   text NOT NULL CHECK (length(public_key) = 44),
    -- SHA-256 of the relay's bearer token (sor_…); the token itself is shown once, by the CLI.
    token_sha256 bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
GRANT SELECT, INSERT, UPDATE ON relays TO stayopen_app;

-- Inner addresses come from 100.96.0.0/12 (in the shared address space of RFC 6598, which no
-- practice LAN or public service uses), one per appliance, in sequence and never reused: an
-- address once given to an appliance never reaches another, even after a revocation.
-- 100.96.0.1 is left for the relays' own side of the tunnel.
CREATE SEQUENCE appliance_tunnel_address_seq AS bigint MINVALUE 2 MAXVALUE 1048574 START 2 NO CYCLE;
GRANT USAGE, SELECT ON SEQUENCE appliance_tunnel_address_seq TO stayopen_app;

ALTER TABLE appliances
    ADD COLUMN wireguard_public_key text UNIQUE CHECK (length(wireguard_public_key) = 44),
    ADD COLUMN tunnel_address inet UNIQUE CHECK (tunnel_address << inet '100.96.0.0/12'
                                                 AND masklen(tunnel_address) = 32),
    ADD COLUMN relay_id uuid REFERENCES relays(id);
CREATE INDEX appliances_relay ON appliances (relay_id) WHERE relay_id IS NOT NULL;

-- The next inner address (for an appliance registering its first key).
CREATE FUNCTION stayopen_next_tunnel_address() RETURNS inet
    LANGUAGE sql VOLATILE
    AS $$ SELECT inet '100.96.0.0' + nextval('appliance_tunnel_address_seq') $$;
GRANT EXECUTE ON FUNCTION stayopen_next_tunnel_address() TO stayopen_app;

-- Whether `p_key` is the WireGuard key of an appliance other than `p_appliance`, in any tenant.
-- Answers yes or no only: the caller learns nothing of whose it is.
CREATE FUNCTION stayopen_wireguard_key_taken(p_key text, p_appliance uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM appliances
                         WHERE wireguard_public_key = p_key AND id <> p_appliance) $$;

-- The non-revoked relay that serves the fewest non-revoked appliances (of every tenant), oldest
-- first among equals; NULL when there is none. `p_except` is left out (a relay being revoked).
CREATE FUNCTION stayopen_least_loaded_relay(p_except uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT r.id FROM relays r
    LEFT JOIN appliances a ON a.relay_id = r.id AND a.revoked_at IS NULL
    WHERE r.revoked_at IS NULL AND r.id IS DISTINCT FROM p_except
    GROUP BY r.id, r.created_at
    ORDER BY count(a.id), r.created_at, r.id
    LIMIT 1
$$;

-- The peers a relay serves: non-revoked appliances of every tenant assigned to it that have a key.
CREATE FUNCTION stayopen_relay_peers(p_relay uuid)
    RETURNS TABLE (appliance_id uuid, public_key text, inner_address inet)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT id, wireguard_public_key, tunnel_address FROM appliances
    WHERE relay_id = p_relay AND revoked_at IS NULL
      AND wireguard_public_key IS NOT NULL AND tunnel_address IS NOT NULL
    ORDER BY tunnel_address
$$;

-- How many non-revoked appliances each relay serves, for `admin relay-list`.
CREATE FUNCTION stayopen_relay_loads() RETURNS TABLE (relay_id uuid, appliances bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT relay_id, count(*) FROM appliances
    WHERE relay_id IS NOT NULL AND revoked_at IS NULL GROUP BY relay_id
$$;

-- The tenants with appliances that have a key but no relay, or whose relay is `p_relay`: where
-- creating or revoking a relay changes assignments.
CREATE FUNCTION stayopen_tenants_to_reassign(p_relay uuid) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT DISTINCT tenant_id FROM appliances
    WHERE wireguard_public_key IS NOT NULL
      AND (relay_id IS NULL OR relay_id = p_relay)
    ORDER BY tenant_id
$$;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['stayopen_wireguard_key_taken(text, uuid)',
                             'stayopen_least_loaded_relay(uuid)',
                             'stayopen_relay_peers(uuid)',
                             'stayopen_relay_loads()',
                             'stayopen_tenants_to_reassign(uuid)']
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO stayopen_app', f);
    END LOOP;
END
$$;
