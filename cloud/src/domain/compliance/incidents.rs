//! Incidents: real outages of an appliance's primary line, built from its events and telemetry at
//! ingest, with the root cause and comments the MSP writes.
//!
//! Design: a `failover` that is not a drill's and does not move traffic back to the primary opens
//! the appliance's incident (one open at a time); later failovers add the uplinks involved; a
//! failover to nothing means traffic stopped. The `failback` closes it, as does telemetry showing
//! the primary carrying traffic again (an appliance that recovers from "no uplink usable"
//! straight onto the primary reports no failback). Time on backup accumulates while a backup
//! carries traffic. Each telemetry sample during the incident adds the critical applications'
//! checks through the uplink carrying traffic.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use stayopen_shared::alerts::{AlertKind, Severity};
use stayopen_shared::compliance::{Incident, IncidentAlert, IncidentApp, IncidentComment};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::Telemetry;
use stayopen_shared::{ApplianceId, PracticeId, TenantId};
use uuid::Uuid;

use super::ComplianceError;
use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;

/// What the checks of one application through the backup found during an incident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppTally {
    pub checks: u32,
    pub unreachable: u32,
    /// Why it was last found unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Adds the checks in one telemetry sample made through `carrying` (the uplink carrying traffic).
pub fn tally(apps: &mut BTreeMap<String, AppTally>, telemetry: &Telemetry, carrying: &str) {
    for check in telemetry.apps.iter().filter(|c| c.uplink == carrying) {
        let entry = apps.entry(check.app.clone()).or_default();
        entry.checks += 1;
        if !check.reachable {
            entry.unreachable += 1;
            entry.reason = Some(
                check
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("unreachable through {carrying}")),
            );
        }
    }
}

/// The applications of an incident: every register entry and every application checked, each
/// with whether it stayed reachable (`None`: never checked during the incident).
pub fn incident_apps(
    register: &[String],
    tallies: &BTreeMap<String, AppTally>,
) -> Vec<IncidentApp> {
    let mut names: Vec<&String> = register.iter().collect();
    names.extend(tallies.keys().filter(|k| !register.contains(k)));
    names
        .into_iter()
        .map(|name| match tallies.get(name) {
            Some(t) if t.checks > 0 => IncidentApp {
                app: name.clone(),
                stayed_reachable: Some(t.unreachable == 0),
                reason: t.reason.clone(),
            },
            _ => IncidentApp {
                app: name.clone(),
                stayed_reachable: None,
                reason: None,
            },
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    appliance_id: Uuid,
    serial: String,
    practice_id: Uuid,
    practice_name: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    failed_uplinks: Vec<String>,
    backup_uplinks: Vec<String>,
    on_backup_secs: i64,
    traffic_kept_flowing: bool,
    apps: sqlx::types::Json<BTreeMap<String, AppTally>>,
    root_cause: String,
}

const SELECT: &str = "SELECT i.id, i.appliance_id, a.serial, i.practice_id, p.name AS practice_name,
        i.started_at, i.ended_at, i.failed_uplinks, i.backup_uplinks,
        i.on_backup_secs + CASE WHEN i.backup_since IS NULL THEN 0 ELSE greatest(0,
            extract(epoch FROM coalesce(i.ended_at, now()) - i.backup_since))::bigint END
            AS on_backup_secs,
        i.traffic_kept_flowing, i.apps, i.root_cause
    FROM incidents i JOIN appliances a ON a.id = i.appliance_id JOIN practices p ON p.id = i.practice_id";

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: Uuid,
    kind: AlertKind,
    severity: Severity,
    summary: String,
    first_seen: DateTime<Utc>,
}

/// Completes rows with the practice's register, the alerts raised during each and the comments.
async fn complete(tx: &mut Tx, rows: Vec<Row>) -> Result<Vec<Incident>, sqlx::Error> {
    let mut registers: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    let mut incidents = Vec::with_capacity(rows.len());
    for row in rows {
        if let std::collections::btree_map::Entry::Vacant(entry) = registers.entry(row.practice_id)
        {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM critical_apps WHERE practice_id = $1 ORDER BY tier, lower(name)",
            )
            .bind(row.practice_id)
            .fetch_all(&mut **tx)
            .await?;
            entry.insert(names);
        }
        let alerts: Vec<AlertRow> = sqlx::query_as(
            "SELECT id, kind, severity, summary, first_seen FROM alerts
             WHERE appliance_id = $1 AND first_seen >= $2 - interval '1 minute'
               AND first_seen <= coalesce($3, now())
             ORDER BY first_seen, id",
        )
        .bind(row.appliance_id)
        .bind(row.started_at)
        .bind(row.ended_at)
        .fetch_all(&mut **tx)
        .await?;
        let comments: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT author, at, body FROM incident_comments WHERE incident_id = $1 ORDER BY at, id",
        )
        .bind(row.id)
        .fetch_all(&mut **tx)
        .await?;
        let register = registers.get(&row.practice_id).cloned().unwrap_or_default();
        incidents.push(Incident {
            id: row.id,
            appliance_id: ApplianceId(row.appliance_id),
            appliance_serial: row.serial,
            practice_id: PracticeId(row.practice_id),
            practice_name: row.practice_name,
            started_at: row.started_at,
            ended_at: row.ended_at,
            failed_uplinks: row.failed_uplinks,
            backup_uplinks: row.backup_uplinks,
            on_backup_secs: u64::try_from(row.on_backup_secs).unwrap_or(0),
            traffic_kept_flowing: row.traffic_kept_flowing,
            apps: incident_apps(&register, &row.apps.0),
            alerts: alerts
                .into_iter()
                .map(|a| IncidentAlert {
                    id: a.id,
                    kind: a.kind,
                    severity: a.severity,
                    title: a.summary,
                    raised_at: a.first_seen,
                })
                .collect(),
            root_cause: row.root_cause,
            comments: comments
                .into_iter()
                .map(|(author, at, body)| IncidentComment { author, at, body })
                .collect(),
        });
    }
    Ok(incidents)
}

