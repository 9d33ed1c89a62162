//! Signing in and staying signed in (see [`crate::domain::access::sessions`]): the client's
//! address (through trusted proxies only), the sign-in throttle's admission and settlement (see
//! [`crate::domain::access::throttle`]) and the rejection counter are kept here, at the edge.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::{HttpResponse, get, post, web};
use chrono::Duration;
use stayopen_shared::api::{
    ApiError, CurrentUser, LoginRequest, LoginResponse, RefreshRequest, TotpCode, TotpSetup,
};

use crate::domain::access::sessions::{self, Credentials, SessionError, SessionKeys};
use crate::domain::access::throttle::{self, Outcome, ThrottleError};
use crate::http::caller::SessionUser;
use crate::http::error::ApiFailure;
use crate::infra::metrics::API_REJECTED;
use crate::state::AppState;

impl From<SessionError> for ApiFailure {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::BadCredentials => ApiFailure::BadCredentials,
            SessionError::TotpRequired => ApiFailure::TotpRequired,
            SessionError::TotpInvalid => ApiFailure::TotpInvalid,
            SessionError::MspRequired => ApiFailure::Conflict(e.to_string()),
            SessionError::Unauthenticated(why) => ApiFailure::Unauthenticated(why.into()),
            SessionError::AccessExpired => ApiFailure::AccessExpired,
            SessionError::RefreshTokenInvalid => ApiFailure::RefreshTokenInvalid,
            SessionError::RefreshTokenReused => ApiFailure::RefreshTokenReused,
            SessionError::NotFound(what) => ApiFailure::NotFound(what),
            SessionError::Conflict(why) => ApiFailure::Conflict(why.into()),
            SessionError::UnknownRole(_) => ApiFailure::Internal(e.to_string()),
            SessionError::Signing(e) => ApiFailure::Internal(e.to_string()),
            SessionError::Blocking(e) => ApiFailure::Internal(e.to_string()),
            SessionError::Access(e) => e.into(),
            SessionError::Database(e) => e.into(),
        }
    }
}

fn session_keys(state: &AppState) -> SessionKeys<'_> {
    SessionKeys {
        tokens: &state.tokens,
        refresh_ttl: Duration::hours(i64::from(state.config.auth.refresh_ttl_hours)),
    }
}

/// The client's address. A request straight from a client is keyed on its TCP peer. A request
/// whose peer is a trusted proxy (`http.trusted_proxies`) is keyed on the address that proxy
/// forwarded: walking `X-Forwarded-For` from the right (the entry the nearest proxy appended),
/// each hop is believed only while the hop that reported it is trusted, so the first address not
/// itself a trusted proxy is the client. Entries a client wrote itself sit to the left of that and
/// are never reached; a malformed entry stops the walk at the last trusted hop.
pub fn client_address(
    peer: IpAddr,
    forwarded_for: &[&str],
    trusted_proxies: &[ipnet::IpNet],
) -> IpAddr {
    let trusted = |address: &IpAddr| trusted_proxies.iter().any(|net| net.contains(address));
    let mut client = peer;
    let hops = forwarded_for
        .iter()
        .rev()
        .flat_map(|header| header.rsplit(','))
        .map(str::trim);
    for hop in hops {
        if !trusted(&client) {
            break;
        }
        match hop.parse::<IpAddr>() {
            Ok(address) => client = address,
            Err(_) => break,
        }
    }
    client
}

