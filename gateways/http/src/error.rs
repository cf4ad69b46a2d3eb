//! `ApiError`: the one mapping from everything that can go wrong at the HTTP
//! edge to a status code and the JSON body `{"error": {"code", "message"}}`.
//!
//! Internal details (store failures, panics) are logged with `tracing` where
//! they are turned into [`ApiError::Internal`] and never sent to the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use wxcm_commands::admin_users::AdminUserError;
use wxcm_commands::auth::AuthError;
use wxcm_commands::members::MemberOpError;
use wxcm_commands::pay_flows::PayFlowError;
use wxcm_commands::payments::PaymentOpError;
use wxcm_commands::ports::{PortError, Role, RouteError};
use wxcm_commands::tenants::TenantOpError;
use wxcm_commands::wechat::WechatOpError;
use wxcm_domain::member::MemberError;
use wxcm_domain::tenant::TenantError;

use crate::permissions::Permission;
use crate::wechat_edge::OutboundError;

/// Seconds a client is told to wait after losing a race on a busy member.
pub const CONTENTION_RETRY_AFTER_SECS: u64 = 1;
/// Seconds a client is told to wait after a request timed out.
pub const TIMEOUT_RETRY_AFTER_SECS: u64 = 1;
/// `Retry-After` of a transient database or broker failure (a restart takes seconds).
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code (`insufficient_balance`, `invalid_amount`, ...).
    pub code: String,
    /// Human-readable explanation; never contains internal details.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed headers, path segments, query strings or JSON syntax.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no usable bearer token.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// 401: login refused; the same answer whether or not the user exists.
    #[error("invalid tenant, username or password")]
    InvalidCredentials,
    /// 401: a member's sign-in refused: WeChat did not take the OAuth code.
    #[error("the WeChat sign-in code was refused (used, expired or never issued): sign in again")]
    InvalidOauthCode,
    /// 403: the session's role does not grant the permission.
    #[error("the {} role may not {}", role.as_str(), permission.describe())]
    Forbidden { role: Role, permission: Permission },
    /// 404: unknown (or another tenant's) member, tenant or route.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 409: the request is well formed but conflicts with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413: the body is larger than `HttpSettings::body_bytes_max`.
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    /// 415: a JSON body without `Content-Type: application/json`.
    #[error("expected a request with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: a well-formed body whose values are not acceptable.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// 429: too many login attempts.
    #[error("too many attempts, retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 429 without `Retry-After`: the quota of a service we call (WeChat's daily
    /// calls) is used up.
    #[error("{message}")]
    QuotaExhausted { code: &'static str, message: String },
    /// 502: a service we call (WeChat) failed or did not answer; the detail was logged.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    /// 503 without `Retry-After`: what the route needs is not configured on this
    /// node (no outbound WeChat client, no public base URL, no third-party platform).
    #[error("{message}")]
    NotConfigured { code: &'static str, message: String },
    /// 503: other writers kept winning the race on this member.
    #[error("the member is busy, try again")]
    Contention,
    /// 503: the request did not finish within the configured timeout.
    #[error("the request took too long, try again with the same idempotency key")]
    Timeout,
    /// 503: the database or broker could not be reached or refused for now
    /// (connection lost, shutting down, serialization failures past the retry
    /// budget). A write may or may not have happened: the client retries with
    /// the same idempotency key, which replays it if it did. Detail logged.
    #[error("the service is unavailable for a moment; the outcome is unknown: retry the same request with the same Idempotency-Key")]
    Unavailable,
    /// 500: anything internal; the detail was logged, never sent.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid { code, message: message.into() }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound { code, message: message.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict { code, message: message.into() }
    }

    /// Logs the detail (never returned) and hides it behind a 500.
    pub fn internal(context: &'static str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(context, error = %detail, "internal error");
        ApiError::Internal
    }

    /// Logs the detail (never returned) and answers 503 "outcome unknown".
    pub fn unavailable(context: &'static str, detail: &dyn std::fmt::Display) -> Self {
        tracing::warn!(context, error = %detail, "infrastructure unavailable");
        ApiError::Unavailable
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated | ApiError::InvalidCredentials | ApiError::InvalidOauthCode => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::QuotaExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Contention | ApiError::Timeout | ApiError::Unavailable | ApiError::NotConfigured { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Invalid { code, .. }
            | ApiError::QuotaExhausted { code, .. }
            | ApiError::BadGateway { code, .. }
            | ApiError::NotConfigured { code, .. } => code,
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::InvalidOauthCode => "invalid_oauth_code",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Contention => "contention",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Contention => Some(CONTENTION_RETRY_AFTER_SECS),
            ApiError::Timeout => Some(TIMEOUT_RETRY_AFTER_SECS),
            ApiError::Unavailable => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code().to_owned(), message: self.to_string() } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Domain rejections. 409 when the request is valid but the member's current
/// state refuses it (it could succeed later or against another state);
/// 422 when the request names something that does not exist or can never apply.
pub fn member_rejection(e: &MemberError) -> ApiError {
    let message = e.to_string();
    match e {
        MemberError::NotRegistered => ApiError::not_found("member_not_found", "member not found"),
        MemberError::AlreadyRegistered => ApiError::conflict("already_registered", message),
        MemberError::InsufficientBalance { .. } => ApiError::conflict("insufficient_balance", message),
        MemberError::InsufficientPoints { .. } => ApiError::conflict("insufficient_points", message),
        MemberError::RefundExceedsCharge { .. } => ApiError::conflict("refund_exceeds_charge", message),
        MemberError::SameCardLevel(_) => ApiError::conflict("same_card_level", message),
        MemberError::TooManyLots => ApiError::conflict("too_many_lots", message),
        MemberError::TooManyHolds => ApiError::conflict("too_many_holds", message),
        MemberError::HoldExists(_) => ApiError::conflict("hold_exists", message),
        MemberError::Overflow => ApiError::invalid("overflow", message),
        MemberError::InvalidExpiry => ApiError::invalid("invalid_expiry", message),
        // The ledger as it stands has no such charge (a later charge may take the sequence): state, like
        // `refund_exceeds_charge`, not a malformed request.
        MemberError::ChargeNotFound(_) => ApiError::conflict("charge_not_found", message),
        MemberError::HoldNotFound(_) => ApiError::invalid("hold_not_found", message),
        MemberError::SelfReferral => ApiError::invalid("self_referral", message),
        MemberError::RechargeNotFound(_) => ApiError::invalid("recharge_not_found", message),
        MemberError::ReversalExceedsRecharge { .. } => ApiError::conflict("reversal_exceeds_recharge", message),
        MemberError::RefundNoConflict(_) => ApiError::conflict("refund_no_reused", message),
        MemberError::TooManyReversals => ApiError::conflict("too_many_reversals", message),
        MemberError::InitialPointsGranted => ApiError::conflict("initial_points_granted", message),
        // The tenant's catalog as it stands has no such level (an edit may add it).
        MemberError::UnknownCardLevel(_) => ApiError::conflict("unknown_card_level", message),
        MemberError::PurchaseRefundExceedsPaid { .. } => ApiError::conflict("refund_exceeds_paid", message),
    }
}

pub(crate) fn idempotency_key_reused() -> ApiError {
    ApiError::conflict("idempotency_key_reused", "this idempotency key was already used with a different request")
}

pub(crate) fn unknown_tenant(detail: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %detail, "request for a tenant without a shard");
    ApiError::not_found("tenant_not_found", "tenant not found")
}

/// A tenant without a shard (on read-model routes).
impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        unknown_tenant(&e)
    }
}

