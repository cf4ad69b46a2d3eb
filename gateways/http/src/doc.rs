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

/// WeChat Pay's API version for a recharge.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum PayApi {
    V2,
    V3,
}

/// Visible text: no control characters (`char::is_control`), not only
/// whitespace (`str::trim`): the rule of `ProductName`, `CouponText` and
/// account and QR code names. The whitespace class is Rust's `White_Space`
/// spelled out (`\s` differs between regex dialects).
const VISIBLE_TEXT: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*\
[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
[^\\x00-\\x1F\\x7F-\\x9F]*$";
/// A tenant id inside a QR payload (`TenantSlug`'s rule).
const TENANT_IN_PAYLOAD: &str = "[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?";
const UUID: &str = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

string_schema!(
    /// `wxcm_domain::mall::ProductName`, `wxcm_domain::coupon::CouponText`.
    ShortText => string("Visible text of 1..=64 characters (no control characters, not only spaces)", 1, 64, VISIBLE_TEXT, None)
);

string_schema!(
    /// `wxcm_domain::tenant` account names, scene QR code names.
    Name100 => string("Visible text of 1..=100 characters (no control characters, not only spaces)", 1, 100, VISIBLE_TEXT, None)
);

string_schema!(
    /// `wxcm_domain::mall::ProductDescription`.
    ProductDescription => string(
        "Plain text of at most 2000 characters; line breaks allowed, other control characters not",
        0,
        wxcm_domain::mall::ProductDescription::LEN_MAX,
        "^[^\\x00-\\x09\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$",
        None,
    )
);

string_schema!(
    /// `wxcm_domain::campaign::VoteItemText`.
    VoteItemDescription => string(
        "Visible text of 1..=500 characters; line breaks allowed, other control characters not; not only spaces",
        1,
        wxcm_domain::campaign::VoteItemText::LEN_MAX,
        "^[^\\x00-\\x09\\x0B-\\x1F\\x7F-\\x9F]*\
[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
[^\\x00-\\x09\\x0B-\\x1F\\x7F-\\x9F]*$",
        None,
    )
);

string_schema!(
    /// `wxcm_domain::mall::ImageUrl`.
    ImageUrl => string(
        "An http(s) URL with a host: printable ASCII without spaces, quotes, angle brackets or backslashes",
        8,
        wxcm_domain::mall::ImageUrl::LEN_MAX,
        "^https?://[!$-&(-.0-;=@-\\[\\]-~]+[!#-&(-;=?-\\[\\]-~]*$",
        None,
    )
);

string_schema!(
    /// `wxcm_commands::coupons::scanned_code` over `wxcm_domain::coupon::RedemptionCode::parse`.
    CouponCodeInput => {
        let typed = "(?:[0-9A-TV-Za-tv-z][- ]?){16}";
        let pattern = format!("^(?:wxcm:coupon:{TENANT_IN_PAYLOAD}:)?{typed}$");
        string(
            "The scanned QR payload `wxcm:coupon:<tenant>:<code>` or the typed code: 16 characters of Crockford \
base32 (case-insensitive; `O` reads as 0, `I` and `L` as 1; a hyphen or space may follow each character)",
            16,
            80,
            &pattern,
            None,
        )
    }
);

string_schema!(
    /// `wxcm_commands::card_codes::lookup`.
    CardCodeInput => {
        let pattern = format!("^wxcm:card:{TENANT_IN_PAYLOAD}:{UUID}:[0-9]{{1,18}}:[0-9a-f]{{32}}$");
        string(
            "A member card's QR payload `wxcm:card:<tenant>:<member id>:<expires, unix seconds>:<MAC, 32 hex digits>`",
            1,
            wxcm_commands::card_codes::CARD_CODE_BYTES_MAX,
            &pattern,
            None,
        )
    }
);

string_schema!(
    /// `wxcm_commands::mall::orders::scanned_order` (it trims ASCII whitespace around the value).
    MallOrderInput => {
        let value = format!("(?:wxcm:order:{TENANT_IN_PAYLOAD}:{UUID}|[0-9]{{1,18}}|{UUID})");
        let pattern = format!("^[\\t\\n\\x0B\\x0C\\r ]*{value}[\\t\\n\\x0B\\x0C\\r ]*$");
        string(
            "What the counter scanned or typed: the order's QR payload `wxcm:order:<tenant>:<order id>`, its number \
(1..=18 digits) or its id",
            1,
            200,
            &pattern,
            None,
        )
    }
);

string_schema!(
    /// `resources::wechat::authorization::AuthorizationBody::validate`.
    RedirectUri => string(
        "An http(s) URL of printable ASCII without spaces (percent-encode the rest), at most 1024 characters",
        8,
        crate::resources::wechat::authorization::REDIRECT_URI_BYTES_MAX,
        "^https?://[!-~]+$",
        None,
    )
);

string_schema!(
    /// `resources::wechat::qr_codes::QrCodeBody::validate`.
    QrScene => string(
        "1..=64 printable ASCII characters without spaces",
        1,
        crate::resources::wechat::qr_codes::SCENE_LEN_MAX,
        "^[!-~]+$",
        None,
    )
);

string_schema!(
    /// `wxcm_commands::tenants::bind_account`: the account's token and app secret.
    AccountSecret => string(
        "1..=4096 printable ASCII characters without spaces",
        1,
        wxcm_commands::tenants::SECRET_LEN_MAX,
        "^[!-~]+$",
        Some("password"),
    )
);

string_schema!(
    /// `wxcm_commands::tenants::bind_account`.
    EncodingAesKey => string("43 letters and digits", 43, 43, "^[A-Za-z0-9]+$", Some("password"))
);

string_schema!(
    /// `wxcm_commands::tenants::bind_account`.
    MchId => string("A WeChat Pay merchant id: 1..=32 digits", 1, 32, "^[0-9]+$", None)
);

string_schema!(
    /// `wxcm_commands::tenants::check_pay_formats`.
    PayApiKey => string(
        "Exactly 32 printable ASCII characters without spaces",
        wxcm_commands::tenants::PAY_API_KEY_CHARS,
        wxcm_commands::tenants::PAY_API_KEY_CHARS,
        "^[!-~]+$",
        Some("password"),
    )
);

string_schema!(
    /// `wxcm_commands::tenants::check_pay_formats`.
    MerchantCertSerial => string(
        "The merchant certificate's serial: 1..=64 hexadecimal digits",
        1,
        wxcm_commands::tenants::MERCHANT_CERT_SERIAL_CHARS_MAX,
        "^[0-9A-Fa-f]+$",
        None,
    )
);

string_schema!(
    /// `wxcm_commands::tenants::check_pay_formats`: ASCII, a `-----BEGIN …PRIVATE KEY-----` line first.
    PrivateKeyPem => string(
        "A PEM private key (ASCII): `-----BEGIN …PRIVATE KEY-----` after optional whitespace, at most 4096 characters",
        16,
        wxcm_commands::tenants::SECRET_LEN_MAX,
        "^[\\t\\n\\x0B\\x0C\\r ]*-----BEGIN [\\x00-\\x7F]*PRIVATE KEY-----[\\x00-\\x7F]*$",
        Some("password"),
    )
);

string_schema!(
    /// `wxcm_commands::wechat::rules::ReplyRules::validate`: a keyword.
    Keyword => string("1..=30 characters, no control characters, not only whitespace", 1, 30, VISIBLE_TEXT, None)
);

string_schema!(
    /// `resources::wechat::menus::MenuButton::validate`: a button's name (its byte limit depends on the level).
    MenuName => string(
        "Not only whitespace, no control characters; at most 16 bytes of UTF-8 at the top level, 60 in a sub-menu",
        1,
        crate::resources::wechat::menus::MENU_SUB_NAME_BYTES_MAX,
        VISIBLE_TEXT,
        None,
    )
);

/// A menu button's `type` (`resources::wechat::menus::MENU_TYPES`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MenuButtonType {
    Click,
    View,
    Miniprogram,
    ScancodePush,
    ScancodeWaitmsg,
    PicSysphoto,
    PicPhotoOrAlbum,
    PicWeixin,
    LocationSelect,
    MediaId,
    ArticleId,
    ArticleViewLimited,
}

/// `wxcm_commands::coupons::dispatch`: a dispatch's list, 1..=`DISPATCH_LIST_MAX` distinct member ids.
pub fn distinct_member_ids() -> utoipa::openapi::schema::Array {
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid)));
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(id)
        .min_items(Some(1))
        .max_items(Some(wxcm_commands::coupons::dispatch::DISPATCH_LIST_MAX))
        .unique_items(true)
        .description(Some("1..=10000 distinct member ids"))
        .build()
}
