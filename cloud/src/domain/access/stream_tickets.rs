//! Tickets that open the live-update stream, and the check that keeps an open stream authorised.
//!
//! Design: a browser's `EventSource` cannot send an `Authorization` header, so the stream used to
//! take the access token in its query string — and whatever logs URLs (the request log, a proxy,
//! the browser history) then held a valid token. The dashboard now trades its access token for a
//! ticket (`POST /api/v1/stream/tickets`) just before it connects: `sos_` plus 256 random bits,
//! valid for seconds, good for one stream, and stored only as its SHA-256 in PostgreSQL, so any
//! instance can redeem a ticket another instance issued. Redeeming deletes the row in the same
//! statement that reads it: of two concurrent attempts with the same ticket, exactly one gets the
//! row. A ticket names who asked for it ([`Holder`]); an open stream asks [`reauthorise`] again
//! periodically and ends when the answer is no (user deleted or disabled, access ended, signed
//! out, API token revoked or its creator disabled).

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use stayopen_shared::{TenantId, UserId};
use uuid::Uuid;

use super::{AuthUser, Principal, api_tokens, random_secret, secret_digest, sessions};
use crate::infra::db;

/// Tickets start with this, so a leaked one is recognisable (the log check of the test run looks
/// for it).
pub const TICKET_PREFIX: &str = "sos_";

/// Whom a ticket, and the stream it opens, belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A signed-in user, with the sign-in (refresh-token family) when the access token named one.
    User {
        user: UserId,
        session: Option<Uuid>,
    },
    ApiToken(Uuid),
}

impl Holder {
    /// The id streams are counted under (a user's or an API token's; UUIDs do not collide).
    pub fn owner(self) -> Uuid {
        match self {
            Holder::User { user, .. } => user.0,
            Holder::ApiToken(id) => id,
        }
    }
}

/// A redeemed ticket: who may open the stream, in which tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGrant {
    pub tenant: TenantId,
    pub holder: Holder,
}

/// A new ticket, shown once.
#[derive(Debug)]
pub struct IssuedTicket {
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Unknown, already used, or never issued (not told apart).
    #[error("the stream ticket is unknown or was already used")]
    Unknown,
    #[error("the stream ticket has expired")]
    Expired,
    /// The holder may no longer see live updates (reason for the log and the counter).
    #[error("{0}")]
    Revoked(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl TicketError {
    /// A stable reason, the label of the rejection counter.
    pub fn reason(&self) -> &'static str {
        match self {
            TicketError::Unknown => "stream_ticket_unknown",
            TicketError::Expired => "stream_ticket_expired",
            TicketError::Revoked(_) => "stream_access_revoked",
            TicketError::Database(_) => "database",
        }
    }
}

/// Issues a ticket for `auth` (of sign-in `session`, when known), valid for `ttl`. Expired tickets
/// of the tenant are cleared on the way.
pub async fn issue(
    pool: &PgPool,
    auth: &AuthUser,
    session: Option<Uuid>,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<IssuedTicket, TicketError> {
    let ticket = format!("{TICKET_PREFIX}{}", random_secret());
    let expires_at = now + ttl;
    let (user, api_token) = match auth.principal {
        Principal::User(user) => (Some(user.0), None),
        Principal::ApiToken(id) => (None, Some(id)),
    };
    let mut tx = auth.tx(pool).await?;
    sqlx::query("DELETE FROM stream_tickets WHERE expires_at < $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO stream_tickets (ticket_hash, tenant_id, user_id, session_id, api_token_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(secret_digest(&ticket))
    .bind(auth.tenant_id.as_uuid())
    .bind(user)
    .bind(user.and(session))
    .bind(api_token)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(IssuedTicket { ticket, expires_at })
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
    api_token_id: Option<Uuid>,
    expires_at: DateTime<Utc>,
}

/// Redeems `ticket`: deletes it and says whom it was for. A second redemption, concurrent or
/// later, finds nothing.
pub async fn redeem(
    pool: &PgPool,
    ticket: &str,
    now: DateTime<Utc>,
) -> Result<StreamGrant, TicketError> {
    if !ticket.starts_with(TICKET_PREFIX) {
        return Err(TicketError::Unknown);
    }
    let hash = secret_digest(ticket);
    let tenant: Option<Uuid> = sqlx::query_scalar("SELECT stayopen_stream_ticket_tenant($1)")
        .bind(&hash)
        .fetch_one(pool)
        .await?;
    let tenant = TenantId(tenant.ok_or(TicketError::Unknown)?);
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let row: TicketRow = sqlx::query_as(
        "DELETE FROM stream_tickets WHERE ticket_hash = $1
         RETURNING user_id, session_id, api_token_id, expires_at",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(TicketError::Unknown)?;
    tx.commit().await?;
    if row.expires_at <= now {
        return Err(TicketError::Expired);
    }
    let holder = match (row.user_id, row.api_token_id) {
        (Some(user), _) => Holder::User {
            user: UserId(user),
            session: row.session_id,
        },
        (None, Some(token)) => Holder::ApiToken(token),
        (None, None) => return Err(TicketError::Unknown),
    };
    Ok(StreamGrant { tenant, holder })
}

/// Whether `grant`'s holder may still see live updates, and with which role and practices now.
pub async fn reauthorise(pool: &PgPool, grant: StreamGrant) -> Result<AuthUser, TicketError> {
    let user = match grant.holder {
        Holder::User { user, session } => {
            let auth = sessions::signed_in_user(pool, grant.tenant, user)
                .await
                .map_err(|e| match e {
                    sessions::SessionError::Database(e) => TicketError::Database(e),
                    sessions::SessionError::AccessExpired => {
                        TicketError::Revoked("the user's access has ended")
                    }
                    _ => TicketError::Revoked("the user no longer exists or is disabled"),
                })?;
            if let Some(session) = session
                && !session_alive(pool, grant.tenant, session).await?
            {
                return Err(TicketError::Revoked("the sign-in has ended"));
            }
            auth
        }
        Holder::ApiToken(id) => api_tokens::authorise_by_id(pool, grant.tenant, id)
            .await
            .map_err(|e| match e {
                api_tokens::ApiTokenError::Database(e) => TicketError::Database(e),
                _ => TicketError::Revoked("the API token was revoked or its creator disabled"),
            })?,
    };
    if user.totp_enrolment_only {
        return Err(TicketError::Revoked("the user must enrol a second factor"));
    }
    Ok(user)
}

/// A sign-in lasts while one of its refresh tokens is neither revoked (sign-out, reuse) nor
/// expired.
async fn session_alive(
    pool: &PgPool,
    tenant: TenantId,
    session: Uuid,
) -> Result<bool, sqlx::Error> {
    let mut tx = db::tenant_tx(pool, tenant).await?;
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM refresh_tokens
                        WHERE family_id = $1 AND revoked_at IS NULL AND expires_at > now())",
    )
    .bind(session)
    .fetch_one(&mut *tx)
    .await
}
