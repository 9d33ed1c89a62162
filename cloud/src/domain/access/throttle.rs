//! Sign-in throttling, kept in PostgreSQL so every cloud instance shares it.
//!
//! Design: an attempt is *admitted* before its password is checked, and admission books it
//! against three keys at once, atomically (the keys' rows are locked in one statement, the
//! decision is taken, the bookings are written, the transaction commits — only then does the
//! password check run). A burst of concurrent guesses therefore cannot outrun the count: the
//! 41st concurrent request waits for the row lock and sees the 40 bookings before it. A sign-in
//! that succeeds (or whose password was right and only lacks its TOTP code) gives its booking
//! back; a failure keeps it.
//!
//! Each key is a generic-cell-rate-algorithm bucket ([`Limit`]): `attempts` may come at once, then
//! one more every `per / attempts` — a guesser is slowed to a steady trickle, and nobody is locked
//! out for a long, fixed time. The keys follow OWASP's authentication guidance:
//!
//! - **account and address** ([`PER_ACCOUNT_AND_ADDRESS`], 5 per 15 minutes): the focused limit
//!   on guessing one account's password from one place. It throttles that pair only, so an
//!   attacker's address cannot lock the account out of anybody else's address.
//! - **account** ([`PER_ACCOUNT`], 10 per 5 minutes, then one every 30 s): bounds a guesser that
//!   spreads over many addresses. It only slows, and it does not apply at all from an address the
//!   account has signed in from in the last 30 days ([`KNOWN_ADDRESS_FOR`]), so its owner is not
//!   held up by someone else's guessing.
//! - **address** ([`PER_ADDRESS`], 30 per 15 minutes): bounds breadth — one address spraying a
//!   password over many accounts, or trying addresses that have no account (those count here like
//!   any other). It too skips addresses an account signed in from before: behind a practice's
//!   router or a proxy that is not trusted, everyone shares one address, and a guesser there must
//!   not lock out the colleagues who have signed in from it before.
//!
//! The client address is the TCP peer's, or the one a trusted proxy forwarded
//! (`http.trusted_proxies`). IPv6 clients are keyed by their /64, which one subscriber usually
//! holds whole. Keys are stored as SHA-256 digests: the table keeps neither e-mail addresses nor
//! client addresses. Time is PostgreSQL's, read inside the locking transaction, so instances
//! with drifting clocks agree.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// A bucket: `attempts` at once, refilled one every `per / attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub attempts: i32,
    pub per: Duration,
}

impl Limit {
    /// The emission interval: how often one more attempt becomes available.
    pub fn interval(self) -> Duration {
        self.per / self.attempts
    }
}

pub const PER_ACCOUNT_AND_ADDRESS: Limit = Limit {
    attempts: 5,
    per: Duration::minutes(15),
};
pub const PER_ACCOUNT: Limit = Limit {
    attempts: 10,
    per: Duration::minutes(5),
};
pub const PER_ADDRESS: Limit = Limit {
    attempts: 30,
    per: Duration::minutes(15),
};
/// An address the account signed in from this recently is the owner's: the account-wide and
/// address-wide limits do not apply to it.
pub const KNOWN_ADDRESS_FOR: Duration = Duration::days(30);

/// Which key refused an attempt (the metric's and the log's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    AccountAndAddress,
    Account,
    Address,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AccountAndAddress => "account_and_address",
            Scope::Account => "account",
            Scope::Address => "address",
        }
    }
}

/// One key's state: its theoretical arrival time (`None`: nothing booked).
pub type Tat = Option<DateTime<Utc>>;

/// What the three keys hold when an attempt arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Buckets {
    pub pair: Tat,
    pub account: Tat,
    pub address: Tat,
    /// When the account last signed in from this address.
    pub pair_last_success: Option<DateTime<Utc>>,
}

/// The decision on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Check the password; the buckets as booked.
    Admit {
        booked: Buckets,
        /// Whether the account-wide and address-wide keys were charged (not for a known address).
        charged_wide: bool,
    },
    /// Refused by `scope`; try again after `retry_after`.
    Refuse { scope: Scope, retry_after: Duration },
}

