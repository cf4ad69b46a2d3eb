//! Errors of the outbound WeChat client and the token center, and the mapping
//! of WeChat's `errcode` values onto them.

/// WeChat's "system busy": retried with backoff.
pub const ERRCODE_BUSY: i64 = -1;
/// Invalid credential / access token.
pub const ERRCODE_INVALID_CREDENTIAL: i64 = 40001;
/// Invalid access token.
pub const ERRCODE_INVALID_ACCESS_TOKEN: i64 = 40014;
/// Access token expired.
pub const ERRCODE_ACCESS_TOKEN_EXPIRED: i64 = 42001;
/// Daily API quota exhausted.
pub const ERRCODE_QUOTA_EXHAUSTED: i64 = 45009;
/// The account is not authorized to call this API.
pub const ERRCODE_API_UNAUTHORIZED: i64 = 48001;
/// The authorizer refresh token is invalid: the merchant must re-authorize.
pub const ERRCODE_BAD_REFRESH_TOKEN: i64 = 61023;

#[derive(Debug, thiserror::Error)]
pub enum WechatError {
    /// Connection, TLS or protocol failure, after the retries.
    #[error("transport error calling wechat: {0}")]
    Transport(String),
    #[error("wechat did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("wechat answered http status {0}")]
    HttpStatus(u16),
    #[error("wechat response exceeds {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("wechat response is not the expected json: {0}")]
    Decode(String),
    /// `errcode -1` on every attempt.
    #[error("wechat stayed busy (errcode -1) for {attempts} attempts")]
    Busy { attempts: u32 },
    /// 45009: not retried, the quota resets the next day.
    #[error("wechat api quota exhausted (45009)")]
    QuotaExhausted,
    /// 40001, 40014, 42001 (still failing after one refresh, or from a token call).
    #[error("wechat rejected the access token (errcode {errcode})")]
    TokenInvalid { errcode: i64 },
    /// 48001.
    #[error("the account is not authorized for this wechat api (48001)")]
    ApiUnauthorized,
    /// 61023: the stored authorizer refresh token no longer works.
    #[error("the authorizer refresh token is invalid (61023): the merchant must re-authorize")]
    BadRefreshToken,
    #[error("wechat error {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    /// The local per-appid rate limit did not admit the call within its wait bound.
    #[error("local rate limit for appid {appid} exceeded")]
    RateLimited { appid: String },
    #[error("invalid request: {0}")]
    InvalidInput(String),
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl WechatError {
    /// Maps a non-zero `errcode` of a WeChat JSON reply.
    pub fn from_errcode(errcode: i64, errmsg: &str) -> Self {
        match errcode {
            ERRCODE_QUOTA_EXHAUSTED => Self::QuotaExhausted,
            ERRCODE_INVALID_CREDENTIAL | ERRCODE_INVALID_ACCESS_TOKEN | ERRCODE_ACCESS_TOKEN_EXPIRED => {
                Self::TokenInvalid { errcode }
            }
            ERRCODE_API_UNAUTHORIZED => Self::ApiUnauthorized,
            ERRCODE_BAD_REFRESH_TOKEN => Self::BadRefreshToken,
            ERRCODE_BUSY => Self::Busy { attempts: 1 },
            _ => Self::Api { errcode, errmsg: errmsg.chars().take(ERRMSG_CHARS_MAX).collect() },
        }
    }

    /// Whether the transport layer should try again (after backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Busy { .. } | Self::Transport(_) | Self::Timeout { .. } | Self::HttpStatus(500..=599))
    }
}

/// WeChat's error messages are short; anything longer is cut.
const ERRMSG_CHARS_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token store: {0}")]
    Store(String),
    #[error("invalid token key: {0}")]
    InvalidKey(String),
    #[error("no credentials configured for {0}")]
    NoCredentials(String),
    #[error("no component_verify_ticket received yet for component {0}")]
    NoVerifyTicket(String),
    #[error("no authorizer refresh token stored for {0}: the merchant must authorize first")]
    NoRefreshToken(String),
    #[error("no fresh token for {0} within {waited_ms} ms", waited_ms = .1)]
    Unavailable(String, u64),
    #[error("sealing: {0}")]
    Sealing(String),
    #[error("refreshing {key}: {source}")]
    Refresh {
        key: String,
        #[source]
        source: Box<WechatError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_map_to_typed_errors() {
        assert!(matches!(WechatError::from_errcode(45009, "x"), WechatError::QuotaExhausted));
        for code in [40001, 40014, 42001] {
            assert!(
                matches!(WechatError::from_errcode(code, ""), WechatError::TokenInvalid { errcode } if errcode == code)
            );
        }
        assert!(matches!(WechatError::from_errcode(48001, ""), WechatError::ApiUnauthorized));
        assert!(matches!(WechatError::from_errcode(61023, ""), WechatError::BadRefreshToken));
        assert!(WechatError::from_errcode(-1, "busy").is_retryable());
        assert!(!WechatError::from_errcode(45009, "").is_retryable());
        assert!(!WechatError::from_errcode(40001, "").is_retryable());
        let long = "x".repeat(1000);
        match WechatError::from_errcode(40013, &long) {
            WechatError::Api { errcode: 40013, errmsg } => assert_eq!(errmsg.len(), ERRMSG_CHARS_MAX),
            other => panic!("unexpected {other:?}"),
        }
    }
}
