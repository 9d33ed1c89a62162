//! The monthly package: on the first of each month (or the next two days, if the cloud was down
//! on the first) last month's package is queued for every practice that existed during that month, once — a unique key on (practice, period) of scheduled packages makes the sweep
//! idempotent across runs and cloud instances. When such a package is ready, the practice's
//! compliance officers are e-mailed a link to it, once.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sqlx::PgPool;
use stayopen_shared::compliance::PeriodKind;
use stayopen_shared::{PracticeId, TenantId};
use uuid::Uuid;

use super::{jobs, period_label, retention};
use crate::infra::clock::Clock;
use crate::infra::db::{self, lookup};
use crate::infra::email::{Mailer, Rendered};

/// Last month's first and last days, when `now` is in the first three days of a month.
pub fn due_period(now: DateTime<Utc>) -> Option<(NaiveDate, NaiveDate)> {
    let today = now.date_naive();
    if today.day() > 3 {
        return None;
    }
    let this_month = today.with_day(1)?;
    let last_month = this_month.checked_sub_months(Months::new(1))?;
    Some((last_month, this_month.pred_opt()?))
}

/// Queues last month's package for every practice when one is due at `now`; how many were queued.
pub async fn sweep(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let Some((from, to)) = due_period(now) else {
        return Ok(0);
    };
    let mut queued = 0;
    for tenant in lookup::tenant_ids(pool).await? {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let practices: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM practices WHERE created_at < $1 ORDER BY id")
                .bind(
                    from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
                        + chrono::Months::new(1),
                )
                .fetch_all(&mut *tx)
                .await?;
        for practice in practices {
            if jobs::queue_scheduled(
                &mut tx,
                tenant,
                PracticeId(practice),
                PeriodKind::Month,
                (from, to),
                now,
            )
            .await?
            {
                queued += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(queued)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The announcement of a ready package.
pub fn render(
    practice: &str,
    period: &str,
    id: Uuid,
    sha256: &str,
    dashboard_url: Option<&str>,
) -> Rendered {
    let link = match dashboard_url {
        Some(base) => format!("{}/reports?package={id}", base.trim_end_matches('/')),
        None => format!("/api/v1/evidence/packages/{id}/download"),
    };
    let subject = format!("Evidence package ready: {practice}, {period}");
    let text = format!(
        "The signed evidence package of {practice} for {period} is ready.\n\n\
         Download it: {link}\n\
         SHA-256 of the zip: {sha256}\n\n\
         Check it offline with: stayopen-cloud evidence verify FILE.zip --public-key evidence-public-key.pem\n\
         Every download is recorded in the audit log.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <p>The signed evidence package of <b>{p}</b> for <b>{period}</b> is ready.</p>\
         <p><a href=\"{l}\">Download the package</a></p>\
         <p style=\"color:#555\">SHA-256 of the zip: <code>{sha256}</code><br>\
         Check it offline with <code>stayopen-cloud evidence verify FILE.zip --public-key evidence-public-key.pem</code>.\
         Every download is recorded in the audit log.</p></body></html>",
        p = escape(practice),
        l = escape(&link),
        period = escape(period),
        sha256 = escape(sha256),
    );
    Rendered {
        subject,
        text,
        html,
    }
}

/// A ready, unannounced package: id, practice, practice name, period kind, from, to, SHA-256.
type ReadyRow = (
    Uuid,
    Uuid,
    String,
    PeriodKind,
    NaiveDate,
    NaiveDate,
    Option<String>,
);

/// E-mails the compliance officers of every practice whose scheduled package is ready and not yet
/// announced; how many packages were announced. A package whose practice has no officer is marked
/// announced without mail; a failed send is tried again next time.
pub async fn announce(
    pool: &PgPool,
    mailer: &Mailer,
    dashboard_url: Option<&str>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT stayopen_tenants_with_unannounced_evidence()")
            .fetch_all(pool)
            .await?;
    let mut announced = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let ready: Vec<ReadyRow> = sqlx::query_as(
            "SELECT e.id, e.practice_id, p.name, e.period_kind, e.period_from, e.period_to,
                        e.sha256
                 FROM evidence_packages e JOIN practices p ON p.id = e.practice_id
                 WHERE e.scheduled AND e.state = 'ready' AND e.announced_at IS NULL
                 ORDER BY e.requested_at FOR UPDATE OF e SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, practice, name, kind, from, to, sha256) in ready {
            let officers: Vec<String> = sqlx::query_scalar(
                "SELECT u.email FROM users u JOIN user_practices up ON up.user_id = u.id
                 WHERE up.practice_id = $1 AND u.role = 'compliance_officer'
                   AND u.disabled_at IS NULL ORDER BY u.email",
            )
            .bind(practice)
            .fetch_all(&mut *tx)
            .await?;
            if !officers.is_empty() {
                let mail = render(
                    &name,
                    &period_label(kind, from, to),
                    id,
                    sha256.as_deref().unwrap_or(""),
                    dashboard_url,
                );
                if let Err(e) = mailer.send(&officers, &mail, None, id).await {
                    tracing::warn!(%id, error = %e, "announcing an evidence package failed; trying again later");
                    continue;
                }
            }
            sqlx::query("UPDATE evidence_packages SET announced_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            announced += 1;
        }
        tx.commit().await?;
    }
    Ok(announced)
}

/// Hourly: the monthly sweep, the announcements (with a mail server configured) and retention.
pub async fn schedule_loop(
    pool: PgPool,
    clock: Clock,
    mailer: Option<Mailer>,
    dashboard_url: Option<String>,
) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let now = clock.now();
        match sweep(&pool, now).await {
            Ok(0) => {}
            Ok(queued) => tracing::info!(queued, "monthly evidence packages queued"),
            Err(e) => tracing::error!(error = %e, "queuing the monthly evidence packages failed"),
        }
        if let Some(mailer) = &mailer
            && let Err(e) = announce(&pool, mailer, dashboard_url.as_deref(), now).await
        {
            tracing::error!(error = %e, "announcing evidence packages failed");
        }
        match retention::delete_expired(&pool, now).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "evidence packages past six years deleted"),
            Err(e) => tracing::error!(error = %e, "evidence retention failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_month_is_due_on_the_first_three_days_of_a_month_only() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let day = |s: &str| s.parse::<NaiveDate>().expect("date");
        assert_eq!(
            due_period(at("2026-12-01T00:05:00Z")),
            Some((day("2026-11-01"), day("2026-11-30")))
        );
        assert_eq!(
            due_period(at("2027-01-03T23:00:00Z")),
            Some((day("2026-12-01"), day("2026-12-31")))
        );
        assert_eq!(due_period(at("2026-12-04T00:00:00Z")), None);
    }

    #[test]
    fn the_announcement_links_the_package_and_escapes_the_practice_name() {
        let mail = render(
            "<Maple> & Co",
            "2026-11",
            Uuid::nil(),
            "abc",
            Some("https://dash.example/"),
        );
        assert!(mail.text.contains(&format!(
            "https://dash.example/reports?package={}",
            Uuid::nil()
        )));
        assert!(mail.html.contains("&lt;Maple&gt; &amp; Co"));
        assert!(!mail.html.contains("<Maple>"));
    }
}
