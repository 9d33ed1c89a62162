//! Alert e-mail: what a notification says ([`render_alert`], [`render_digest`]: pure, a subject
//! with a text and an HTML part) and the SMTP transport that sends it ([`Mailer`]).
//!
//! Every mail about one alert carries `References: <alert-{id}@stayopen>`, so a mail client
//! threads an alert's open, reminders and close together, the way a PSA keeps one ticket.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use stayopen_shared::alerts::{AlertState, AlertView, Severity};
use uuid::Uuid;

use crate::infra::config::{SmtpConfig, SmtpSecurity};

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("no SMTP server is configured (alerts.smtp)")]
    NotConfigured,
    #[error("the mail server setting is unusable: {0}")]
    Transport(String),
    #[error("{0:?} is not a mail address: {1}")]
    Address(String, String),
    #[error("the channel has no recipients")]
    NoRecipients,
    #[error("cannot build the message: {0}")]
    Message(String),
    #[error("the mail server refused or failed: {0}")]
    Send(String),
}

/// A mail ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "Warning",
        Severity::Info => "Info",
    }
}

fn severity_colour(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "#b3261e",
        Severity::Warning => "#8a5300",
        Severity::Info => "#1d5a8a",
    }
}

/// Plain ASCII punctuation: subjects stay readable in clients that mangle encoded words.
fn where_it_is(alert: &AlertView) -> String {
    format!(
        "{} / {} ({})",
        alert.practice_name, alert.site_name, alert.appliance_serial
    )
}

fn alert_link(dashboard_url: Option<&str>, alert: &AlertView) -> Option<String> {
    dashboard_url.map(|base| format!("{}/alerts/{}", base.trim_end_matches('/'), alert.id))
}

/// The rows that describe an alert, shared by the text and HTML parts.
fn facts(alert: &AlertView) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Practice", alert.practice_name.clone()),
        ("Site", alert.site_name.clone()),
        ("Appliance", alert.appliance_serial.clone()),
        ("Kind", alert.kind.as_str().replace('_', " ")),
        ("Severity", severity_label(alert.severity).to_owned()),
        ("State", alert.state.as_str().to_owned()),
        (
            "First seen",
            alert.first_seen.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
    ];
    if alert.count > 1 {
        rows.push((
            "Occurrences",
            format!(
                "{} (last {})",
                alert.count,
                alert.last_seen.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ));
    }
    if !alert.subject.is_empty() {
        rows.push(("Uplink", alert.subject.clone()));
    }
    if alert.after_hours {
        rows.push((
            "Note",
            "raised outside clinic hours (severity capped)".to_owned(),
        ));
    }
    if let Some(resolution) = &alert.resolution
        && alert.state == AlertState::Resolved
    {
        rows.push(("Resolution", resolution.clone()));
    }
    rows
}

fn html_page(title: &str, colour: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;color:#1b1b1b;max-width:640px\">\
         <h2 style=\"color:{colour};margin-bottom:4px\">{title}</h2>{body}\
         <p style=\"color:#5f5f5f;font-size:12px\">Sent by StayOpen. Acknowledge the alert in the \
         dashboard to stop reminders and escalation.</p></body></html>"
    )
}

/// The mail for one alert change: `open`, `reminder`, `close` or `notice`.
pub fn render_alert(event: &str, alert: &AlertView, dashboard_url: Option<&str>) -> Rendered {
    let headline = match event {
        "close" => format!("Resolved: {}", alert.summary),
        "reminder" => format!("Still unacknowledged: {}", alert.summary),
        _ => alert.summary.clone(),
    };
    let label = if event == "close" {
        "Resolved"
    } else {
        severity_label(alert.severity)
    };
    let subject = format!(
        "[StayOpen] {label}: {} - {}",
        alert.summary,
        where_it_is(alert)
    );
    let facts = facts(alert);
    let link = alert_link(dashboard_url, alert);
    let mut text = format!("{headline}\n\n");
    for (name, value) in &facts {
        text.push_str(&format!("{name}: {value}\n"));
    }
    if let Some(link) = &link {
        text.push_str(&format!("\nOpen in the dashboard: {link}\n"));
    }
    let mut rows = String::new();
    for (name, value) in &facts {
        rows.push_str(&format!(
            "<tr><th style=\"text-align:left;padding:2px 12px 2px 0\">{}</th><td>{}</td></tr>",
            escape_html(name),
            escape_html(value)
        ));
    }
    let mut body = format!("<table>{rows}</table>");
    if let Some(link) = &link {
        body.push_str(&format!(
            "<p><a href=\"{}\">Open the alert in the dashboard</a></p>",
            escape_html(link)
        ));
    }
    let colour = if event == "close" {
        "#1e6b34"
    } else {
        severity_colour(alert.severity)
    };
    Rendered {
        subject,
        html: html_page(&escape_html(&headline), colour, &body),
        text,
    }
}