/// Books one attempt on `tat` under `limit`, or says how long until one is free.
fn book(limit: Limit, tat: Tat, now: DateTime<Utc>) -> Result<DateTime<Utc>, Duration> {
    let next = tat.map_or(now, |t| t.max(now)) + limit.interval();
    let ahead = next - now;
    if ahead > limit.per {
        Err(ahead - limit.per)
    } else {
        Ok(next)
    }
}

/// Gives one booking back.
fn unbook(limit: Limit, tat: Tat, now: DateTime<Utc>) -> Tat {
    tat.map(|t| t - limit.interval()).filter(|t| *t > now)
}

/// Whether `address` is one the account signed in from recently.
fn known_address(buckets: &Buckets, now: DateTime<Utc>) -> bool {
    buckets
        .pair_last_success
        .is_some_and(|at| now - at < KNOWN_ADDRESS_FOR)
}

/// Admits or refuses one sign-in attempt at `now`. Every key is checked before any is booked, so
/// a refused attempt costs nothing; the longest wait among the refusing keys is reported.
pub fn admit(buckets: Buckets, now: DateTime<Utc>) -> Decision {
    let charged_wide = !known_address(&buckets, now);
    let mut booked = buckets;
    let mut refusal: Option<(Scope, Duration)> = None;
    let mut checks = vec![(
        Scope::AccountAndAddress,
        PER_ACCOUNT_AND_ADDRESS,
        &mut booked.pair,
    )];
    if charged_wide {
        checks.push((Scope::Account, PER_ACCOUNT, &mut booked.account));
        checks.push((Scope::Address, PER_ADDRESS, &mut booked.address));
    }
    for (scope, limit, tat) in checks {
        match book(limit, *tat, now) {
            Ok(next) => *tat = Some(next),
            Err(wait) => {
                if refusal.is_none_or(|(_, longest)| wait > longest) {
                    refusal = Some((scope, wait));
                }
            }
        }
    }
    match refusal {
        Some((scope, retry_after)) => Decision::Refuse { scope, retry_after },
        None => Decision::Admit {
            booked,
            charged_wide,
        },
    }
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Signed in: the booking is given back and the address becomes known for the account.
    SignedIn,
    /// The password was right; the TOTP code is still to come. The booking is given back.
    PasswordRight,
    /// Anything else: the booking stands.
    Failed,
}

/// The buckets after an admitted attempt ended with `outcome`.
pub fn settle(
    buckets: Buckets,
    charged_wide: bool,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Buckets {
    if outcome == Outcome::Failed {
        return buckets;
    }
    let mut settled = buckets;
    if outcome == Outcome::SignedIn {
        // The owner is here: this address starts with a clean slate for the account.
        settled.pair = None;
        settled.pair_last_success = Some(now);
    } else {
        settled.pair = unbook(PER_ACCOUNT_AND_ADDRESS, buckets.pair, now);
    }
    if charged_wide {
        settled.account = unbook(PER_ACCOUNT, buckets.account, now);
        settled.address = unbook(PER_ADDRESS, buckets.address, now);
    }
    settled
}

/// The address the throttle keys on: IPv4 as is (an IPv4-mapped IPv6 address as its IPv4
/// address), IPv6 by its /64.
pub fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The three keys of an attempt: SHA-256 of scope and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub pair: Vec<u8>,
    pub account: Vec<u8>,
    pub address: Vec<u8>,
}

impl Keys {
    /// `email` trimmed and lower-cased.
    pub fn new(email: &str, address: IpAddr) -> Self {
        let digest = |parts: &[&str]| Sha256::digest(parts.join("\0").as_bytes()).to_vec();
        let address = address_key(address);
        Self {
            pair: digest(&["pair", email, &address]),
            account: digest(&["account", email]),
            address: digest(&["address", &address]),
        }
    }
}

