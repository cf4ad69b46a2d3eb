//! Extractors that parse at the edge and reject with [`ApiError`] (never
//! axum's plain-text rejections): JSON bodies, bounded path segments, query
//! strings, the bearer session with its permission, the idempotency key and
//! the correlation id.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use wxcm_commands::auth::TOKEN_LEN_MAX;
use wxcm_commands::ports::{AdminSession, Role};
use wxcm_commands::CommandContext;
use wxcm_domain::{Actor, AppId, CardNumber, IdempotencyKey, MemberId, OpenId};

use crate::error::ApiError;
use crate::permissions::{allowed, Requires};
use crate::state::AppState;

/// Bytes of one path segment; every id we accept is far shorter.
pub const PATH_PARAM_BYTES_MAX: usize = 128;
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
/// Set to `true` on a response replayed for a repeated idempotency key.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

/// `Json<T>` whose rejections are [`ApiError`]s (400, 413, 415, 422), for
/// bodies that must be one JSON object. serde's derived structs also read a
/// JSON array in field order (`[100, "x", null]` would make a deposit), so
/// anything but an object is refused before `T` sees it.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            axum::body::Bytes::from_request(req, state).await.map_err(|rejection| match rejection.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::bad_request("malformed_json", rejection.body_text()),
            })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("invalid_body", "the body must be a JSON object"));
        }
        // `595.0` is the integer 595 to the document's JSON Schema; serde's integers take only `595`.
        let Json(value) = Json::<T>::from_bytes(&crate::whole_numbers::integers_spelled_plainly(&bytes))?;
        Ok(ApiJson(value))
    }
}

/// `application/json` or any `application/*+json`, as axum's `Json` accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
}

/// `Query<T>` whose rejections are [`ApiError`]s (400).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// A value parsed from the route's single path parameter.
pub trait PathValue: Sized + Send {
    fn parse_segment(s: &str) -> Result<Self, ApiError>;
}

macro_rules! path_value {
    ($ty:ty, $code:literal) => {
        impl PathValue for $ty {
            fn parse_segment(s: &str) -> Result<Self, ApiError> {
                <$ty>::parse(s).map_err(|e| ApiError::bad_request($code, e.to_string()))
            }
        }
    };
}

path_value!(MemberId, "invalid_member_id");
path_value!(CardNumber, "invalid_card_no");
path_value!(OpenId, "invalid_openid");
path_value!(AppId, "invalid_appid");
path_value!(wxcm_domain::coupon::TemplateId, "invalid_template_id");
path_value!(wxcm_domain::coupon::CouponId, "invalid_coupon_id");
path_value!(wxcm_commands::admin_users::Username, "invalid_username");
path_value!(wxcm_domain::distribution::WithdrawalId, "invalid_withdrawal_id");

/// The route's single path parameter, bounded then parsed.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: PathValue> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(ApiPath(parse_path_segment(&raw)?))
    }
}

pub fn parse_path_segment<T: PathValue>(raw: &str) -> Result<T, ApiError> {
    if raw.len() > PATH_PARAM_BYTES_MAX {
        return Err(ApiError::bad_request(
            "invalid_path",
            format!("path parameter longer than {PATH_PARAM_BYTES_MAX} bytes"),
        ));
    }
    T::parse_segment(raw)
}

/// Reverse proxies whose `X-Forwarded-For` is believed (a router extension).
#[derive(Clone, Default)]
pub struct TrustedProxies(pub std::sync::Arc<[ipnet::IpNet]>);

/// `X-Forwarded-For` entries looked at, from the nearest hop back.
const FORWARDED_HOPS_MAX: usize = 16;

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// nearest `X-Forwarded-For` hop that is not one (a client can prepend
/// anything to the header, so only the hops our proxies appended count).
/// None without connect info (in-process callers).
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())?;
    let trusted = parts.extensions.get::<TrustedProxies>().map(|t| t.0.clone()).unwrap_or_default();
    Some(forwarded_client(peer, &parts.headers, &trusted))
}

fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in hops.iter().rev().take(FORWARDED_HOPS_MAX) {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // Garbage from the proxy chain: stop at the last hop we could read.
            Err(_) => return client,
        }
    }
    client
}

pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// The bearer token of `Authorization`, if well formed and bounded.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let ok = scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= TOKEN_LEN_MAX;
    ok.then_some(token)
}

/// A live session whose role grants `P`. 401 without one, 403 without the permission.
pub struct Authorized<P> {
    pub session: AdminSession,
    token: String,
    _permission: PhantomData<P>,
}

impl<P> Authorized<P> {
    /// Staff act as staff; every other role acts as an admin.
    pub fn actor(&self) -> Actor {
        let username = self.session.username.clone();
        match self.session.role {
            Role::Staff => Actor::Staff { username },
            Role::Owner | Role::Manager | Role::Auditor => Actor::Admin { username },
        }
    }

    pub fn context(&self, key: IdempotencyKey, correlation: Correlation) -> CommandContext {
        let mut ctx = CommandContext::new(self.session.tenant_id.clone(), key, self.actor().label());
        ctx.correlation_id = correlation.0;
        ctx
    }

    /// The raw token (only for logout); never log it.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// The session `middleware::require_session` resolved (a request extension).
#[derive(Clone)]
pub struct Session {
    pub session: AdminSession,
    pub token: String,
}

impl<P: Requires> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Behind the session layer the session was resolved once already; a
        // route outside it resolves here, so the check never depends on layering.
        let Session { session, token } = match parts.extensions.get::<Session>() {
            Some(resolved) => resolved.clone(),
            None => {
                let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthenticated)?;
                let session = state.sessions.resolve(token).await?.ok_or(ApiError::Unauthenticated)?;
                Session { session, token: token.to_owned() }
            }
        };
        if let Some(permission) = P::PERMISSION {
            if !allowed(session.role, permission) {
                tracing::info!(
                    tenant = %session.tenant_id,
                    username = %session.username,
                    role = session.role.as_str(),
                    ?permission,
                    "forbidden"
                );
                return Err(ApiError::Forbidden { role: session.role, permission });
            }
        }
        Ok(Authorized { session, token, _permission: PhantomData })
    }
}

