//! Identifiers, parsed once at the edge ("parse, don't validate").

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be {min}..={max} characters, got {len}")]
    Length { what: &'static str, min: usize, max: usize, len: usize },
    #[error("{what} contains a character outside {allowed}")]
    Charset { what: &'static str, allowed: &'static str },
    #[error("{what} is not a valid id")]
    Invalid { what: &'static str },
}

fn check_len(what: &'static str, s: &str, min: usize, max: usize) -> Result<(), IdError> {
    let len = s.chars().count();
    if len < min || len > max {
        return Err(IdError::Length { what, min, max, len });
    }
    Ok(())
}

/// `schema(...)` repeats the parser's rules as JSON Schema keywords (length,
/// pattern) so stored events can be checked without this code; the tests in
/// `domain/tests/event_schemas.rs` keep the two in agreement.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, schema($($schema:tt)*)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[schemars(extend($($schema)*))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

/// A UUID-backed aggregate id with `from_uuid`, `parse` and `Display`.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            serde::Serialize,
            serde::Deserialize,
            schemars::JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn from_uuid(id: uuid::Uuid) -> Self {
                Self(id)
            }
            pub fn parse(s: &str) -> Result<Self, $crate::ids::IdError> {
                uuid::Uuid::parse_str(s).map(Self).map_err(|_| $crate::ids::IdError::Invalid { what: $what })
            }
            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}
pub(crate) use uuid_id;

string_id!(
    /// A merchant: a lowercase slug chosen by the operator (`acme-cinema`).
    TenantId,
    schema(
        "minLength" = 2,
        "maxLength" = TenantId::LEN_MAX,
        "pattern" = "^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$"
    )
);
impl TenantId {
    pub const LEN_MAX: usize = 40;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("tenant id", s, 2, Self::LEN_MAX)?;
        let ok = s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if !ok {
            return Err(IdError::Charset { what: "tenant id", allowed: "a-z 0-9 - (not at the ends)" });
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// A WeChat openid: the member's id within one official account.
    OpenId,
    schema(
        "minLength" = 6,
        "maxLength" = OpenId::LEN_MAX,
        "pattern" = "^[A-Za-z0-9_-]+$"
    )
);
impl OpenId {
    pub const LEN_MAX: usize = 64;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("openid", s, 6, Self::LEN_MAX)?;
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(IdError::Charset { what: "openid", allowed: "A-Z a-z 0-9 _ -" });
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// An official account's appid (`wx` + 16 hex digits).
    AppId,
    schema("minLength" = 18, "maxLength" = 18, "pattern" = "^wx[0-9A-Fa-f]{16}$")
);
impl AppId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("appid", s, 18, 18)?;
        if !s.starts_with("wx") || !s[2..].chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(IdError::Charset { what: "appid", allowed: "wx followed by 16 hex digits" });
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// A member card number: fixed digits with a trailing Luhn check digit.
    CardNumber,
    schema(
        "minLength" = CardNumber::DIGITS,
        "maxLength" = CardNumber::DIGITS,
        "pattern" = "^[0-9]+$"
    )
);
impl CardNumber {
    pub const DIGITS: usize = 10;
    /// Builds the card number for a serial allocated by the store.
    pub fn from_serial(serial: u64) -> Result<Self, IdError> {
        let body = format!("{serial:0width$}", width = Self::DIGITS - 1);
        if body.len() != Self::DIGITS - 1 {
            return Err(IdError::Invalid { what: "card serial" });
        }
        let check = luhn_check_digit(&body);
        Ok(Self(format!("{body}{check}")))
    }
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("card number", s, Self::DIGITS, Self::DIGITS)?;
        if !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(IdError::Charset { what: "card number", allowed: "0-9" });
        }
        let (body, check) = s.split_at(Self::DIGITS - 1);
        if luhn_check_digit(body).to_string() != check {
            return Err(IdError::Invalid { what: "card number" });
        }
        Ok(Self(s.to_owned()))
    }
}