/// An admitted attempt, to be settled when its outcome is known.
#[derive(Debug, Clone)]
pub struct Admission {
    keys: Keys,
    charged_wide: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("too many sign-in attempts ({}); retry after {retry_after}", scope.as_str())]
    Refused { scope: Scope, retry_after: Duration },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct Row {
    key: Vec<u8>,
    tat: Tat,
    last_success_at: Option<DateTime<Utc>>,
}

/// Locks the three keys' rows (creating missing ones) in one statement, in key order so two
/// attempts never wait on each other in a cycle, and reads them with the database's time.
async fn lock(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    keys: &Keys,
) -> Result<(Buckets, DateTime<Utc>), sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "INSERT INTO signin_throttle (key, expires_at)
         SELECT k, now() FROM unnest($1::bytea[]) AS k ORDER BY k
         ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
         RETURNING key, tat, last_success_at",
    )
    .bind(vec![
        keys.pair.clone(),
        keys.account.clone(),
        keys.address.clone(),
    ])
    .fetch_all(&mut **tx)
    .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut **tx)
        .await?;
    let mut buckets = Buckets::default();
    for row in rows {
        if row.key == keys.pair {
            buckets.pair = row.tat;
            buckets.pair_last_success = row.last_success_at;
        } else if row.key == keys.account {
            buckets.account = row.tat;
        } else if row.key == keys.address {
            buckets.address = row.tat;
        }
    }
    Ok((buckets, now))
}

