//! Enrolment: an appliance proves it may join a practice — with an enrolment token, or zero-touch
//! with a registered serial and its factory key — and sends a signing request for its own key. It
//! receives its identity, MQTT credentials and a client certificate of the device CA. Hardware that
//! is already enrolled needs an MSP admin's approval to enrol again; the appliance itself renews
//! its certificate with proof of its current key (`/enroll/renew`). See [`crate::domain::enrolment::enrol`].

use actix_web::{post, web};
use stayopen_shared::DeviceTopic;
use stayopen_shared::api::{
    ApiError, ClaimEnrollRequest, EnrollRequest, EnrollResponse, MqttCredentials, RenewRequest,
};

use crate::domain::enrolment::Issuer;
use crate::domain::enrolment::enrol::{self, Applicant, Disguise, EnrolError, Enrolment};
use crate::domain::relays::RelayError;
use crate::http::error::ApiFailure;
use crate::infra::metrics::API_REJECTED;
use crate::state::AppState;

impl From<EnrolError> for ApiFailure {
    fn from(e: EnrolError) -> Self {
        match e {
            EnrolError::Invalid(why) => ApiFailure::BadRequest(why),
            EnrolError::TokenUnknown => ApiFailure::EnrollmentTokenUnknown,
            EnrolError::TokenExpired => ApiFailure::EnrollmentTokenExpired,
            EnrolError::TokenExhausted => ApiFailure::EnrollmentTokenExhausted,
            EnrolError::TokenRevoked => ApiFailure::EnrollmentTokenRevoked,
            EnrolError::HardwareClaimed(Disguise::TokenUnknown) => {
                ApiFailure::EnrollmentTokenUnknown
            }
            EnrolError::HardwareClaimed(Disguise::ClaimRefused) => ApiFailure::ClaimRefused,
            EnrolError::ClaimRefused => ApiFailure::ClaimRefused,
            EnrolError::Refused(refusal) => refusal.into(),
            EnrolError::Csr(e) => ApiFailure::BadRequest(e.to_string()),
            EnrolError::Policy(e) => ApiFailure::Internal(e.to_string()),
            EnrolError::Tunnel(RelayError::KeyTaken) => {
                ApiFailure::Conflict(RelayError::KeyTaken.to_string())
            }
            EnrolError::Tunnel(RelayError::Invalid(why)) => ApiFailure::BadRequest(why),
            EnrolError::Tunnel(e) => ApiFailure::Internal(e.to_string()),
            EnrolError::Database(e) => e.into(),
        }
    }
}

/// The device CA as enrolment uses it, from the cloud's configuration.
pub fn issuer(state: &AppState) -> Issuer<'_> {
    Issuer {
        ca: &state.ca,
        cert_days: state.config.broker.device_cert_days,
        crl_dir: &state.config.broker.tls_dir,
    }
}

/// Counts and logs a refused enrolment or renewal, and answers with the appliance's credentials.
fn answer(
    state: &AppState,
    serial: &str,
    result: Result<Enrolment, EnrolError>,
) -> Result<web::Json<EnrollResponse>, ApiFailure> {
    // Another MSP's hardware is answered as another refusal, but counted and logged as what it is.
    let claimed = matches!(result, Err(EnrolError::HardwareClaimed(_)));
    let key_taken = matches!(result, Err(EnrolError::Tunnel(RelayError::KeyTaken)));
    let result = result.map_err(ApiFailure::from);
    if let Err(failure) = &result {
        let reason = if claimed {
            "hardware_claimed"
        } else if key_taken {
            "wireguard_key_taken"
        } else {
            failure.code()
        };
        state.metrics.increment(API_REJECTED, "reason", reason);
        tracing::warn!(%serial, reason, "enrolment refused");
    }
    result.map(|enrolment| web::Json(response(state, enrolment)))
}