/// Signs in with e-mail, password and (when enabled) a TOTP code. Throttled in PostgreSQL (see
/// [`throttle`]): the attempt is admitted, atomically, before the password is checked.
#[utoipa::path(
    tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse, description = "Signed in"),
        (status = 401, body = ApiError, description = "Wrong credentials, TOTP required or wrong"),
        (status = 409, body = ApiError, description = "The address and password open accounts at several MSPs: give `msp`"),
        (status = 429, body = ApiError, description = "Too many failed attempts; see Retry-After"),
    )
)]
#[post("/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    request: actix_web::HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<web::Json<LoginResponse>, ApiFailure> {
    let email = body.email.trim().to_lowercase();
    let peer = request
        .peer_addr()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |a| a.ip());
    let forwarded_for: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    let address = client_address(peer, &forwarded_for, &state.config.http.trusted_proxies);
    let admission = match throttle::admit_attempt(&state.pool, &email, address).await {
        Ok(admission) => admission,
        Err(ThrottleError::Refused { scope, retry_after }) => {
            state
                .metrics
                .increment(API_REJECTED, "reason", "too_many_attempts");
            tracing::warn!(%email, %address, scope = scope.as_str(), "sign-in throttled");
            let seconds = u64::try_from(retry_after.num_seconds()).unwrap_or(0);
            return Err(ApiFailure::TooManyAttempts(seconds.max(1)));
        }
        Err(ThrottleError::Database(e)) => return Err(e.into()),
    };
    let credentials = Credentials {
        email: &email,
        password: &body.password,
        totp_code: body.totp_code.as_deref(),
        msp: body.msp.as_deref(),
    };
    let result = sessions::sign_in(&state.pool, session_keys(&state), credentials).await;
    let outcome = match &result {
        Ok(_) => Outcome::SignedIn,
        Err(SessionError::TotpRequired | SessionError::MspRequired) => Outcome::PasswordRight,
        Err(_) => Outcome::Failed,
    };
    if let Err(refusal) = &result {
        let reason = match refusal {
            SessionError::BadCredentials => Some("bad_credentials"),
            SessionError::TotpInvalid => Some("totp_invalid"),
            SessionError::TotpRequired => Some("totp_required"),
            SessionError::MspRequired => Some("msp_required"),
            _ => None,
        };
        if let Some(reason) = reason {
            state.metrics.increment(API_REJECTED, "reason", reason);
            tracing::info!(%email, %address, reason, "failed sign-in");
        }
    }
    if let Err(e) = throttle::settle_attempt(&state.pool, &admission, outcome).await {
        // The attempt stays booked, which errs on the safe side.
        tracing::warn!(error = %e, "could not settle a sign-in attempt");
    }
    Ok(web::Json(result?))
}

/// Trades a refresh token for a new access token and the next refresh token. Each refresh token
/// works once; presenting a used one revokes every token of that sign-in.
#[utoipa::path(
    tag = "session",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, body = ApiError, description = "Unknown, expired, revoked or reused refresh token"),
    )
)]
#[post("/auth/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<web::Json<LoginResponse>, ApiFailure> {
    let result = sessions::refresh(&state.pool, session_keys(&state), &body.refresh_token)
        .await
        .map_err(ApiFailure::from);
    if let Err(failure) = &result {
        state
            .metrics
            .increment(API_REJECTED, "reason", failure.code());
    }
    result.map(web::Json)
}

/// Signs out: revokes the refresh token and every token of its sign-in.
#[utoipa::path(
    tag = "session",
    request_body = RefreshRequest,
    responses((status = 204, description = "Signed out"), (status = 401, body = ApiError))
)]
#[post("/auth/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiFailure> {
    sessions::sign_out(&state.pool, &body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The signed-in user.
#[utoipa::path(
    tag = "session",
    responses((status = 200, body = CurrentUser), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/me")]
pub async fn me(
    state: web::Data<AppState>,
    auth: SessionUser,
) -> Result<web::Json<CurrentUser>, ApiFailure> {
    Ok(web::Json(
        sessions::current_user(&state.pool, &auth.0).await?,
    ))
}

/// Starts TOTP enrolment: a new secret to add to an authenticator app. Not active until confirmed.
#[utoipa::path(
    tag = "session",
    responses(
        (status = 200, body = TotpSetup),
        (status = 409, body = ApiError, description = "TOTP is already enabled"),
    ),
    security(("bearer" = []))
)]
#[post("/auth/totp/setup")]
pub async fn totp_setup(
    state: web::Data<AppState>,
    auth: SessionUser,
) -> Result<web::Json<TotpSetup>, ApiFailure> {
    Ok(web::Json(
        sessions::start_totp_enrolment(&state.pool, &auth.0).await?,
    ))
}

/// Confirms TOTP enrolment with a current code; from then on sign-in needs a code. Sign in again
/// afterwards to leave a TOTP-enrolment-only session.
#[utoipa::path(
    tag = "session",
    request_body = TotpCode,
    responses(
        (status = 204, description = "TOTP enabled"),
        (status = 401, body = ApiError, description = "Wrong code"),
        (status = 409, body = ApiError, description = "No enrolment started, or already enabled"),
    ),
    security(("bearer" = []))
)]
#[post("/auth/totp/confirm")]
pub async fn totp_confirm(
    state: web::Data<AppState>,
    auth: SessionUser,
    body: web::Json<TotpCode>,
) -> Result<HttpResponse, ApiFailure> {
    sessions::confirm_totp(&state.pool, &auth.0, &body.code).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    #[test]
    fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
        assert_eq!(
            client_address(ip("203.0.113.9"), &["198.51.100.1"], &[]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("203.0.113.9"), &["198.51.100.1"], &nets(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn through_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client wrote a forged first entry; the proxies appended the real ones.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &["192.0.2.66, 198.51.100.7", "10.0.0.1"],
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &["not-an-address"], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &trusted),
            ip("10.0.0.2")
        );
    }
}