fn luhn_check_digit(body: &str) -> u32 {
    let sum: u32 = body
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

string_id!(
    /// The client's idempotency key: same key + same payload = same result.
    IdempotencyKey,
    schema(
        "minLength" = IdempotencyKey::LEN_MIN,
        "maxLength" = IdempotencyKey::LEN_MAX,
        "pattern" = "^[!-~]+$"
    )
);
impl IdempotencyKey {
    pub const LEN_MIN: usize = 8;
    pub const LEN_MAX: usize = 128;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("idempotency key", s, Self::LEN_MIN, Self::LEN_MAX)?;
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(IdError::Charset { what: "idempotency key", allowed: "printable ASCII without spaces" });
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// Free text naming why or what for (a reason or a business reference).
    Reference,
    schema(
        "minLength" = 1,
        "maxLength" = Reference::LEN_MAX,
        "pattern" = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )
);
impl Reference {
    pub const LEN_MAX: usize = 200;
    /// A reason the domain writes itself; `s` is a valid reference.
    pub(crate) fn fixed(s: &'static str) -> Self {
        debug_assert!(Self::parse(s).is_ok(), "invalid fixed reference {s:?}");
        Self(s.to_owned())
    }
    /// A reference the domain builds from valid parts (an id with a prefix).
    pub(crate) fn derived(s: String) -> Self {
        debug_assert!(Self::parse(&s).is_ok(), "invalid derived reference {s:?}");
        Self(s)
    }
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("reference", s, 1, Self::LEN_MAX)?;
        if s.chars().any(|c| c.is_control()) {
            return Err(IdError::Charset { what: "reference", allowed: "text without control characters" });
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// The scene of a parametric QR code (`qrscene_...` / `scene_str`): which
    /// poster or counter brought the follower in.
    SceneKey,
    schema(
        "minLength" = 1,
        "maxLength" = SceneKey::LEN_MAX,
        "pattern" = "^[!-~]+$"
    )
);
impl SceneKey {
    /// WeChat's limit for `scene_str`.
    pub const LEN_MAX: usize = 64;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("scene key", s, 1, Self::LEN_MAX)?;
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(IdError::Charset { what: "scene key", allowed: "printable ASCII without spaces" });
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// The merchant's order number sent to WeChat Pay (`out_trade_no`), generated by wxcm.
    OutTradeNo,
    schema(
        "minLength" = OutTradeNo::LEN_MIN,
        "maxLength" = OutTradeNo::LEN_MAX,
        "pattern" = "^[0-9A-Za-z_|*-]+$"
    )
);
impl OutTradeNo {
    pub const LEN_MIN: usize = 6;
    /// WeChat Pay's limit for `out_trade_no`.
    pub const LEN_MAX: usize = 32;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("out_trade_no", s, Self::LEN_MIN, Self::LEN_MAX)?;
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*')) {
            return Err(IdError::Charset { what: "out_trade_no", allowed: "0-9 A-Z a-z _ - | *" });
        }
        Ok(Self(s.to_owned()))
    }
    /// 32 lowercase hex digits: unique without coordination.
    pub fn generate_from(id: Uuid) -> Self {
        Self(id.simple().to_string())
    }
}

string_id!(
    /// An identifier issued by WeChat Pay or sent to it: `transaction_id`,
    /// `mch_id`, `out_refund_no`, `refund_id`, a notification id.
    PayRef,
    schema(
        "minLength" = 1,
        "maxLength" = PayRef::LEN_MAX,
        "pattern" = "^[!-~]+$"
    )
);
impl PayRef {
    pub const LEN_MAX: usize = 64;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("pay reference", s, 1, Self::LEN_MAX)?;
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(IdError::Charset { what: "pay reference", allowed: "printable ASCII without spaces" });
        }
        Ok(Self(s.to_owned()))
    }
}