/// The digest a practice's rate limit produces: the held alerts together, in their current state.
pub fn render_digest(
    practice_name: &str,
    alerts: &[AlertView],
    dashboard_url: Option<&str>,
) -> Rendered {
    let open = alerts
        .iter()
        .filter(|a| a.state != AlertState::Resolved)
        .count();
    let subject = format!(
        "[StayOpen] Digest: {} alerts at {practice_name} ({open} still open)",
        alerts.len()
    );
    let intro = format!(
        "{practice_name} went over its notification limit, so these {} alerts arrive together. \
         Each shows its current state.",
        alerts.len()
    );
    let mut text = format!("{intro}\n\n");
    let mut rows = String::new();
    for alert in alerts {
        text.push_str(&format!(
            "- [{}] {} — {} ({}, {} × since {})\n",
            severity_label(alert.severity),
            alert.summary,
            alert.appliance_serial,
            alert.state.as_str(),
            alert.count,
            alert.first_seen.format("%H:%M UTC")
        ));
        let summary = match alert_link(dashboard_url, alert) {
            Some(link) => format!(
                "<a href=\"{}\">{}</a>",
                escape_html(&link),
                escape_html(&alert.summary)
            ),
            None => escape_html(&alert.summary),
        };
        rows.push_str(&format!(
            "<tr><td style=\"color:{}\">{}</td><td>{summary}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            severity_colour(alert.severity),
            severity_label(alert.severity),
            escape_html(&alert.appliance_serial),
            alert.state.as_str(),
            alert.count
        ));
    }
    let body = format!(
        "<p>{}</p><table cellpadding=\"4\"><tr><th>Severity</th><th>Alert</th><th>Appliance</th>\
         <th>State</th><th>Count</th></tr>{rows}</table>",
        escape_html(&intro)
    );
    Rendered {
        subject,
        html: html_page(
            &format!("Alert digest for {}", escape_html(practice_name)),
            "#1b1b1b",
            &body,
        ),
        text,
    }
}

/// Sends mail through the configured server; connections are pooled.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn from_config(config: &SmtpConfig) -> Result<Self, EmailError> {
        let transport_error =
            |e: lettre::transport::smtp::Error| EmailError::Transport(e.to_string());
        let builder = match config.security {
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                    .map_err(transport_error)?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(transport_error)?,
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host).port(25)
            }
        };
        let mut builder = builder.timeout(Some(Duration::from_secs(15)));
        if let Some(port) = config.port {
            builder = builder.port(port);
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| EmailError::Address(config.from.clone(), e.to_string()))?;
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    /// Sends `mail` to every address in `to` (one message, all in To). `alert` threads it;
    /// `delivery` makes its Message-ID, so a retried send is recognisably the same mail.
    pub async fn send(
        &self,
        to: &[String],
        mail: &Rendered,
        alert: Option<Uuid>,
        delivery: Uuid,
    ) -> Result<(), EmailError> {
        if to.is_empty() {
            return Err(EmailError::NoRecipients);
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{delivery}@stayopen>")));
        for address in to {
            let mailbox = address
                .parse::<Mailbox>()
                .map_err(|e| EmailError::Address(address.clone(), e.to_string()))?;
            builder = builder.to(mailbox);
        }
        if let Some(alert) = alert {
            builder = builder
                .in_reply_to(format!("<alert-{alert}@stayopen>"))
                .references(format!("<alert-{alert}@stayopen>"));
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| EmailError::Message(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| EmailError::Send(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use stayopen_shared::alerts::AlertKind;
    use stayopen_shared::{ApplianceId, PracticeId};

    fn alert(summary: &str) -> AlertView {
        AlertView {
            id: Uuid::nil(),
            kind: AlertKind::Failover,
            severity: Severity::Critical,
            state: AlertState::Open,
            practice_id: PracticeId(Uuid::nil()),
            practice_name: "Riverside <Family> Medicine".into(),
            appliance_id: ApplianceId(Uuid::nil()),
            appliance_serial: "SO-0001".into(),
            site_name: "Main office".into(),
            subject: String::new(),
            summary: summary.into(),
            muted: false,
            after_hours: false,
            count: 1,
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_by: None,
            resolved_at: None,
            resolution: None,
            comments: Vec::new(),
        }
    }

    #[test]
    fn an_alert_mail_names_severity_practice_and_appliance_and_escapes_its_html() {
        let mail = render_alert(
            "open",
            &alert("Failover fiber → lte"),
            Some("https://dash.example/"),
        );
        assert_eq!(
            mail.subject,
            "[StayOpen] CRITICAL: Failover fiber → lte - Riverside <Family> Medicine / Main office (SO-0001)"
        );
        assert!(mail.text.contains("Practice: Riverside <Family> Medicine"));
        assert!(mail.text.contains("https://dash.example/alerts/"));
        assert!(mail.html.contains("Riverside &lt;Family&gt; Medicine"));
        assert!(!mail.html.contains("<Family>"));
    }

    #[test]
    fn a_close_mail_says_resolved() {
        let mut resolved = alert("Failover fiber → lte");
        resolved.state = AlertState::Resolved;
        resolved.resolution = Some("failed back".into());
        let mail = render_alert("close", &resolved, None);
        assert!(mail.subject.starts_with("[StayOpen] Resolved: "));
        assert!(mail.text.contains("Resolution: failed back"));
    }

    #[test]
    fn a_digest_lists_every_alert_and_counts_those_still_open() {
        let mut closed = alert("Uplink fiber down");
        closed.state = AlertState::Resolved;
        let mail = render_digest("Riverside", &[alert("Failover"), closed], None);
        assert_eq!(
            mail.subject,
            "[StayOpen] Digest: 2 alerts at Riverside (1 still open)"
        );
        assert!(mail.text.contains("Failover") && mail.text.contains("Uplink fiber down"));
        assert_eq!(mail.html.matches("<tr><td").count(), 2);
    }
}