/// The practice's incidents overlapping `[from, to)`, oldest first.
pub async fn in_period(
    tx: &mut Tx,
    practice: PracticeId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Incident>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE i.practice_id = $1 AND i.started_at < $3
           AND (i.ended_at IS NULL OR i.ended_at >= $2)
         ORDER BY i.started_at, i.id"
    )))
    .bind(practice.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(&mut **tx)
    .await?;
    complete(tx, rows).await
}

/// The incidents the caller may see, newest first, after the sort key (started_at, id) `after`.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    practice: Option<PracticeId>,
    after: Option<(DateTime<Utc>, Uuid)>,
    fetch: i64,
) -> Result<Vec<Incident>, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    if let Some(practice) = practice {
        visible_practice(&mut tx, auth, practice).await?;
    }
    let (after_started, after_id) = after.unzip();
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE ($1::uuid[] IS NULL OR i.practice_id = ANY($1))
           AND ($2::uuid IS NULL OR i.practice_id = $2)
           AND ($3::timestamptz IS NULL OR (i.started_at, i.id) < ($3, $4))
         ORDER BY i.started_at DESC, i.id DESC LIMIT $5"
    )))
    .bind(auth.practice_filter())
    .bind(practice.map(|p| p.0))
    .bind(after_started)
    .bind(after_id)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    Ok(complete(&mut tx, rows).await?)
}

async fn load(tx: &mut Tx, auth: &AuthUser, id: Uuid) -> Result<Incident, ComplianceError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE i.id = $1 AND ($2::uuid[] IS NULL OR i.practice_id = ANY($2))"
    )))
    .bind(id)
    .bind(auth.practice_filter())
    .fetch_all(&mut **tx)
    .await?;
    complete(tx, rows)
        .await?
        .pop()
        .ok_or(ComplianceError::NotFound("no such incident"))
}

/// One incident the caller may see.
pub async fn show(pool: &PgPool, auth: &AuthUser, id: Uuid) -> Result<Incident, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    load(&mut tx, auth, id).await
}