/// A member: a UUID. Members created from WeChat get a deterministic id derived
/// from (tenant, openid) so concurrent duplicate subscribes converge on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct MemberId(Uuid);

impl MemberId {
    const OPENID_NAMESPACE: Uuid = Uuid::from_u128(0x5f1c_8a2e_77d4_4e0b_9a61_3c2d_0b8e_f4a1);
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
    pub fn for_openid(tenant: &TenantId, openid: &OpenId) -> Self {
        let name = format!("{}\u{1f}{}", tenant.as_str(), openid.as_str());
        Self(Uuid::new_v5(&Self::OPENID_NAMESPACE, name.as_bytes()))
    }
    /// Members registered by hand: derived from the request's idempotency key.
    pub fn for_idempotency_key(tenant: &TenantId, key: &IdempotencyKey) -> Self {
        let name = format!("key\u{1f}{}\u{1f}{}", tenant.as_str(), key.as_str());
        Self(Uuid::new_v5(&Self::OPENID_NAMESPACE, name.as_bytes()))
    }
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s).map(Self).map_err(|_| IdError::Invalid { what: "member id" })
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_slugs() {
        assert!(TenantId::parse("acme-cinema").is_ok());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("-acme").is_err());
        assert!(TenantId::parse("a").is_err());
        assert!(TenantId::parse(&"a".repeat(TenantId::LEN_MAX)).is_ok());
        assert!(TenantId::parse(&"a".repeat(TenantId::LEN_MAX + 1)).is_err());
    }

    #[test]
    fn card_numbers_carry_a_luhn_digit() {
        let card = CardNumber::from_serial(42).unwrap();
        assert_eq!(card.as_str().len(), CardNumber::DIGITS);
        assert!(CardNumber::parse(card.as_str()).is_ok());
        let mut tampered = card.as_str().to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(CardNumber::parse(&tampered).is_err());
        assert!(CardNumber::from_serial(1_000_000_000).is_err());
    }

    #[test]
    fn openid_member_ids_are_deterministic_per_tenant() {
        let a = TenantId::parse("tenant-a").unwrap();
        let b = TenantId::parse("tenant-b").unwrap();
        let o = OpenId::parse("oABCdef123456").unwrap();
        assert_eq!(MemberId::for_openid(&a, &o), MemberId::for_openid(&a, &o));
        assert_ne!(MemberId::for_openid(&a, &o), MemberId::for_openid(&b, &o));
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        assert!(IdempotencyKey::parse("short").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(IdempotencyKey::LEN_MAX)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(IdempotencyKey::LEN_MAX + 1)).is_err());
        assert!(IdempotencyKey::parse("has space in").is_err());
    }

    #[test]
    fn scene_keys_and_pay_ids_are_bounded() {
        assert!(SceneKey::parse("poster-7").is_ok());
        assert!(SceneKey::parse("").is_err());
        assert!(SceneKey::parse("has space").is_err());
        assert!(SceneKey::parse(&"s".repeat(SceneKey::LEN_MAX)).is_ok());
        assert!(SceneKey::parse(&"s".repeat(SceneKey::LEN_MAX + 1)).is_err());
        assert!(OutTradeNo::parse("12345").is_err());
        assert!(OutTradeNo::parse("ab_c-1|2*").is_ok());
        assert!(OutTradeNo::parse("abc.def").is_err());
        assert!(OutTradeNo::parse(&"o".repeat(OutTradeNo::LEN_MAX + 1)).is_err());
        let generated = OutTradeNo::generate_from(Uuid::from_u128(7));
        assert_eq!(OutTradeNo::parse(generated.as_str()), Ok(generated));
        assert!(PayRef::parse("4200001234202603100000000001").is_ok());
        assert!(PayRef::parse(&"p".repeat(PayRef::LEN_MAX + 1)).is_err());
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<TenantId>("\"BAD ID\"").is_err());
        assert!(serde_json::from_str::<TenantId>("\"good-id\"").is_ok());
    }
}