/// Enrols an appliance with an enrolment token. Hardware (serial and MAC) that is already enrolled
/// is refused unless an MSP admin approved enrolling it again (then it keeps its id, and stays in
/// its practice); hardware enrolled with another MSP is refused exactly as an unknown token is, so
/// the answer tells no MSP what another has enrolled.
#[utoipa::path(
    tag = "enrolment",
    request_body = EnrollRequest,
    responses(
        (status = 200, body = EnrollResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "Unknown, expired, used-up or revoked token; hardware of another MSP is answered as an unknown token"),
        (status = 403, body = ApiError, description = "The appliance is revoked (`appliance_revoked`)"),
        (status = 409, body = ApiError, description = "The hardware is enrolled without an approval to enrol again (`reenrollment_needs_proof`), or is in another practice than the token's (`appliance_in_other_practice`), or `wireguard_public_key` is another appliance's (`conflict`)"),
    )
)]
#[post("/enroll")]
pub async fn enroll(
    state: web::Data<AppState>,
    body: web::Json<EnrollRequest>,
) -> Result<web::Json<EnrollResponse>, ApiFailure> {
    let applicant = Applicant {
        hardware: &body.hardware,
        agent_version: &body.agent_version,
        csr_pem: &body.csr_pem,
        wireguard_public_key: body.wireguard_public_key.as_deref(),
    };
    let result = enrol::with_token(&state.pool, issuer(&state), &body.token, &applicant).await;
    answer(&state, &body.hardware.serial, result)
}

/// Zero-touch enrolment: the appliance presents its serial (in `hardware`) and its factory key; an
/// MSP registered that serial for a practice beforehand.
#[utoipa::path(
    tag = "enrolment",
    request_body = ClaimEnrollRequest,
    responses(
        (status = 200, body = EnrollResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "Serial not registered, wrong factory key, or hardware of another MSP (one answer for all)"),
        (status = 403, body = ApiError, description = "The appliance is revoked (`appliance_revoked`)"),
        (status = 409, body = ApiError, description = "The hardware is enrolled without an approval to enrol again (`reenrollment_needs_proof`), or `wireguard_public_key` is another appliance's (`conflict`)"),
    )
)]
#[post("/enroll/claim")]
pub async fn enroll_claimed(
    state: web::Data<AppState>,
    body: web::Json<ClaimEnrollRequest>,
) -> Result<web::Json<EnrollResponse>, ApiFailure> {
    let applicant = Applicant {
        hardware: &body.hardware,
        agent_version: &body.agent_version,
        csr_pem: &body.csr_pem,
        wireguard_public_key: body.wireguard_public_key.as_deref(),
    };
    let result =
        enrol::with_claimed_serial(&state.pool, issuer(&state), &body.factory_key, &applicant)
            .await;
    answer(&state, &body.hardware.serial, result)
}

fn response(state: &AppState, enrolment: Enrolment) -> EnrollResponse {
    let appliance_id = enrolment.appliance_id;
    EnrollResponse {
        appliance_id,
        practice_id: enrolment.practice_id,
        site_id: enrolment.site_id,
        mqtt: MqttCredentials {
            host: state.config.broker.public_host.clone(),
            port: state.config.broker_public_port(),
            username: appliance_id.to_string(),
            password: enrolment.mqtt_password,
        },
        topic_prefix: DeviceTopic::prefix(appliance_id),
        client_cert_pem: enrolment.certificate.cert_pem,
        ca_cert_pem: state.ca.cert_pem().to_owned(),
    }
}

/// Renews an appliance's certificate. The appliance proves it holds the key of its current
/// certificate by signing `renewal_message(appliance_id, signed_at, csr_pem)` with it; it receives
/// a certificate for the new key in `csr_pem` and a new MQTT password. The previous certificate
/// and password stop working.
#[utoipa::path(
    tag = "enrolment",
    request_body = RenewRequest,
    responses(
        (status = 200, body = EnrollResponse),
        (status = 400, body = ApiError, description = "Not a valid signing request for a P-256 key, or `wireguard_public_key` is not the base64 of 32 bytes"),
        (status = 401, body = ApiError, description = "Unknown appliance, no current key, expired certificate, stale or replayed proof, or a signature that does not verify"),
        (status = 403, body = ApiError, description = "The appliance is revoked"),
        (status = 409, body = ApiError, description = "`wireguard_public_key` is another appliance's (`conflict`)"),
    )
)]
#[post("/enroll/renew")]
pub async fn renew(
    state: web::Data<AppState>,
    body: web::Json<RenewRequest>,
) -> Result<web::Json<EnrollResponse>, ApiFailure> {
    let result = enrol::renew(&state.pool, issuer(&state), &body).await;
    answer(&state, &body.appliance_id.to_string(), result)
}
