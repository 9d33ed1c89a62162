//! The HMAC key that signs access tokens when the configuration gives none (`auth.jwt_secret`).
//!
//! Design: a random key per process signed everyone out on every restart and, with two instances
//! behind a load balancer, made every other request fail: a token issued by one instance was
//! refused by the other. The key is therefore created once, by whichever instance starts first,
//! and kept in PostgreSQL (`access_token_keys`, one row) where every instance reads it. Two
//! instances starting together both try to insert; `ON CONFLICT DO NOTHING` lets exactly one
//! win, and both then read the winner's key.

use secrecy::SecretString;
use sqlx::PgPool;

use super::random_secret;

/// The shared signing key: the stored one, or a new one stored now if there is none yet.
pub async fn shared_secret(pool: &PgPool) -> Result<SecretString, sqlx::Error> {
    let created = sqlx::query(
        "INSERT INTO access_token_keys (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
    )
    .bind(random_secret())
    .execute(pool)
    .await?
    .rows_affected();
    // A new statement: it sees the row of a concurrent instance that won the insert.
    let secret: String = sqlx::query_scalar("SELECT secret FROM access_token_keys WHERE id = 1")
        .fetch_one(pool)
        .await?;
    if created == 1 {
        tracing::info!("created the access-token signing key shared by every cloud instance");
    }
    Ok(secret.into())
}
