//! The one place where failures become HTTP statuses and `ApiError` bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use stayopen_shared::api::{ApiError, ApiErrorBody};

use crate::domain::enrolment::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("the access token has expired; sign in again")]
    TokenExpired,
    #[error("wrong e-mail or password")]
    BadCredentials,
    #[error("too many failed sign-ins; try again in {0} s")]
    TooManyAttempts(u64),
    #[error("at most {0} live-update streams may be open at once; close one first")]
    TooManyStreams(u32),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "a second factor is required: send totp_code with the code from your authenticator app"
    )]
    TotpRequired,
    #[error("the second-factor code is wrong or was already used")]
    TotpInvalid,
    #[error("your MSP requires administrators to use a second factor; enrol TOTP first")]
    TotpEnrolmentRequired,
    #[error("the refresh token is unknown, expired or revoked; sign in again")]
    RefreshTokenInvalid,
    #[error("the refresh token was already used; every session of this sign-in has been revoked")]
    RefreshTokenReused,
    #[error("access expired")]
    AccessExpired,
    #[error("the enrolment token is unknown")]
    EnrollmentTokenUnknown,
    #[error("the enrolment token expired")]
    EnrollmentTokenExpired,
    #[error("the enrolment token has been used up")]
    EnrollmentTokenExhausted,
    #[error("the enrolment token has been revoked")]
    EnrollmentTokenRevoked,
    /// Enrolling known hardware again or renewing a certificate was refused.
    #[error("{0}")]
    Identity(#[from] crate::domain::enrolment::Refusal),
    #[error("this hardware is enrolled with another organisation")]
    HardwareClaimed,
    #[error(
        "this serial number is not registered for zero-touch enrolment, or the factory key is wrong"
    )]
    ClaimRefused,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiFailure {
    /// Stable machine-readable code, also the label of the rejection counter.
    pub fn code(&self) -> &'static str {
        match self {
            ApiFailure::BadRequest(_) => "bad_request",
            ApiFailure::Unauthenticated(_) => "unauthenticated",
            ApiFailure::TokenExpired => "token_expired",
            ApiFailure::BadCredentials => "bad_credentials",
            ApiFailure::TooManyAttempts(_) => "too_many_attempts",
            ApiFailure::TooManyStreams(_) => "too_many_streams",
            ApiFailure::Forbidden(_) => "forbidden",
            ApiFailure::NotFound(_) => "not_found",
            ApiFailure::Conflict(_) => "conflict",
            ApiFailure::TotpRequired => "totp_required",
            ApiFailure::TotpInvalid => "totp_invalid",
            ApiFailure::TotpEnrolmentRequired => "totp_enrolment_required",
            ApiFailure::RefreshTokenInvalid => "refresh_token_invalid",
            ApiFailure::RefreshTokenReused => "refresh_token_reused",
            ApiFailure::AccessExpired => "access_expired",
            ApiFailure::EnrollmentTokenUnknown => "enrollment_token_unknown",
            ApiFailure::EnrollmentTokenExpired => "enrollment_token_expired",
            ApiFailure::EnrollmentTokenExhausted => "enrollment_token_exhausted",
            ApiFailure::EnrollmentTokenRevoked => "enrollment_token_revoked",
            ApiFailure::Identity(refusal) => match refusal {
                Refusal::Revoked => "appliance_revoked",
                Refusal::InOtherPractice => "appliance_in_other_practice",
                Refusal::NeedsProof => "reenrollment_needs_proof",
                Refusal::UnknownAppliance => "unknown_appliance",
                Refusal::KeyUnknown => "renewal_key_unknown",
                Refusal::CertificateExpired => "certificate_expired",
                Refusal::Stale => "renewal_stale",
                Refusal::Replayed => "renewal_replayed",
                Refusal::BadSignature => "renewal_signature_invalid",
            },
            ApiFailure::HardwareClaimed => "hardware_claimed",
            ApiFailure::ClaimRefused => "claim_refused",
            ApiFailure::Internal(_) => "internal",
        }
    }
}

impl From<crate::domain::access::AccessError> for ApiFailure {
    fn from(e: crate::domain::access::AccessError) -> Self {
        match e {
            crate::domain::access::AccessError::Forbidden(why) => ApiFailure::Forbidden(why),
            crate::domain::access::AccessError::NotFound(what) => ApiFailure::NotFound(what),
            crate::domain::access::AccessError::Database(e) => ApiFailure::from(e),
        }
    }
}

impl From<sqlx::Error> for ApiFailure {
    fn from(e: sqlx::Error) -> Self {
        ApiFailure::Internal(format!("database: {e}"))
    }
}

impl ResponseError for ApiFailure {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiFailure::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiFailure::Unauthenticated(_)
            | ApiFailure::TokenExpired
            | ApiFailure::BadCredentials
            | ApiFailure::EnrollmentTokenUnknown
            | ApiFailure::EnrollmentTokenExpired
            | ApiFailure::EnrollmentTokenExhausted
            | ApiFailure::EnrollmentTokenRevoked
            | ApiFailure::Identity(
                Refusal::UnknownAppliance
                | Refusal::KeyUnknown
                | Refusal::CertificateExpired
                | Refusal::Stale
                | Refusal::Replayed
                | Refusal::BadSignature,
            )
            | ApiFailure::ClaimRefused
            | ApiFailure::TotpRequired
            | ApiFailure::TotpInvalid
            | ApiFailure::RefreshTokenInvalid
            | ApiFailure::RefreshTokenReused
            | ApiFailure::AccessExpired => StatusCode::UNAUTHORIZED,
            ApiFailure::TooManyAttempts(_) | ApiFailure::TooManyStreams(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiFailure::Forbidden(_)
            | ApiFailure::TotpEnrolmentRequired
            | ApiFailure::Identity(Refusal::Revoked) => StatusCode::FORBIDDEN,
            ApiFailure::NotFound(_) => StatusCode::NOT_FOUND,
            ApiFailure::HardwareClaimed
            | ApiFailure::Conflict(_)
            | ApiFailure::Identity(Refusal::InOtherPractice | Refusal::NeedsProof) => {
                StatusCode::CONFLICT
            }
            ApiFailure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // Details of internal failures go to the log, not to the client.
            ApiFailure::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ApiFailure::TooManyAttempts(seconds) = self {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(ApiError {
            error: ApiErrorBody {
                code: self.code().to_owned(),
                message,
            },
        })
    }
}

impl actix_web::Responder for ApiFailure {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}