/// A failed read-model query (on read-model routes): logged, 503 when the
/// database is unreachable for now, else 500.
impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            ApiError::unavailable("read model", &e)
        } else {
            ApiError::internal("read model", &e)
        }
    }
}

impl From<MemberOpError> for ApiError {
    fn from(e: MemberOpError) -> Self {
        match e {
            MemberOpError::NotFound => ApiError::not_found("member_not_found", "member not found"),
            MemberOpError::Rejected(d) => member_rejection(&d),
            MemberOpError::IdempotencyMismatch => idempotency_key_reused(),
            MemberOpError::Contention => ApiError::Contention,
            MemberOpError::Route(r) => unknown_tenant(&r),
            MemberOpError::Infra(detail) => ApiError::internal("member operation", &detail),
            MemberOpError::Unavailable(detail) => ApiError::unavailable("member operation", &detail),
        }
    }
}

impl From<wxcm_commands::ports::MemberAuditError> for ApiError {
    fn from(e: wxcm_commands::ports::MemberAuditError) -> Self {
        use wxcm_commands::ports::MemberAuditError as E;
        match e {
            E::NotFound => ApiError::not_found("member_not_found", "member not found"),
            E::TooLong => ApiError::conflict("stream_too_long", e.to_string()),
            E::Route(r) => unknown_tenant(&r),
            E::Port(p) if p.is_transient() => ApiError::unavailable("member audit", &p),
            E::Port(p) => ApiError::internal("member audit", &p),
        }
    }
}