/// Writes the buckets back. A row may be deleted once it holds no booking and no recent success.
async fn store(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    keys: &Keys,
    buckets: Buckets,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let expiry = |tat: Tat, success: Option<DateTime<Utc>>| {
        [tat, success.map(|at| at + KNOWN_ADDRESS_FOR)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now)
    };
    sqlx::query(
        "UPDATE signin_throttle AS s
         SET tat = v.tat, last_success_at = v.last_success_at, expires_at = v.expires_at
         FROM unnest($1::bytea[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
              AS v(key, tat, last_success_at, expires_at)
         WHERE s.key = v.key",
    )
    .bind(vec![
        keys.pair.clone(),
        keys.account.clone(),
        keys.address.clone(),
    ])
    .bind(vec![buckets.pair, buckets.account, buckets.address])
    .bind(vec![buckets.pair_last_success, None, None])
    .bind(vec![
        expiry(buckets.pair, buckets.pair_last_success),
        expiry(buckets.account, None),
        expiry(buckets.address, None),
    ])
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Admits one sign-in attempt for `email` (trimmed, lower-cased) from `address`, or refuses it.
/// Admission is committed before this returns: the caller checks the password afterwards and
/// then calls [`settle_attempt`].
pub async fn admit_attempt(
    pool: &PgPool,
    email: &str,
    address: IpAddr,
) -> Result<Admission, ThrottleError> {
    let keys = Keys::new(email, address);
    let mut tx = pool.begin().await?;
    let (buckets, now) = lock(&mut tx, &keys).await?;
    match admit(buckets, now) {
        Decision::Refuse { scope, retry_after } => {
            tx.rollback().await?;
            Err(ThrottleError::Refused { scope, retry_after })
        }
        Decision::Admit {
            booked,
            charged_wide,
        } => {
            store(&mut tx, &keys, booked, now).await?;
            // Rows that say nothing any more go, a few at a time.
            sqlx::query(
                "DELETE FROM signin_throttle WHERE key IN (
                     SELECT key FROM signin_throttle WHERE expires_at < now() - interval '1 minute'
                     ORDER BY expires_at LIMIT 20 FOR UPDATE SKIP LOCKED)",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Admission { keys, charged_wide })
        }
    }
}

/// Records how an admitted attempt ended: success gives its booking back.
pub async fn settle_attempt(
    pool: &PgPool,
    admission: &Admission,
    outcome: Outcome,
) -> Result<(), ThrottleError> {
    if outcome == Outcome::Failed {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let (buckets, now) = lock(&mut tx, &admission.keys).await?;
    let settled = settle(buckets, admission.charged_wide, outcome, now);
    store(&mut tx, &admission.keys, settled, now).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    /// Admits and settles attempts as failures until one is refused; returns how many got in.
    fn admitted_in_a_burst(buckets: &mut Buckets, now: DateTime<Utc>, tries: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..tries {
            if let Decision::Admit { booked, .. } = admit(*buckets, now) {
                *buckets = booked;
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn five_guesses_at_one_account_from_one_address_then_one_every_three_minutes() {
        let mut buckets = Buckets::default();
        assert_eq!(admitted_in_a_burst(&mut buckets, t0(), 40), 5);
        match admit(buckets, t0()) {
            Decision::Refuse { scope, retry_after } => {
                assert_eq!(scope, Scope::AccountAndAddress);
                assert_eq!(retry_after, Duration::minutes(3));
            }
            admitted => panic!("{admitted:?}"),
        }
        let later = t0() + Duration::minutes(3);
        assert_eq!(admitted_in_a_burst(&mut buckets, later, 40), 1);
    }

    #[test]
    fn guesses_from_one_address_leave_the_account_open_from_another() {
        let mut attacker = Buckets::default();
        admitted_in_a_burst(&mut attacker, t0(), 40);
        // The owner's address has its own pair and address keys; the account key is shared.
        let owner = Buckets {
            account: attacker.account,
            ..Buckets::default()
        };
        assert!(matches!(admit(owner, t0()), Decision::Admit { .. }));
    }

    #[test]
    fn guesses_spread_over_many_addresses_slow_the_account_to_one_every_thirty_seconds() {
        let mut account = None;
        let mut admitted = 0;
        for _ in 0..40 {
            let fresh_address = Buckets {
                account,
                ..Buckets::default()
            };
            if let Decision::Admit { booked, .. } = admit(fresh_address, t0()) {
                account = booked.account;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10);
        let refused = admit(
            Buckets {
                account,
                ..Buckets::default()
            },
            t0(),
        );
        assert_eq!(
            refused,
            Decision::Refuse {
                scope: Scope::Account,
                retry_after: Duration::seconds(30)
            }
        );
    }

    #[test]
    fn an_address_the_account_signed_in_from_is_not_held_up_by_guessing_elsewhere_or_nearby() {
        let exhausted = Buckets {
            pair: None,
            account: Some(t0() + Duration::hours(1)),
            address: Some(t0() + Duration::hours(1)),
            pair_last_success: Some(t0() - Duration::days(3)),
        };
        assert!(matches!(
            admit(exhausted, t0()),
            Decision::Admit {
                charged_wide: false,
                ..
            }
        ));
        let stale = Buckets {
            pair_last_success: Some(t0() - KNOWN_ADDRESS_FOR - Duration::seconds(1)),
            ..exhausted
        };
        assert!(matches!(admit(stale, t0()), Decision::Refuse { .. }));
    }

    #[test]
    fn one_address_spraying_many_accounts_is_stopped_after_thirty() {
        let mut address = None;
        let mut admitted = 0;
        for _ in 0..40 {
            let next_account = Buckets {
                address,
                ..Buckets::default()
            };
            if let Decision::Admit { booked, .. } = admit(next_account, t0()) {
                address = booked.address;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 30);
    }

    #[test]
    fn a_success_gives_the_booking_back_and_makes_the_address_known() {
        let Decision::Admit {
            booked,
            charged_wide,
        } = admit(Buckets::default(), t0())
        else {
            panic!("admitted");
        };
        let settled = settle(booked, charged_wide, Outcome::SignedIn, t0());
        assert_eq!(settled.pair, None);
        assert_eq!(settled.account, None);
        assert_eq!(settled.address, None);
        assert_eq!(settled.pair_last_success, Some(t0()));
        assert_eq!(settle(booked, charged_wide, Outcome::Failed, t0()), booked);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(address_key(mapped), "192.0.2.7");
    }
}
