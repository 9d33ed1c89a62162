-- Evidence packages (issue 14): one signed zip per practice and period, built in the background and
-- kept six years. The row is the job: queued by a request (or the monthly schedule), claimed by a
-- worker with FOR UPDATE SKIP LOCKED, its progress updated while it builds, the zip stored in it.
CREATE TABLE evidence_packages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    practice_id      uuid NOT NULL,
    period_kind      text NOT NULL CHECK (period_kind IN ('month', 'quarter', 'year', 'custom')),
    period_from      date NOT NULL,
    period_to        date NOT NULL CHECK (period_to >= period_from),
    -- Built by the monthly schedule rather than on request: at most one per practice and period.
    scheduled        boolean NOT NULL DEFAULT false,
    state            text NOT NULL DEFAULT 'queued'
                         CHECK (state IN ('queued', 'building', 'ready', 'failed')),
    progress_pct     smallint NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100),
    status           text NOT NULL DEFAULT '',
    requested_by     text NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    -- A worker holds a building package until then; past it another worker may take it over.
    lease_until      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    finished_at      timestamptz,
    zip              bytea,
    size_bytes       bigint,
    sha256           text,
    key_fingerprint  text,
    -- When the practice's compliance officers were told a scheduled package is ready.
    announced_at     timestamptz,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices(tenant_id, id) ON DELETE CASCADE,
    CHECK ((state = 'ready') = (zip IS NOT NULL))
);
-- A zip is already compressed: store it out of line without trying to compress it again.
ALTER TABLE evidence_packages ALTER COLUMN zip SET STORAGE EXTERNAL;
CREATE UNIQUE INDEX evidence_packages_scheduled
    ON evidence_packages (practice_id, period_kind, period_from) WHERE scheduled;
CREATE INDEX evidence_packages_by_practice
    ON evidence_packages (tenant_id, practice_id, requested_at DESC);
CREATE INDEX evidence_packages_work
    ON evidence_packages (requested_at) WHERE state IN ('queued', 'building');

ALTER TABLE evidence_packages ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON evidence_packages
    USING (tenant_id = stayopen_current_tenant())
    WITH CHECK (tenant_id = stayopen_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON evidence_packages TO stayopen_app;

-- Tenants with a package to build at p_now (queued, or building past its lease): ids only.
CREATE FUNCTION stayopen_tenants_with_evidence_work(p_now timestamptz) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM evidence_packages
          WHERE state = 'queued' OR (state = 'building' AND lease_until < p_now) $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_evidence_work(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_evidence_work(timestamptz) TO stayopen_app;

-- Tenants with scheduled packages ready but not yet announced to the compliance officers.
CREATE FUNCTION stayopen_tenants_with_unannounced_evidence() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT DISTINCT tenant_id FROM evidence_packages
          WHERE scheduled AND state = 'ready' AND announced_at IS NULL $$;
REVOKE ALL ON FUNCTION stayopen_tenants_with_unannounced_evidence() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_tenants_with_unannounced_evidence() TO stayopen_app;

-- Retention (HIPAA 164.316(b)(2)(i): six years from creation): deletes every tenant's packages
-- requested before p_before; returns how many went.
CREATE FUNCTION stayopen_delete_expired_evidence(p_before timestamptz) RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ WITH gone AS (DELETE FROM evidence_packages WHERE requested_at < p_before RETURNING 1)
          SELECT count(*) FROM gone $$;
REVOKE ALL ON FUNCTION stayopen_delete_expired_evidence(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stayopen_delete_expired_evidence(timestamptz) TO stayopen_app;