impl From<wxcm_commands::ports::DrawAuditError> for ApiError {
    fn from(e: wxcm_commands::ports::DrawAuditError) -> Self {
        use wxcm_commands::ports::DrawAuditError as E;
        match e {
            E::NotFound => ApiError::not_found("campaign_not_found", "campaign not found"),
            E::PeriodNotDrawn(_) => ApiError::conflict("period_not_drawn", e.to_string()),
            E::TooLong => ApiError::conflict("stream_too_long", e.to_string()),
            E::Route(r) => unknown_tenant(&r),
            E::Port(p) if p.is_transient() => ApiError::unavailable("draw audit", &p),
            E::Port(p) => ApiError::internal("draw audit", &p),
        }
    }
}

impl From<TenantOpError> for ApiError {
    fn from(e: TenantOpError) -> Self {
        match e {
            TenantOpError::NotFound => ApiError::not_found("tenant_not_found", "tenant not found"),
            TenantOpError::Rejected(d) => {
                let message = d.to_string();
                match d {
                    TenantError::NotFound => ApiError::not_found("tenant_not_found", message),
                    TenantError::AlreadyExists => ApiError::conflict("tenant_exists", message),
                    TenantError::InvalidName => ApiError::invalid("invalid_name", message),
                    TenantError::TooManyAccounts => ApiError::conflict("too_many_accounts", message),
                    TenantError::AccountNotBound(_) => ApiError::not_found("account_not_bound", message),
                    TenantError::InvalidPointsRules => ApiError::invalid("invalid_points_rules", message),
                    TenantError::BoundDirectly(_) | TenantError::BoundAsComponent(_) => {
                        ApiError::conflict("appid_in_use", message)
                    }
                    TenantError::ComponentAccountNotBound(_) => {
                        ApiError::not_found("component_account_not_bound", message)
                    }
                    TenantError::CardLevelsRevision { .. } => ApiError::conflict("card_levels_changed", message),
                }
            }
            // Messages of `Invalid` name the field and its rule, never its value.
            TenantOpError::Invalid(message) => ApiError::invalid("invalid_account", message),
            TenantOpError::IdempotencyMismatch => idempotency_key_reused(),
            TenantOpError::Contention => ApiError::Contention,
            TenantOpError::Route(r) => unknown_tenant(&r),
            TenantOpError::Infra(detail) => ApiError::internal("tenant operation", &detail),
            TenantOpError::Unavailable(detail) => ApiError::unavailable("tenant operation", &detail),
        }
    }
}