/// Sets an incident's root cause (MSP staff, audited).
pub async fn set_root_cause(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
    root_cause: &str,
) -> Result<Incident, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    let before = load(&mut tx, auth, id).await?;
    auth.require(Permission::Operate)?;
    let root_cause = root_cause.trim();
    if root_cause.chars().count() > 4000 {
        return Err(ComplianceError::Invalid(
            "root_cause must be at most 4000 characters".into(),
        ));
    }
    sqlx::query("UPDATE incidents SET root_cause = $2 WHERE id = $1")
        .bind(id)
        .bind(root_cause)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "incident.root_cause",
            target_type: "incident",
            target_id: id.to_string(),
            before: Some(serde_json::json!({
                "practice_id": before.practice_id, "root_cause": before.root_cause,
            })),
            after: Some(serde_json::json!({
                "practice_id": before.practice_id, "root_cause": root_cause,
            })),
        },
    )
    .await?;
    let after = load(&mut tx, auth, id).await?;
    tx.commit().await?;
    Ok(after)
}

/// Adds a comment to an incident (MSP staff, audited).
pub async fn comment(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
    body: &str,
) -> Result<Incident, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    let incident = load(&mut tx, auth, id).await?;
    auth.require(Permission::Operate)?;
    let body = body.trim();
    if body.is_empty() || body.chars().count() > 4000 {
        return Err(ComplianceError::Invalid(
            "body must be 1 to 4000 characters".into(),
        ));
    }
    let author: Option<String> = match auth.user_id() {
        Ok(user) => {
            sqlx::query_scalar(
                "SELECT coalesce(nullif(display_name, ''), email) FROM users WHERE id = $1",
            )
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?
        }
        Err(_) => None,
    };
    let author = author.unwrap_or_else(|| auth.actor().label());
    let comment_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO incident_comments (id, tenant_id, incident_id, author, body)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(comment_id)
    .bind(auth.tenant_id.as_uuid())
    .bind(id)
    .bind(&author)
    .bind(body)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "incident.comment",
            target_type: "incident",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({
                "practice_id": incident.practice_id, "comment_id": comment_id, "body": body,
            })),
        },
    )
    .await?;
    let after = load(&mut tx, auth, id).await?;
    tx.commit().await?;
    Ok(after)
}

/// The appliance's preferred uplink, from its latest telemetry.
async fn primary_uplink(
    tx: &mut Tx,
    appliance: ApplianceId,
) -> Result<Option<String>, sqlx::Error> {
    let last: Option<sqlx::types::Json<Telemetry>> =
        sqlx::query_scalar("SELECT last_telemetry FROM appliances WHERE id = $1")
            .bind(appliance.as_uuid())
            .fetch_one(&mut **tx)
            .await?;
    Ok(last.and_then(|t| t.0.primary().map(|u| u.name.clone())))
}

