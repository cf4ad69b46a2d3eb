//! Named schemas of the values the server parses from strings (path and
//! query parameters, some body fields): each states the rule of the parser
//! it documents, so a client generated from the document sends only what the
//! server takes. Documentation only: the parsers are the domain's newtypes.

use std::borrow::Cow;

use utoipa::openapi::schema::SchemaFormat;
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use wxcm_domain::{CardNumber as Card, OpenId as Open, OutTradeNo as TradeNo, TenantId as Tenant};

/// One string schema: description, length bounds, pattern, optional format.
fn string(description: &str, min: usize, max: usize, pattern: &str, format: Option<&str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .format(format.map(|f| SchemaFormat::Custom(f.to_owned())))
        .into()
}

macro_rules! string_schema {
    ($(#[$meta:meta])* $name:ident => $schema:expr) => {
        $(#[$meta])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

string_schema!(
    /// `wxcm_domain::CardNumber`: its Luhn check digit is beyond a pattern, hence the format.
    CardNumber => string(
        "A member card number: 10 digits, the last a Luhn check digit over the first nine (format `card-number`)",
        Card::DIGITS,
        Card::DIGITS,
        "^[0-9]+$",
        Some("card-number"),
    )
);

string_schema!(
    /// `wxcm_domain::OpenId`.
    OpenId => string("A WeChat openid", 6, Open::LEN_MAX, "^[A-Za-z0-9_-]+$", None)
);

string_schema!(
    /// `wxcm_domain::AppId`.
    OfficialAccountAppId => string(
        "An official account's appid: `wx` and 16 hex digits",
        18,
        18,
        "^wx[0-9A-Fa-f]{16}$",
        None,
    )
);

string_schema!(
    /// `wxcm_domain::OutTradeNo`.
    PayOrderId => string(
        "A payment order's number (`out_trade_no`)",
        TradeNo::LEN_MIN,
        TradeNo::LEN_MAX,
        "^[0-9A-Za-z_|*-]+$",
        None,
    )
);

string_schema!(
    /// `wxcm_domain::TenantId`.
    TenantSlug => string(
        "A tenant id: lowercase letters, digits and inner hyphens",
        2,
        Tenant::LEN_MAX,
        "^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$",
        None,
    )
);

string_schema!(
    /// `wxcm_commands::admin_users::Username` (`auth::validate_username`).
    AdminUsername => string(
        "An admin user's name",
        1,
        wxcm_commands::auth::USERNAME_LEN_MAX,
        "^[A-Za-z0-9_.@-]+$",
        None,
    )
);

string_schema!(
    /// `wxcm_commands::ports::MemberCursor`: `<sort tag>.<key>.<member id>`, the
    /// tag that of the `sort` asked for (`r` registered_at, `p` points, `b` balance).
    MemberCursor => string(
        "`next_after` of the previous page, made for the same `sort`: `<r|p|b>.<key>.<member id>` (`r` with \
`sort=registered_at`, `p` with `points`, `b` with `balance`)",
        5,
        crate::resources::members::FILTER_TEXT_BYTES_MAX,
        "^[rpb]\\.(0|-?[1-9][0-9]{0,17})\\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        None,
    )
);

string_schema!(
    /// `wxcm_domain::member::CardLevel`: 1..=32 characters, no control characters.
    CardLevelName => string("A card level name", 1, 32, "^[^\\x00-\\x1F\\x7F-\\x9F]+$", None)
);

/// How a member registered (`wxcm_domain::member::RegistrationSource`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RegistrationSource {
    Subscribe,
    Oauth,
    Staff,
}

/// What brought a member's latest follow.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum FollowSource {
    SceneQr,
    Referral,
    Other,
}

/// The member list's sort key.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MemberSort {
    RegisteredAt,
    Points,
    Balance,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// How a recorded write ended (`wxcm_commands::oplog::OperationOutcome`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OperationOutcome {
    Succeeded,
    Refused,
    Failed,
}

/// A payment order's state.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum PaymentState {
    Created,
    Paid,
    Closed,
}

/// An issued coupon's state.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum CouponState {
    Active,
    Redeemed,
    Voided,
    Expired,
}

/// A report's format.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ReportFormat {
    Json,
    Csv,
}
