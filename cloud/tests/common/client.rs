//! A typed client of the cloud's HTTP API for tests and benches: bound to a base URL and a token,
//! one method per endpoint, taking and returning the wire types of `stayopen_shared`.
//!
//! A typed method succeeds only with the status its endpoint documents (200, 201 or 204) and a body
//! of the documented type; anything else is an [`ApiStatus`], so a test that expects a refusal
//! asserts on its status and error code. The raw methods ([`ApiClient::get`], [`ApiClient::post`],
//! …) return `(status, body)` for requests the typed ones cannot express (malformed bodies, query
//! strings under test, endpoints without a method here).

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stayopen_shared::alerts::{
    AlertView, ChannelView, CreateAlertComment, CreateChannel, CreateMaintenanceWindow,
    CreateRoutingRule, CreatedChannel, MaintenanceWindowView, NotificationView, PracticeSchedule,
    PracticeScheduleView, ResolveAlert, RoutingRuleView,
};
use stayopen_shared::api::{
    ApiError, ApiTokenView, ApplianceConfiguration, ApplianceMetrics, ApplianceView, AuditEntry,
    ClaimEnrollRequest, ClaimSerial, ClaimedSerialView, CommandView, CreateApiToken, CreateCommand,
    CreateEnrollmentToken, CreatePractice, CreateSite, CreateUser, CreatedApiToken, CurrentUser,
    DeviceIdentityView, EnrollRequest, EnrollResponse, EnrollmentToken, EnrollmentTokenView,
    EventRecord, Fleet, FleetTotals, LoginRequest, LoginResponse, Page, PolicyLayer,
    PolicyPreviewRequest, PracticeSummary, RefreshRequest, RenewRequest, SecuritySettings,
    SiteView, StreamTicket, TelemetryRecord, TotpCode, TotpSetup, UpdateUser, UserView,
};
use stayopen_shared::policy::EffectivePolicy;
use stayopen_shared::{ApplianceId, PracticeId};
use uuid::Uuid;

/// A request the cloud did not answer as the endpoint documents success: the status, and the
/// body when it was JSON.
#[derive(Debug, Clone)]
pub struct ApiStatus {
    pub status: u16,
    pub body: Option<serde_json::Value>,
}

impl ApiStatus {
    /// The stable error code of an error answer (`{"error": {"code": …}}`).
    pub fn code(&self) -> Option<String> {
        self.error().map(|e| e.error.code)
    }

    pub fn error(&self) -> Option<ApiError> {
        self.body
            .clone()
            .and_then(|b| serde_json::from_value(b).ok())
    }
}

pub type ApiResult<T> = Result<T, ApiStatus>;