/// Ingest's hook for one newly stored event of `appliance`.
pub async fn on_event(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: ApplianceId,
    event: &ApplianceEvent,
    sent_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    match event.kind {
        EventKind::Failover => {
            if event.reason == "drill" || super::drills::running(tx, appliance).await? {
                return Ok(());
            }
            let open: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM incidents WHERE appliance_id = $1 AND ended_at IS NULL",
            )
            .bind(appliance.as_uuid())
            .fetch_optional(&mut **tx)
            .await?;
            let primary = primary_uplink(tx, appliance).await?;
            let to_primary = event.to.is_some() && event.to == primary;
            match open {
                Some(id) if to_primary => close(tx, id, sent_at).await?,
                None if to_primary => {}
                Some(id) => {
                    sqlx::query(
                        "UPDATE incidents SET
                            failed_uplinks = CASE WHEN $2::text IS NULL OR $2 = ANY(failed_uplinks)
                                THEN failed_uplinks ELSE failed_uplinks || $2 END,
                            backup_uplinks = CASE WHEN $3::text IS NULL OR $3 = ANY(backup_uplinks)
                                THEN backup_uplinks ELSE backup_uplinks || $3 END,
                            on_backup_secs = on_backup_secs + CASE
                                WHEN $3 IS NULL AND backup_since IS NOT NULL
                                THEN greatest(0, extract(epoch FROM $4 - backup_since))::bigint
                                ELSE 0 END,
                            backup_since = CASE WHEN $3 IS NULL THEN NULL
                                ELSE coalesce(backup_since, $4) END,
                            traffic_kept_flowing = traffic_kept_flowing AND $3 IS NOT NULL
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(event.from.as_deref())
                    .bind(event.to.as_deref())
                    .bind(sent_at)
                    .execute(&mut **tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO incidents (id, tenant_id, practice_id, appliance_id, started_at,
                             failed_uplinks, backup_uplinks, backup_since, traffic_kept_flowing)
                         SELECT $1, $2, practice_id, id, $3, $4, $5, $6, $7
                         FROM appliances WHERE id = $8",
                    )
                    .bind(Uuid::new_v4())
                    .bind(tenant.as_uuid())
                    .bind(sent_at)
                    .bind(event.from.iter().cloned().collect::<Vec<_>>())
                    .bind(event.to.iter().cloned().collect::<Vec<_>>())
                    .bind(event.to.as_ref().map(|_| sent_at))
                    .bind(event.to.is_some())
                    .bind(appliance.as_uuid())
                    .execute(&mut **tx)
                    .await?;
                    apply_stored_samples_since(tx, appliance, sent_at).await?;
                }
            }
        }
        EventKind::Failback => {
            if event.reason == "drill over" {
                return Ok(());
            }
            let open: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM incidents WHERE appliance_id = $1 AND ended_at IS NULL",
            )
            .bind(appliance.as_uuid())
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(id) = open {
                close(tx, id, sent_at).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

async fn close(tx: &mut Tx, id: Uuid, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE incidents SET ended_at = greatest($2, started_at),
            on_backup_secs = on_backup_secs + CASE WHEN backup_since IS NULL THEN 0
                ELSE greatest(0, extract(epoch FROM $2 - backup_since))::bigint END,
            backup_since = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An incident as telemetry updates it: id, start, end (`None` while open) and the applications'
/// tallies.
type SampledIncident = (
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    sqlx::types::Json<BTreeMap<String, AppTally>>,
);

/// Ingest's hook for newly stored telemetry samples (any of this tenant's appliances, each
/// appliance's in the order they were stored): one statement finds which appliances have an
/// incident the samples may belong to (an open one, or one that ended after the oldest sample),
/// and only their samples are applied ([`on_telemetry_sample`]). Most of a fleet has none, so a
/// batch of thousands costs one query.
pub async fn on_telemetry(
    tx: &mut Tx,
    samples: &[(ApplianceId, &Telemetry, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    let Some(oldest) = samples.iter().map(|(_, _, sent_at)| *sent_at).min() else {
        return Ok(());
    };
    let mut appliances: Vec<Uuid> = samples.iter().map(|(a, _, _)| a.0).collect();
    appliances.sort_unstable();
    appliances.dedup();
    let concerned: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT appliance_id FROM incidents
         WHERE appliance_id = ANY($1) AND (ended_at IS NULL OR ended_at >= $2)",
    )
    .bind(&appliances)
    .bind(oldest)
    .fetch_all(&mut **tx)
    .await?;
    if concerned.is_empty() {
        return Ok(());
    }
    for (appliance, telemetry, sent_at) in samples {
        if concerned.contains(&appliance.0) {
            on_telemetry_sample(tx, *appliance, telemetry, *sent_at).await?;
        }
    }
    Ok(())
}

/// A newly opened incident takes in the samples already stored from after its start. Telemetry
/// and events reach ingest by separate paths (events are served first, and an appliance replays
/// its outbox after a reconnection), so a sample taken on the backup can be stored before the
/// failover event that opens its incident.
async fn apply_stored_samples_since(
    tx: &mut Tx,
    appliance: ApplianceId,
    started_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let stored: Vec<(sqlx::types::Json<Telemetry>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT body, sent_at FROM telemetry WHERE appliance_id = $1 AND sent_at > $2
         ORDER BY sent_at",
    )
    .bind(appliance.as_uuid())
    .bind(started_at)
    .fetch_all(&mut **tx)
    .await?;
    for (telemetry, sent_at) in stored {
        on_telemetry_sample(tx, appliance, &telemetry.0, sent_at).await?;
    }
    Ok(())
}

/// One telemetry sample of `appliance`, applied to the incident whose time it falls in, whatever
/// order samples and events arrived in: the applications' checks through the uplink carrying
/// traffic are added to its tallies, and the backup it names to its uplinks. While the incident is
/// open, a backup taking over after every uplink was down is noted, and a sample on the primary
/// closes it.
async fn on_telemetry_sample(
    tx: &mut Tx,
    appliance: ApplianceId,
    telemetry: &Telemetry,
    sent_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let incident: Option<SampledIncident> = sqlx::query_as(
        "SELECT id, started_at, ended_at, apps FROM incidents
         WHERE appliance_id = $1 AND started_at < $2 AND (ended_at IS NULL OR ended_at >= $2)
         ORDER BY started_at DESC LIMIT 1
         FOR UPDATE",
    )
    .bind(appliance.as_uuid())
    .bind(sent_at)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((id, _started_at, ended_at, apps)) = incident else {
        return Ok(());
    };
    let Some(active) = telemetry.active_uplink.as_deref() else {
        return Ok(());
    };
    if !telemetry.on_backup() {
        return match ended_at {
            None => close(tx, id, sent_at).await,
            Some(_) => Ok(()),
        };
    }
    let mut apps = apps.0;
    tally(&mut apps, telemetry, active);
    // `backup_since` is the open incident's clock of time on backup; a late sample of an ended
    // incident adds what it saw, not time.
    sqlx::query(
        "UPDATE incidents SET apps = $2,
            backup_uplinks = CASE WHEN $3 = ANY(backup_uplinks) THEN backup_uplinks
                ELSE backup_uplinks || $3 END,
            backup_since = CASE WHEN ended_at IS NULL THEN coalesce(backup_since, $4)
                ELSE backup_since END
         WHERE id = $1",
    )
    .bind(id)
    .bind(sqlx::types::Json(&apps))
    .bind(active)
    .bind(sent_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayopen_shared::compliance::AppReachability;

    fn check(app: &str, uplink: &str, reachable: bool) -> AppReachability {
        AppReachability {
            app: app.into(),
            uplink: uplink.into(),
            reachable,
            latency_ms: reachable.then_some(30.0),
            age_secs: 5,
            reason: (!reachable).then(|| format!("{app}: timed out")),
        }
    }

    fn sample(apps: Vec<AppReachability>) -> Telemetry {
        Telemetry {
            active_uplink: Some("lte".into()),
            uplinks: vec![],
            policy_version: None,
            samples: None,
            outbox: None,
            apps,
            tunnel: None,
        }
    }

    #[test]
    fn an_application_stays_reachable_only_if_every_check_through_the_backup_answered() {
        let mut tallies = BTreeMap::new();
        tally(
            &mut tallies,
            &sample(vec![
                check("EHR", "lte", true),
                check("Lab", "lte", true),
                check("Lab", "fiber", false),
            ]),
            "lte",
        );
        tally(
            &mut tallies,
            &sample(vec![check("EHR", "lte", false)]),
            "lte",
        );
        let apps = incident_apps(&["EHR".into(), "Lab".into(), "Portal".into()], &tallies);
        assert_eq!(apps[0].stayed_reachable, Some(false));
        assert_eq!(apps[0].reason.as_deref(), Some("EHR: timed out"));
        // The failed check went through the failed primary, not the backup carrying traffic.
        assert_eq!(apps[1].stayed_reachable, Some(true));
        assert_eq!(apps[2].stayed_reachable, None);
    }
}