/// Outside login (which answers every refusal with `InvalidCredentials`).
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => ApiError::InvalidCredentials,
            AuthError::Invalid(message) => ApiError::invalid("invalid_input", message),
            AuthError::UsernameTaken => ApiError::conflict("username_taken", "username already exists"),
            AuthError::Route(r) => unknown_tenant(&r),
            AuthError::Infra(detail) => ApiError::internal("authentication", &detail),
            AuthError::Unavailable(detail) => ApiError::unavailable("authentication", &detail),
        }
    }
}

impl From<AdminUserError> for ApiError {
    fn from(e: AdminUserError) -> Self {
        let message = e.to_string();
        match e {
            AdminUserError::InvalidUsername(_) => ApiError::invalid("invalid_username", message),
            AdminUserError::InvalidPassword(_) => ApiError::invalid("invalid_password", message),
            // The password given is not the user's password now (it may have changed a moment ago): a state
            // the request does not fit, like every 409; never 401, which tells a client its session is gone.
            AdminUserError::WrongPassword => ApiError::conflict("wrong_current_password", message),
            AdminUserError::NotFound => ApiError::not_found("admin_user_not_found", message),
            AdminUserError::UsernameTaken => ApiError::conflict("username_taken", message),
            AdminUserError::TooManyUsers => ApiError::conflict("too_many_admin_users", message),
            AdminUserError::LastOwner => ApiError::conflict("last_owner", message),
            AdminUserError::IdempotencyMismatch => idempotency_key_reused(),
            AdminUserError::Route(r) => unknown_tenant(&r),
            AdminUserError::Infra(detail) => ApiError::internal("admin user operation", &detail),
            AdminUserError::Unavailable(detail) => ApiError::unavailable("admin user operation", &detail),
        }
    }
}

impl From<PaymentOpError> for ApiError {
    fn from(e: PaymentOpError) -> Self {
        match e {
            PaymentOpError::NotFound => ApiError::not_found("payment_not_found", "payment order not found"),
            PaymentOpError::Rejected(d) => ApiError::conflict("payment_rejected", d.to_string()),
            PaymentOpError::Invalid(m) => ApiError::invalid("invalid_payment", m),
            PaymentOpError::IdempotencyMismatch => {
                ApiError::conflict("idempotency_key_reused", "idempotency key was already used with another request")
            }
            PaymentOpError::Contention => ApiError::Contention,
            PaymentOpError::Route(r) => ApiError::not_found("tenant_not_found", r.to_string()),
            PaymentOpError::Infra(detail) => ApiError::internal("payment operation", &detail),
            PaymentOpError::Unavailable(detail) => ApiError::unavailable("payment operation", &detail),
        }
    }
}

/// The member API's recharge and session flows.
impl From<PayFlowError> for ApiError {
    fn from(e: PayFlowError) -> Self {
        match e {
            PayFlowError::Refused(m) => ApiError::invalid("refused", m),
            PayFlowError::Retry(m) => ApiError::internal("payment flow", &m),
            PayFlowError::KeyReused => idempotency_key_reused(),
            PayFlowError::UnknownAccount(m) => ApiError::not_found("account_not_found", m),
            // A refused sign-in, as a refused admin login answers: the credential (the code) is not good.
            PayFlowError::CodeRefused(why) => {
                tracing::info!(why, "oauth code refused");
                ApiError::InvalidOauthCode
            }
        }
    }
}

/// WeChat settings and referral use cases.
impl From<WechatOpError> for ApiError {
    fn from(e: WechatOpError) -> Self {
        match e {
            WechatOpError::UnknownAccount(appid) => {
                ApiError::not_found("account_not_bound", format!("official account {appid} is not bound"))
            }
            WechatOpError::Invalid(message) => ApiError::invalid("invalid_input", message),
            WechatOpError::Member(m) => m.into(),
            WechatOpError::Route(r) => r.into(),
            WechatOpError::Infra(detail) => ApiError::internal("wechat operation", &detail),
            WechatOpError::Unavailable(detail) => ApiError::unavailable("wechat operation", &detail),
        }
    }
}

