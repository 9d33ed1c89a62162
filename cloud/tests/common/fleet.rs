//! A fleet at size, inserted with set-based SQL as the owner: for benchmarks of the dashboard and
//! of ingest at fleet scale.

use sqlx::PgPool;

/// Inserts `practices` practices of `tenant`, one site each, `appliances` appliances spread over
/// them with telemetry-shaped state (every 37th offline, silent for an hour; every 23rd on its LTE
/// backup) and an open failover alert for each one on backup. Serials are `SO-000001`, ….
pub async fn seed(owner_pool: &PgPool, tenant: uuid::Uuid, practices: usize, appliances: usize) {
    let per_practice = appliances.div_ceil(practices);
    let statements = [
        "INSERT INTO practices (id, tenant_id, name)
         SELECT gen_random_uuid(), $1, 'Practice ' || lpad(n::text, 5, '0')
         FROM generate_series(1, $2) n",
        "INSERT INTO sites (id, tenant_id, practice_id, name)
         SELECT gen_random_uuid(), $1, p.id, 'Main office' FROM practices p
         WHERE p.tenant_id = $1 AND p.name LIKE 'Practice %'",
        // Every 37th appliance is offline (silent for an hour), every 23rd on its LTE backup.
        "INSERT INTO appliances (id, tenant_id, practice_id, site_id, serial, mac, model, agent_version,
                                 mqtt_password_hash, online, last_seen, active_uplink, on_backup,
                                 last_telemetry, last_telemetry_at)
         SELECT gen_random_uuid(), $1, s.practice_id, s.id,
                'SO-' || lpad((row_number() OVER ())::text, 6, '0'),
                '02:fe:' || lpad(to_hex((row_number() OVER ())::int), 8, '0'), 'bench', '0.1.0',
                '\\x00', true,
                CASE WHEN (row_number() OVER ()) % 37 = 0 THEN now() - interval '1 hour' ELSE now() END,
                CASE WHEN (row_number() OVER ()) % 23 = 0 THEN 'lte' ELSE 'fiber' END,
                (row_number() OVER ()) % 23 = 0,
                '{\"active_uplink\": \"fiber\", \"uplinks\": []}', now()
         FROM sites s CROSS JOIN generate_series(1, $2) k
         WHERE s.tenant_id = $1 AND s.name = 'Main office'",
        "INSERT INTO alerts (id, tenant_id, practice_id, appliance_id, kind, severity, state, subject,
                             summary, first_seen, last_seen)
         SELECT gen_random_uuid(), tenant_id, practice_id, id, 'failover', 'critical', 'open', '',
                'Failover fiber to lte', now(), now()
         FROM appliances WHERE tenant_id = $1 AND on_backup",
    ];
    // $2: the practice count for the practices, the appliances per practice for the appliances.
    let second = [Some(practices), None, Some(per_practice), None];
    for (sql, count) in statements.into_iter().zip(second) {
        let mut query = sqlx::query(sql).bind(tenant);
        if let Some(count) = count {
            query = query.bind(i64::try_from(count).unwrap_or(i64::MAX));
        }
        query
            .execute(owner_pool)
            .await
            .unwrap_or_else(|e| panic!("seeding failed: {e}\n{sql}"));
    }
}

/// [`seed`]s `appliances` in `practices` of `tenant` and returns the seeded appliances' ids in
/// serial order.
pub async fn seed_and_list(
    owner_pool: &PgPool,
    tenant: uuid::Uuid,
    practices: usize,
    appliances: usize,
) -> Vec<stayopen_shared::ApplianceId> {
    seed(owner_pool, tenant, practices, appliances).await;
    sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT id FROM appliances WHERE tenant_id = $1 AND model = 'bench' ORDER BY serial",
    )
    .bind(tenant)
    .fetch_all(owner_pool)
    .await
    .expect("the seeded fleet")
    .into_iter()
    .map(stayopen_shared::ApplianceId)
    .collect()
}