/// The `Idempotency-Key` header, required on every mutating route.
pub struct IdempotencyHeader(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_idempotency_key(&parts.headers).map(IdempotencyHeader)
    }
}

pub fn parse_idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .ok_or_else(|| ApiError::bad_request("idempotency_key_missing", "the Idempotency-Key header is required"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("idempotency_key_invalid", "Idempotency-Key must be printable ASCII"))?;
    IdempotencyKey::parse(text).map_err(|e| ApiError::bad_request("idempotency_key_invalid", e.to_string()))
}

/// The request's correlation id (set by the correlation middleware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correlation(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Correlation {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Correlation>().copied().unwrap_or_else(|| Correlation(Uuid::new_v4())))
    }
}

/// `X-Correlation-Id` if present (a UUID), else a fresh one.
pub fn parse_correlation_id(headers: &HeaderMap) -> Result<Uuid, ApiError> {
    match headers.get(CORRELATION_ID_HEADER) {
        None => Ok(Uuid::new_v4()),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .ok_or_else(|| ApiError::bad_request("invalid_correlation_id", "X-Correlation-Id must be a UUID")),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_are_bounded() {
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer acme.abc")])), Some("acme.abc"));
        assert_eq!(bearer_token(&headers(&[("authorization", "bearer acme.abc")])), Some("acme.abc"));
        assert_eq!(bearer_token(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        let at_max = format!("Bearer {}", "t".repeat(TOKEN_LEN_MAX));
        let past_max = format!("Bearer {}", "t".repeat(TOKEN_LEN_MAX + 1));
        assert!(bearer_token(&headers(&[("authorization", &at_max)])).is_some());
        assert!(bearer_token(&headers(&[("authorization", &past_max)])).is_none());
    }

    #[test]
    fn idempotency_keys_are_required_and_validated() {
        let missing = parse_idempotency_key(&HeaderMap::new()).unwrap_err();
        assert_eq!((missing.status().as_u16(), missing.code()), (400, "idempotency_key_missing"));
        let short = parse_idempotency_key(&headers(&[(IDEMPOTENCY_KEY_HEADER, "short")])).unwrap_err();
        assert_eq!((short.status().as_u16(), short.code()), (400, "idempotency_key_invalid"));
        let at_max = "k".repeat(IdempotencyKey::LEN_MAX);
        assert!(parse_idempotency_key(&headers(&[(IDEMPOTENCY_KEY_HEADER, &at_max)])).is_ok());
        let past_max = "k".repeat(IdempotencyKey::LEN_MAX + 1);
        assert!(parse_idempotency_key(&headers(&[(IDEMPOTENCY_KEY_HEADER, &past_max)])).is_err());
    }

    #[test]
    fn correlation_ids_are_uuids() {
        let id = Uuid::new_v4();
        assert_eq!(parse_correlation_id(&headers(&[(CORRELATION_ID_HEADER, &id.to_string())])).unwrap(), id);
        assert!(parse_correlation_id(&headers(&[(CORRELATION_ID_HEADER, "not-a-uuid")])).is_err());
        assert!(parse_correlation_id(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn path_segments_are_bounded_then_parsed() {
        let id = MemberId::new_random();
        assert_eq!(parse_path_segment::<MemberId>(&id.to_string()).unwrap(), id);
        let e = parse_path_segment::<MemberId>("nope").err().unwrap();
        assert_eq!(e.code(), "invalid_member_id");
        let e = parse_path_segment::<OpenId>(&"o".repeat(PATH_PARAM_BYTES_MAX + 1)).err().unwrap();
        assert_eq!(e.code(), "invalid_path");
        let card = CardNumber::from_serial(42).unwrap();
        assert!(parse_path_segment::<CardNumber>(card.as_str()).is_ok());
        assert_eq!(parse_path_segment::<CardNumber>("0000000000x").err().unwrap().code(), "invalid_card_no");
        assert!(parse_path_segment::<AppId>("wx0123456789abcdef").is_ok());
    }
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(forwarded_client(ip("203.0.113.9"), &headers(&["1.2.3.4"]), &trusted), ip("203.0.113.9"));
        assert_eq!(forwarded_client(ip("10.0.0.2"), &headers(&["1.2.3.4"]), &[]), ip("10.0.0.2"));
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8".parse().unwrap(), "192.0.2.7/32".parse().unwrap()];
        // The client prepended a fake hop; our proxies appended the real one and themselves.
        let h = headers(&["6.6.6.6, 198.51.100.4", "192.0.2.7"]);
        assert_eq!(forwarded_client(ip("10.1.2.3"), &h, &trusted), ip("198.51.100.4"));
        // Only trusted hops: the farthest one we saw.
        assert_eq!(forwarded_client(ip("10.1.2.3"), &headers(&["10.9.9.9"]), &trusted), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(forwarded_client(ip("10.1.2.3"), &HeaderMap::new(), &trusted), ip("10.1.2.3"));
        // Unreadable hop: stop there.
        assert_eq!(forwarded_client(ip("10.1.2.3"), &headers(&["1.1.1.1, junk"]), &trusted), ip("10.1.2.3"));
        // IPv6.
        let v6 = ["2001:db8::/32".parse().unwrap()];
        assert_eq!(forwarded_client(ip("2001:db8::1"), &headers(&["2001:db9::5"]), &v6), ip("2001:db9::5"));
    }
}