/// One caller of the API: a base URL (`http://host:port`) and, unless anonymous, a bearer token.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(http: reqwest::Client, base_url: &str, token: Option<&str>) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        }
    }

    /// The same cloud as another caller.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same cloud without a token.
    pub fn anonymous(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn send(&self, method: Method, path: &str, body: Option<String>) -> (u16, Vec<u8>) {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        (status, bytes.to_vec())
    }

    /// Any request, raw: the status and the body when it parses as `T`.
    pub async fn raw<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> (u16, Option<T>) {
        let body = body.map(|b| serde_json::to_string(b).expect("a JSON body"));
        let (status, bytes) = self.send(method, path, body).await;
        (status, serde_json::from_slice(&bytes).ok())
    }

    /// A GET whose answer is text (a CSV export): the status, the content type and the body.
    pub async fn text(&self, path: &str) -> (u16, String, String) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: reading the body: {e}"));
        (status, content_type, body)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> (u16, Option<T>) {
        self.raw::<(), T>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> (u16, Option<T>) {
        self.raw(Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> (u16, Option<T>) {
        self.raw(Method::PUT, path, Some(body)).await
    }

    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> (u16, Option<T>) {
        self.raw(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Option<serde_json::Value>) {
        self.raw::<(), _>(Method::DELETE, path, None).await
    }

    /// A typed call: `T` when the answer has status `success` (an empty body reads as JSON `null`,
    /// so `()` for 204), the status and body otherwise.
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        success: u16,
    ) -> ApiResult<T> {
        let body = body.map(|b| serde_json::to_string(b).expect("a JSON body"));
        let (status, bytes) = self.send(method.clone(), path, body).await;
        let json: Option<serde_json::Value> = if bytes.is_empty() {
            Some(serde_json::Value::Null)
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if status != success {
            return Err(ApiStatus { status, body: json });
        }
        let json = json.unwrap_or_else(|| {
            panic!(
                "{method} {path}: {status} with a body that is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        let value = serde_json::from_value(json.clone()).unwrap_or_else(|e| {
            panic!("{method} {path}: {status} with an unexpected body ({e}): {json}")
        });
        Ok(value)
    }

    async fn get_ok<T: DeserializeOwned>(&self, path: &str) -> ApiResult<T> {
        self.call::<(), T>(Method::GET, path, None, 200).await
    }

    async fn post_as<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        success: u16,
    ) -> ApiResult<T> {
        self.call(Method::POST, path, Some(body), success).await
    }

    /// A POST without a body (an action on a resource).
    async fn act<T: DeserializeOwned>(&self, path: &str, success: u16) -> ApiResult<T> {
        self.call::<(), T>(Method::POST, path, None, success).await
    }

    async fn put_ok<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ApiResult<T> {
        self.call(Method::PUT, path, Some(body), 200).await
    }

    async fn delete_ok(&self, path: &str) -> ApiResult<()> {
        self.call::<(), ()>(Method::DELETE, path, None, 204).await
    }

    // -- Sessions and the caller ----------------------------------------------------------------

    pub async fn login(&self, email: &str, password: &str) -> ApiResult<LoginResponse> {
        self.login_with(&LoginRequest {
            email: email.into(),
            password: password.into(),
            totp_code: None,
            msp: None,
        })
        .await
    }

    pub async fn login_with(&self, request: &LoginRequest) -> ApiResult<LoginResponse> {
        self.post_as("/api/v1/auth/login", request, 200).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> ApiResult<LoginResponse> {
        let body = RefreshRequest {
            refresh_token: refresh_token.into(),
        };
        self.post_as("/api/v1/auth/refresh", &body, 200).await
    }

    pub async fn logout(&self, refresh_token: &str) -> ApiResult<()> {
        let body = RefreshRequest {
            refresh_token: refresh_token.into(),
        };
        self.post_as("/api/v1/auth/logout", &body, 204).await
    }

    pub async fn totp_setup(&self) -> ApiResult<TotpSetup> {
        self.act("/api/v1/auth/totp/setup", 200).await
    }

    pub async fn totp_confirm(&self, code: &TotpCode) -> ApiResult<()> {
        self.post_as("/api/v1/auth/totp/confirm", code, 204).await
    }

    pub async fn me(&self) -> ApiResult<CurrentUser> {
        self.get_ok("/api/v1/me").await
    }

    /// A single-use ticket for the live-update stream.
    pub async fn stream_ticket(&self) -> ApiResult<StreamTicket> {
        self.act("/api/v1/stream/tickets", 200).await
    }

    pub async fn security_settings(&self) -> ApiResult<SecuritySettings> {
        self.get_ok("/api/v1/settings/security").await
    }

    pub async fn set_security_settings(
        &self,
        settings: &SecuritySettings,
    ) -> ApiResult<SecuritySettings> {
        self.put_ok("/api/v1/settings/security", settings).await
    }

    // -- Users and API tokens -------------------------------------------------------------------

    /// `query` is the query string without `?` (`limit=500`), or empty.
    pub async fn users(&self, query: &str) -> ApiResult<Page<UserView>> {
        self.get_ok(&with_query("/api/v1/users", query)).await
    }

    pub async fn user(&self, id: Uuid) -> ApiResult<UserView> {
        self.get_ok(&format!("/api/v1/users/{id}")).await
    }

    pub async fn create_user(&self, user: &CreateUser) -> ApiResult<UserView> {
        self.post_as("/api/v1/users", user, 201).await
    }

    pub async fn update_user(&self, id: Uuid, update: &UpdateUser) -> ApiResult<UserView> {
        self.call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(update),
            200,
        )
        .await
    }

    pub async fn delete_user(&self, id: Uuid) -> ApiResult<()> {
        self.delete_ok(&format!("/api/v1/users/{id}")).await
    }

    pub async fn api_tokens(&self) -> ApiResult<Page<ApiTokenView>> {
        self.get_ok("/api/v1/api-tokens").await
    }

    pub async fn create_api_token(&self, token: &CreateApiToken) -> ApiResult<CreatedApiToken> {
        self.post_as("/api/v1/api-tokens", token, 201).await
    }

    pub async fn delete_api_token(&self, id: Uuid) -> ApiResult<()> {
        self.delete_ok(&format!("/api/v1/api-tokens/{id}")).await
    }

    // -- The fleet ------------------------------------------------------------------------------

    pub async fn fleet(&self) -> ApiResult<Fleet> {
        self.get_ok("/api/v1/fleet").await
    }

    pub async fn fleet_totals(&self) -> ApiResult<FleetTotals> {
        self.get_ok("/api/v1/fleet/totals").await
    }

    pub async fn practices(&self, query: &str) -> ApiResult<Page<PracticeSummary>> {
        self.get_ok(&with_query("/api/v1/practices", query)).await
    }

    pub async fn practice(&self, id: PracticeId) -> ApiResult<PracticeSummary> {
        self.get_ok(&format!("/api/v1/practices/{id}")).await
    }

    pub async fn create_practice(&self, practice: &CreatePractice) -> ApiResult<PracticeSummary> {
        self.post_as("/api/v1/practices", practice, 201).await
    }

    pub async fn sites(&self, practice: PracticeId) -> ApiResult<Page<SiteView>> {
        self.get_ok(&format!("/api/v1/practices/{practice}/sites"))
            .await
    }

    pub async fn create_site(
        &self,
        practice: PracticeId,
        site: &CreateSite,
    ) -> ApiResult<SiteView> {
        self.post_as(&format!("/api/v1/practices/{practice}/sites"), site, 201)
            .await
    }

    pub async fn appliances(&self, query: &str) -> ApiResult<Page<ApplianceView>> {
        self.get_ok(&with_query("/api/v1/appliances", query)).await
    }

    pub async fn appliance(&self, id: ApplianceId) -> ApiResult<ApplianceView> {
        self.get_ok(&format!("/api/v1/appliances/{id}")).await
    }

    pub async fn appliance_configuration(
        &self,
        id: ApplianceId,
    ) -> ApiResult<ApplianceConfiguration> {
        self.get_ok(&format!("/api/v1/appliances/{id}/configuration"))
            .await
    }

    pub async fn appliance_events(
        &self,
        id: ApplianceId,
        query: &str,
    ) -> ApiResult<Page<EventRecord>> {
        self.get_ok(&with_query(
            &format!("/api/v1/appliances/{id}/events"),
            query,
        ))
        .await
    }

    pub async fn appliance_telemetry(
        &self,
        id: ApplianceId,
        query: &str,
    ) -> ApiResult<Page<TelemetryRecord>> {
        self.get_ok(&with_query(
            &format!("/api/v1/appliances/{id}/telemetry"),
            query,
        ))
        .await
    }

    /// `period`: `hour`, `day`, `week` or `month`.
    pub async fn appliance_metrics(
        &self,
        id: ApplianceId,
        period: &str,
    ) -> ApiResult<ApplianceMetrics> {
        self.get_ok(&format!("/api/v1/appliances/{id}/metrics?period={period}"))
            .await
    }

    pub async fn appliance_identity(&self, id: ApplianceId) -> ApiResult<DeviceIdentityView> {
        self.get_ok(&format!("/api/v1/appliances/{id}/identity"))
            .await
    }

    pub async fn revoke_appliance(&self, id: ApplianceId) -> ApiResult<ApplianceView> {
        self.act(&format!("/api/v1/appliances/{id}/revoke"), 200)
            .await
    }

    pub async fn restore_appliance(&self, id: ApplianceId) -> ApiResult<DeviceIdentityView> {
        self.act(&format!("/api/v1/appliances/{id}/restore"), 200)
            .await
    }

    pub async fn approve_reenrollment(&self, id: ApplianceId) -> ApiResult<DeviceIdentityView> {
        self.act(
            &format!("/api/v1/appliances/{id}/approve-reenrollment"),
            200,
        )
        .await
    }

    // -- Policy ---------------------------------------------------------------------------------

    pub async fn policy(&self) -> ApiResult<PolicyLayer> {
        self.get_ok("/api/v1/policy").await
    }

    /// Sets the MSP's layer; `overrides` is a `PolicyOverrides` or its JSON.
    pub async fn set_policy(
        &self,
        overrides: &(impl Serialize + ?Sized),
    ) -> ApiResult<PolicyLayer> {
        self.put_ok("/api/v1/policy", overrides).await
    }

    pub async fn practice_policy(&self, practice: PracticeId) -> ApiResult<PolicyLayer> {
        self.get_ok(&format!("/api/v1/practices/{practice}/policy"))
            .await
    }

    pub async fn set_practice_policy(
        &self,
        practice: PracticeId,
        overrides: &(impl Serialize + ?Sized),
    ) -> ApiResult<PolicyLayer> {
        self.put_ok(&format!("/api/v1/practices/{practice}/policy"), overrides)
            .await
    }

    pub async fn appliance_policy(&self, id: ApplianceId) -> ApiResult<PolicyLayer> {
        self.get_ok(&format!("/api/v1/appliances/{id}/policy"))
            .await
    }

    pub async fn set_appliance_policy(
        &self,
        id: ApplianceId,
        overrides: &(impl Serialize + ?Sized),
    ) -> ApiResult<PolicyLayer> {
        self.put_ok(&format!("/api/v1/appliances/{id}/policy"), overrides)
            .await
    }

    pub async fn preview_policy(
        &self,
        request: &PolicyPreviewRequest,
    ) -> ApiResult<EffectivePolicy> {
        self.post_as("/api/v1/policy/preview", request, 200).await
    }

    // -- Commands -------------------------------------------------------------------------------

    pub async fn create_command(
        &self,
        appliance: ApplianceId,
        command: &CreateCommand,
    ) -> ApiResult<CommandView> {
        self.post_as(
            &format!("/api/v1/appliances/{appliance}/commands"),
            command,
            201,
        )
        .await
    }

    pub async fn commands(&self, appliance: ApplianceId) -> ApiResult<Page<CommandView>> {
        self.get_ok(&format!("/api/v1/appliances/{appliance}/commands"))
            .await
    }

    pub async fn command(&self, id: Uuid) -> ApiResult<CommandView> {
        self.get_ok(&format!("/api/v1/commands/{id}")).await
    }

    // -- Enrolment ------------------------------------------------------------------------------

    pub async fn enrollment_tokens(
        &self,
        practice: PracticeId,
    ) -> ApiResult<Page<EnrollmentTokenView>> {
        self.get_ok(&format!("/api/v1/practices/{practice}/enrollment-tokens"))
            .await
    }

    pub async fn create_enrollment_token(
        &self,
        practice: PracticeId,
        token: &CreateEnrollmentToken,
    ) -> ApiResult<EnrollmentToken> {
        self.post_as(
            &format!("/api/v1/practices/{practice}/enrollment-tokens"),
            token,
            201,
        )
        .await
    }

    pub async fn revoke_enrollment_token(&self, id: Uuid) -> ApiResult<EnrollmentTokenView> {
        self.act(&format!("/api/v1/enrollment-tokens/{id}/revoke"), 200)
            .await
    }

    pub async fn enroll(&self, request: &EnrollRequest) -> ApiResult<EnrollResponse> {
        self.post_as("/api/v1/enroll", request, 200).await
    }

    pub async fn enroll_claimed(&self, request: &ClaimEnrollRequest) -> ApiResult<EnrollResponse> {
        self.post_as("/api/v1/enroll/claim", request, 200).await
    }

    pub async fn renew(&self, request: &RenewRequest) -> ApiResult<EnrollResponse> {
        self.post_as("/api/v1/enroll/renew", request, 200).await
    }

    pub async fn claimed_serials(&self) -> ApiResult<Page<ClaimedSerialView>> {
        self.get_ok("/api/v1/claimed-serials").await
    }

    pub async fn claim_serial(
        &self,
        practice: PracticeId,
        claim: &ClaimSerial,
    ) -> ApiResult<ClaimedSerialView> {
        self.post_as(
            &format!("/api/v1/practices/{practice}/claimed-serials"),
            claim,
            201,
        )
        .await
    }

    pub async fn delete_claimed_serial(&self, serial: &str) -> ApiResult<()> {
        self.delete_ok(&format!("/api/v1/claimed-serials/{serial}"))
            .await
    }

    // -- Alerts and notifications ---------------------------------------------------------------

    pub async fn alerts(&self, query: &str) -> ApiResult<Page<AlertView>> {
        self.get_ok(&with_query("/api/v1/alerts", query)).await
    }

    pub async fn alert(&self, id: Uuid) -> ApiResult<AlertView> {
        self.get_ok(&format!("/api/v1/alerts/{id}")).await
    }

    pub async fn acknowledge_alert(&self, id: Uuid) -> ApiResult<AlertView> {
        self.act(&format!("/api/v1/alerts/{id}/acknowledge"), 200)
            .await
    }

    pub async fn comment_alert(
        &self,
        id: Uuid,
        comment: &CreateAlertComment,
    ) -> ApiResult<AlertView> {
        self.post_as(&format!("/api/v1/alerts/{id}/comments"), comment, 201)
            .await
    }

    pub async fn resolve_alert(&self, id: Uuid, resolve: &ResolveAlert) -> ApiResult<AlertView> {
        self.post_as(&format!("/api/v1/alerts/{id}/resolve"), resolve, 200)
            .await
    }

    pub async fn notification_channels(&self) -> ApiResult<Page<ChannelView>> {
        self.get_ok("/api/v1/notification-channels").await
    }

    pub async fn create_channel(&self, channel: &CreateChannel) -> ApiResult<CreatedChannel> {
        self.post_as("/api/v1/notification-channels", channel, 201)
            .await
    }

    pub async fn delete_channel(&self, id: Uuid) -> ApiResult<()> {
        self.delete_ok(&format!("/api/v1/notification-channels/{id}"))
            .await
    }

    pub async fn routing_rules(&self) -> ApiResult<Page<RoutingRuleView>> {
        self.get_ok("/api/v1/routing-rules").await
    }

    pub async fn create_routing_rule(
        &self,
        rule: &CreateRoutingRule,
    ) -> ApiResult<RoutingRuleView> {
        self.post_as("/api/v1/routing-rules", rule, 201).await
    }

    pub async fn delete_routing_rule(&self, id: Uuid) -> ApiResult<()> {
        self.delete_ok(&format!("/api/v1/routing-rules/{id}")).await
    }

    pub async fn notifications(&self, query: &str) -> ApiResult<Page<NotificationView>> {
        self.get_ok(&with_query("/api/v1/notifications", query))
            .await
    }

    pub async fn maintenance_windows(&self) -> ApiResult<Page<MaintenanceWindowView>> {
        self.get_ok("/api/v1/maintenance-windows").await
    }

    pub async fn create_maintenance_window(
        &self,
        window: &CreateMaintenanceWindow,
    ) -> ApiResult<MaintenanceWindowView> {
        self.post_as("/api/v1/maintenance-windows", window, 201)
            .await
    }

    pub async fn delete_maintenance_window(&self, id: Uuid) -> ApiResult<()> {
        self.delete_ok(&format!("/api/v1/maintenance-windows/{id}"))
            .await
    }

    pub async fn schedule(&self, practice: PracticeId) -> ApiResult<PracticeScheduleView> {
        self.get_ok(&format!("/api/v1/practices/{practice}/schedule"))
            .await
    }

    pub async fn set_schedule(
        &self,
        practice: PracticeId,
        schedule: &PracticeSchedule,
    ) -> ApiResult<PracticeScheduleView> {
        self.put_ok(&format!("/api/v1/practices/{practice}/schedule"), schedule)
            .await
    }

    // -- Audit ----------------------------------------------------------------------------------

    pub async fn audit_log(&self, query: &str) -> ApiResult<Page<AuditEntry>> {
        self.get_ok(&with_query("/api/v1/audit-log", query)).await
    }
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}