/// A failed call to WeChat (admin WeChat routes, referral pages). WeChat's own
/// refusal is passed on; a failure to reach it is logged and answered 502.
impl From<OutboundError> for ApiError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::Unavailable(message) => ApiError::NotConfigured { code: "wechat_not_configured", message },
            OutboundError::Rejected(message) => ApiError::invalid("wechat_rejected", message),
            OutboundError::QuotaExhausted => ApiError::QuotaExhausted {
                code: "wechat_quota_exhausted",
                message: "WeChat's daily quota is used up".into(),
            },
            OutboundError::Failed(detail) => {
                tracing::warn!(error = %detail, "wechat call failed");
                ApiError::BadGateway {
                    code: "wechat_unavailable",
                    message: "WeChat did not answer; try again later".into(),
                }
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid("invalid_body", rejection.body_text()),
            _ => ApiError::bad_request("malformed_json", rejection.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_code(e: impl Into<ApiError>) -> (u16, &'static str) {
        let e = e.into();
        (e.status().as_u16(), e.code())
    }

    #[test]
    fn transient_failures_are_503_with_retry_after_and_an_unknown_outcome() {
        for e in [
            ApiError::from(MemberOpError::Unavailable("connection reset".into())),
            ApiError::from(AuthError::Unavailable("pool timed out".into())),
            ApiError::from(AdminUserError::Unavailable("terminating connection".into())),
            ApiError::from(TenantOpError::Unavailable("x".into())),
            ApiError::from(PaymentOpError::Unavailable("x".into())),
            ApiError::from(WechatOpError::Unavailable("x".into())),
        ] {
            assert_eq!((e.status().as_u16(), e.code()), (503, "unavailable"));
            let message = e.body().error.message;
            assert!(message.contains("unknown") && message.contains("Idempotency-Key"), "{message}");
            assert!(!message.contains("reset") && !message.contains("pool"), "no detail leaks: {message}");
            let response = e.into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        // A read-model query failing the same way.
        let port = PortError::new(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(status_code(port), (503, "unavailable"));
        assert_eq!(status_code(PortError::msg("undecodable row")), (500, "internal"));
    }

    #[test]
    fn admin_user_errors_map_to_statuses() {
        assert_eq!(status_code(AdminUserError::NotFound), (404, "admin_user_not_found"));
        assert_eq!(status_code(AdminUserError::LastOwner), (409, "last_owner"));
        assert_eq!(status_code(AdminUserError::UsernameTaken), (409, "username_taken"));
        assert_eq!(status_code(AdminUserError::TooManyUsers), (409, "too_many_admin_users"));
        assert_eq!(status_code(AdminUserError::IdempotencyMismatch), (409, "idempotency_key_reused"));
        assert_eq!(status_code(AdminUserError::WrongPassword), (409, "wrong_current_password"));
        assert_eq!(status_code(AdminUserError::InvalidPassword("too short".into())), (422, "invalid_password"));
        assert_eq!(status_code(AdminUserError::Infra("db down".into())), (500, "internal"));
    }

    #[test]
    fn member_operation_errors_map_to_statuses() {
        assert_eq!(status_code(MemberOpError::NotFound), (404, "member_not_found"));
        assert_eq!(status_code(MemberOpError::IdempotencyMismatch), (409, "idempotency_key_reused"));
        assert_eq!(status_code(MemberOpError::Contention), (503, "contention"));
        assert_eq!(status_code(MemberOpError::Route(RouteError::NoShard("acme".into()))), (404, "tenant_not_found"));
        assert_eq!(status_code(MemberOpError::Infra("db down at 10.0.0.1".into())), (500, "internal"));
    }

    #[test]
    fn every_member_rejection_has_a_status() {
        let cases = [
            (MemberError::NotRegistered, 404, "member_not_found"),
            (MemberError::AlreadyRegistered, 409, "already_registered"),
            (MemberError::InsufficientBalance { balance_fen: 1, requested_fen: 2 }, 409, "insufficient_balance"),
            (MemberError::InsufficientPoints { available: 1, requested: 2 }, 409, "insufficient_points"),
            (MemberError::RefundExceedsCharge { refundable_fen: 1, requested_fen: 2 }, 409, "refund_exceeds_charge"),
            (MemberError::SameCardLevel("gold".into()), 409, "same_card_level"),
            (MemberError::TooManyLots, 409, "too_many_lots"),
            (MemberError::TooManyHolds, 409, "too_many_holds"),
            (MemberError::HoldExists("h".into()), 409, "hold_exists"),
            (MemberError::Overflow, 422, "overflow"),
            (MemberError::InvalidExpiry, 422, "invalid_expiry"),
            (MemberError::ChargeNotFound(7), 409, "charge_not_found"),
            (MemberError::HoldNotFound("h".into()), 422, "hold_not_found"),
        ];
        for (error, status, code) in cases {
            assert_eq!(status_code(MemberOpError::Rejected(error.clone())), (status, code), "{error:?}");
        }
    }

    #[test]
    fn tenant_and_auth_errors_map_to_statuses() {
        assert_eq!(status_code(TenantOpError::NotFound), (404, "tenant_not_found"));
        assert_eq!(status_code(TenantOpError::Rejected(TenantError::TooManyAccounts)), (409, "too_many_accounts"));
        assert_eq!(status_code(TenantOpError::Rejected(TenantError::InvalidName)), (422, "invalid_name"));
        assert_eq!(
            status_code(TenantOpError::Rejected(TenantError::AccountNotBound("wx".into()))),
            (404, "account_not_bound")
        );
        assert_eq!(
            status_code(TenantOpError::Invalid("token must be 1..=4096 bytes".into())),
            (422, "invalid_account")
        );
        assert_eq!(status_code(TenantOpError::IdempotencyMismatch), (409, "idempotency_key_reused"));
        assert_eq!(status_code(TenantOpError::Contention), (503, "contention"));
        assert_eq!(status_code(TenantOpError::Infra("secret detail".into())), (500, "internal"));
        assert_eq!(status_code(AuthError::InvalidCredentials), (401, "invalid_credentials"));
        assert_eq!(status_code(AuthError::Infra("x".into())), (500, "internal"));
    }

    #[test]
    fn internal_details_are_never_sent() {
        let e = ApiError::from(MemberOpError::Infra("password=hunter2 host=db1".into()));
        let body = serde_json::to_string(&e.body()).unwrap();
        assert!(!body.contains("hunter2") && !body.contains("db1"), "{body}");
        assert_eq!(e.body().error.message, "internal error");
    }

    #[test]
    fn failed_wechat_calls_have_their_own_answers() {
        let cases = [
            (OutboundError::Unavailable("no outbound WeChat client".into()), 503, "wechat_not_configured"),
            (OutboundError::Rejected("errcode 40013: invalid appid".into()), 422, "wechat_rejected"),
            (OutboundError::QuotaExhausted, 429, "wechat_quota_exhausted"),
            (OutboundError::Failed("connect to 10.0.0.7 refused".into()), 502, "wechat_unavailable"),
        ];
        for (error, status, code) in cases {
            let e = ApiError::from(error);
            assert_eq!((e.status().as_u16(), e.code()), (status, code));
            // A quota or a missing setting is not cured by retrying in a second.
            assert_eq!(e.into_response().headers().get(header::RETRY_AFTER), None);
        }
        let failed = ApiError::from(OutboundError::Failed("connect to 10.0.0.7 refused".into()));
        assert!(!failed.body().error.message.contains("10.0.0.7"));
    }

    #[test]
    fn retry_after_is_set_where_a_retry_helps() {
        for (e, secs) in [
            (ApiError::RateLimited { retry_after_secs: 42 }, Some("42")),
            (ApiError::Contention, Some("1")),
            (ApiError::Timeout, Some("1")),
            (ApiError::Internal, None),
        ] {
            let response = e.into_response();
            assert_eq!(response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), secs);
        }
    }
}
