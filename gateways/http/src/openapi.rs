//! The OpenAPI document, derived from the handlers' `#[utoipa::path]`
//! attributes. `schemas/openapi.json` is a committed copy; a test keeps it in
//! step (regenerate with `WXCM_WRITE_OPENAPI=1 cargo test -p wxcm-http`).

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Schema, Type};
use utoipa::{Modify, OpenApi};

use wxcm_commands::ports::Limits;
use wxcm_domain::IdempotencyKey;

use crate::doc;
use crate::error::{ErrorBody, ErrorDetail};
use crate::resources::wechat::{authorization, menus, points_rules, qr_codes, reply_rules};
use crate::resources::{
    admin_users, campaigns, card_levels, commissions, coupons, distribution, health, ledger, mall, member_api, members,
    operation_log, pay_notify, payments, referral, reports, session, tenant,
};

const DESCRIPTION: &str = "\
Admin API of wxcm (membership, points and stored value on WeChat official accounts).

Every route under `/admin/api/v1` except `login` needs `Authorization: Bearer <token>`. The session's \
tenant is the tenant of every request: no route takes a tenant id, and members of other tenants \
answer 404.

Mutating routes need an `Idempotency-Key` header: the same key with the same request returns the \
first result (header `Idempotent-Replayed: true`), with a different request 409 `idempotency_key_reused`. \
`X-Correlation-Id` (a UUID) is optional and echoed on every response.

Roles: owner (everything), manager (everything but tenant settings and admin users), staff (member lookup and list, \
registration, cash deposit and charge, ledger; no reports), auditor (member lookup and list, ledger, \
reports, tenant view). WeChat settings (reply rules, points rules, scene QR codes, menus, referral \
links): owner and manager change them, auditors read them, staff neither; only the owner starts a \
third-party authorization. Failed WeChat calls answer 422 `wechat_rejected`, 429 \
`wechat_quota_exhausted`, 502 `wechat_unavailable` or 503 `wechat_not_configured`.

The member list and reports come from read models fed from the event log: they may lag a write by a \
moment. Report days are merchant days (UTC+8).

Errors are `{\"error\": {\"code\", \"message\"}}`:
- 400 malformed headers, path, query or JSON syntax;
- 401 missing, invalid or expired token (`unauthenticated`), refused login (`invalid_credentials`);
- 403 `forbidden` (role);
- 404 unknown member (also another tenant's) or tenant;
- 409 valid request that the current state refuses: `insufficient_balance`, `insufficient_points`, \
`refund_exceeds_charge`, `charge_not_found`, `same_card_level`, `too_many_lots`, `already_registered`, `too_many_accounts`, \
`wrong_current_password`, `idempotency_key_reused`;
- 413 body over the limit; 415 body without `Content-Type: application/json`;
- 422 values that can never be accepted: `invalid_body` (wrong types, missing or unknown fields), \
`invalid_amount` (zero, negative or over the configured limit), `invalid_expiry`, `invalid_text`, \
`invalid_card_level`, `invalid_openid`, `overflow`, `invalid_account`, `invalid_name`;
- 429 `rate_limited` (login) with `Retry-After`;
- 500 `internal` (details are logged, never sent);
- 503 `contention` or `timeout` with `Retry-After`: retry with the same idempotency key.

Coupons: owner and manager create and change templates (terms, stock, on/off), give coupons and void them; \
staff write coupons off at the counter (`POST coupons/redemptions` with the scanned QR payload or the typed \
16-character code) and read them; auditors read. A template issues exactly its stock, never more, and a \
member never claims more than its per-member limit, however many ask at once. Refusals are 409: \
`sold_out`, `limit_reached`, `not_in_audience`, `template_disabled`, `window_ended`, `already_redeemed`, \
`coupon_voided`, `coupon_expired`, `coupon_not_yet_valid`, `other_tenant_coupon`.

Points mall (`/admin/api/v1/mall`, `/m/api/v1/mall`): owner and manager create and change products and \
refund orders; staff deliver paid orders at the counter (`POST mall/deliveries` with the scanned QR payload \
or the typed order number) and read; auditors read. A member's order reserves the stock and holds the \
points until it is paid (points, balance, or both) or expires; a product never sells more than its stock, \
nor a member more than the per-member limit. A payment that arrives after the order ended is refunded, \
never honoured. Refusals are 409: `sold_out`, `limit_reached`, `not_on_sale`, `price_changed`, \
`insufficient_points`, `already_paid`, `order_ended`, `order_ended_payment_refunded`, `already_delivered`, \
`already_refunded`, `not_paid`; a quantity outside 1..=99 is 422 `invalid_quantity`.

Admin users (`/admin/api/v1/admin-users`): only the owner lists, creates, changes roles, disables, enables \
and resets passwords; every user changes its own password at `PUT me/password` with the current one. \
Disabling a user, changing its role or its password ends all its sessions at once (its old tokens answer \
401); a tenant always keeps one active owner (409 `last_owner`). Another tenant's user is 404 \
`admin_user_not_found`.

Payment orders (`/admin/api/v1/payments`): owner, manager and auditor read them with their notification history.

Member API (`/m/api/v1`, pages inside WeChat): `POST sessions` exchanges a WeChat OAuth code for a member \
session token (the member is found or registered by openid); the other routes need \
`Authorization: Bearer <member token>` (scheme `member_bearer`) and reach only that member and its own orders. \
Recharges are balance top-ups paid with WeChat Pay (JSAPI); the balance is credited when Pay's notification \
arrives (or reconciliation finds the payment), exactly once.

Campaigns (`/admin/api/v1/campaigns`, `/m/api/v1/campaigns`): owner and manager create, edit (while draft), \
schedule, start and end shake lotteries and periodic lotteries (`periodic-campaigns`: free entries, a period \
per merchant day or week, each committing to its own seed and drawn by the scheduler at its end) and 1-yuan \
snatches (`snatch-campaigns`: N shares of 1 yuan per period bought with the balance or WeChat Pay through \
`share-purchases`; the last share paid draws one winner by shares held, with the period's revealed seed, and opens \
the next period; a payment arriving after its reservation ended is refunded); staff also hand \
physical prizes over at the store (`hand-overs`, once); every role reads them (`CampaignRead`). Scheduling commits to a \
secret seed (its SHA-256 `commitment`); each shake's roll is HMAC-SHA256(seed, member, chance) over the prize \
table in force, and ending reveals the seed, so every shake can be recomputed (`schemas/draws/SPEC.md`). A prize \
never gives more than its stock, a member never shakes more than the chances nor wins more than \
`prizes_per_member_max`. Refusals are 409: `not_ongoing`, `members_only`, `lifetime_limit_reached`, \
`daily_limit_reached`, `prize_limit_reached`, `prizes_exhausted`, `not_draft`, `already_ended`, `window_ended`. \
Voting campaigns (`voting-campaigns`): items by operators (approved at once) or members (approved or rejected \
once by an operator; an approval may earn the member points, granted once); members vote within the lifetime and \
daily limits, one vote per item per vote period (`already_voted`, `vote_item_not_approved`); the ranking \
(`vote-items`, member `ranking`) is a read model.

Pay notifications (`/pay/notify`) are called by WeChat Pay, not by clients: v2 XML signed with the API v2 key, \
v3 JSON signed by the platform key with an AES-256-GCM resource, v2 refunds with an encrypted `req_info`. The \
\"applied\" answer (v2 `SUCCESS`, v3 2xx) is given only once the order is paid and the member credited.";

#[derive(OpenApi)]
#[openapi(
    info(title = "wxcm admin API", description = DESCRIPTION),
    paths(
        health::healthz,
        health::readyz,
        health::openapi,
        session::login,
        session::logout,
        session::current_session,
        admin_users::list_admin_users,
        admin_users::create_admin_user,
        admin_users::set_admin_user_role,
        admin_users::disable_admin_user,
        admin_users::enable_admin_user,
        admin_users::reset_admin_user_password,
        admin_users::change_own_password,
        members::list_members,
        members::get_member,
        members::audit_member,
        members::get_member_by_card,
        members::get_member_by_openid,
        members::register_member,
        members::lookup_card_code,
        ledger::grant_points,
        ledger::deduct_points,
        ledger::deposit_cash,
        ledger::charge_cash,
        ledger::refund_charge,
        ledger::set_card_level,
        ledger::ledger,
        reports::daily_ops,
        operation_log::list_operations,
        tenant::get_tenant,
        tenant::bind_official_account,
        reply_rules::get_reply_rules,
        reply_rules::put_reply_rules,
        points_rules::get_points_rules,
        points_rules::put_points_rules,
        qr_codes::create_qr_code,
        qr_codes::list_qr_codes,
        menus::get_menu,
        menus::put_menu,
        menus::publish_menu,
        referral::referral_link,
        referral::referral_start,
        referral::referral_callback,
        authorization::start_authorization,
        payments::list_payments,
        payments::get_payment,
        member_api::create_session,
        member_api::me,
        member_api::create_recharge,
        member_api::get_recharge,
        member_api::card_code,
        card_levels::get_card_levels,
        card_levels::put_card_levels,
        card_levels::member_card_level,
        coupons::create_template,
        coupons::list_templates,
        coupons::get_template,
        coupons::template_coupons,
        coupons::put_terms,
        coupons::put_stock,
        coupons::put_enabled,
        coupons::put_welcome,
        coupons::grant,
        coupons::start_dispatch,
        coupons::get_dispatch,
        coupons::get_coupon,
        coupons::void_coupon,
        coupons::redeem,
        coupons::member_coupons,
        coupons::member_claimable,
        coupons::member_claim,
        coupons::member_list,
        mall::create_product,
        mall::list_products,
        mall::get_product,
        mall::put_listing,
        mall::put_price,
        mall::put_stock,
        mall::put_member_limit,
        mall::put_gift_coupon,
        mall::put_commission,
        mall::put_on_sale,
        mall::list_orders,
        mall::get_order,
        mall::refund_order,
        mall::approve_refund_request,
        mall::reject_refund_request,
        mall::change_order_price,
        commissions::order_commissions,
        mall::deliver,
        mall::member_products,
        mall::member_place_order,
        mall::member_orders,
        mall::member_order,
        mall::member_pay,
        mall::member_wechat_pay,
        mall::member_cancel,
        mall::member_request_refund,
        campaigns::create_campaign,
        campaigns::create_periodic_campaign,
        campaigns::create_snatch_campaign,
        campaigns::list_campaigns,
        campaigns::get_campaign,
        campaigns::put_terms,
        campaigns::schedule_campaign,
        campaigns::start_campaign,
        campaigns::end_campaign,
        campaigns::cancel_period,
        campaigns::hand_over,
        campaigns::member_campaigns,
        campaigns::member_shake,
        campaigns::member_shakes,
        campaigns::member_enter,
        campaigns::member_entries,
        campaigns::create_popularity_campaign,
        campaigns::member_share_link,
        campaigns::share_start,
        campaigns::share_callback,
        campaigns::open_period,
        campaigns::put_beacon_value,
        campaigns::campaign_report,
        campaigns::draw_audit,
        campaigns::member_campaign_prizes,
        campaigns::member_purchase,
        campaigns::member_purchases,
        campaigns::member_snatch,
        campaigns::create_voting_campaign,
        campaigns::put_voting_terms,
        campaigns::admin_submit_item,
        campaigns::approve_item,
        campaigns::reject_item,
        campaigns::admin_vote_items,
        campaigns::member_submit_item,
        campaigns::member_items,
        campaigns::member_vote,
        campaigns::member_ranking,
        distribution::get_settings,
        distribution::put_settings,
        distribution::list_distributors,
        distribution::list_applications,
        distribution::get_distributor,
        distribution::approve,
        distribution::reject,
        distribution::designate,
        distribution::suspend,
        distribution::reinstate,
        distribution::put_level,
        distribution::admin_subordinates,
        distribution::member_binding,
        distribution::member_apply,
        distribution::member_status,
        distribution::member_promotion,
        distribution::member_bind,
        distribution::member_subordinates,
        distribution::link_start,
        distribution::link_callback,
        commissions::get_settings,
        commissions::put_settings,
        commissions::admin_commissions,
        commissions::admin_withdrawals,
        distribution::ranks,
        commissions::approve,
        commissions::reject,
        commissions::retry,
        commissions::give_back,
        commissions::member_centre,
        commissions::member_commissions,
        commissions::member_withdraw,
        commissions::member_withdrawals,
        pay_notify::notify_v2,
        pay_notify::notify_v3,
        pay_notify::notify_refund_v2,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        health::HealthBody,
        health::PartBody,
        doc::CardNumber,
        doc::OpenId,
        doc::OfficialAccountAppId,
        doc::PayOrderId,
        doc::TenantSlug,
        doc::AdminUsername,
        doc::MemberCursor,
        doc::CardLevelName,
        doc::RegistrationSource,
        doc::FollowSource,
        doc::MemberSort,
        doc::SortOrder,
        doc::OperationOutcome,
        doc::PaymentState,
        doc::CouponState,
        doc::ReportFormat,
        campaigns::PrizeFilter,
        doc::PayApi,
        doc::ShortText,
        doc::Name100,
        doc::ProductDescription,
        doc::VoteItemDescription,
        doc::ImageUrl,
        doc::CouponCodeInput,
        doc::CardCodeInput,
        doc::MallOrderInput,
        doc::RedirectUri,
        doc::QrScene,
        doc::AccountSecret,
        doc::EncodingAesKey,
        doc::MchId,
        doc::PayApiKey,
        doc::MerchantCertSerial,
        doc::PrivateKeyPem,
        doc::Keyword,
        doc::MenuName,
        doc::MenuButtonType,
    )),
    modifiers(&Common),
    tags(
        (name = "health", description = "Liveness, readiness, this document"),
        (name = "session", description = "Sign in and out"),
        (name = "admin-users", description = "The tenant's admin users (owner only) and every user's own password"),
        (name = "members", description = "Look up and register members"),
        (name = "ledger", description = "Points and cash operations, the member ledger"),
        (name = "reports", description = "Reports over the read models"),
        (name = "operation-log", description = "Every admin and staff write, for owners and auditors"),
        (name = "tenant", description = "The session's tenant"),
        (name = "wechat", description = "WeChat settings: reply rules, points rules, scene QR codes, menus, \
referral links, third-party authorization"),
        (name = "payments", description = "WeChat Pay orders of the tenant and their notifications"),
        (name = "coupons", description = "Coupon templates, grants, the counter's write-off, void"),
        (name = "mall", description = "The points mall: products, orders, refunds, delivery at the counter"),
        (name = "campaigns", description = "Shake lotteries: terms, scheduling with a seed commitment, end with its reveal"),
        (name = "card-levels", description = "The card level catalog: names, images, colours, privileges, \
thresholds on lifetime points or total paid"),
        (name = "distribution", description = "Distribution: settings, distributors and their audit queue, bindings and subordinates, commissions and withdrawals"),
        (name = "member", description = "The member API: OAuth sessions, the member's card, balance recharges"),
        (name = "pay-notify", description = "WeChat Pay's notifications (called by Pay)"),
    ),
)]
struct ApiDoc;

/// Adds what every operation shares: the bearer schemes, the correlation
/// header and its 400, the JSON body's 400/413/415/422, 401 on secured
/// routes, the `Idempotency-Key` header (its real rule) wherever the server
/// reads one, 500 and 503 everywhere under the APIs; and closes the variants
/// of tagged enums, whose `deny_unknown_fields` utoipa leaves out.
struct Common;

/// Admin POSTs that change nothing or are not idempotent by key: signing in
/// and out, and the card-code lookup (a read with a body).
const UNKEYED_ADMIN_POSTS: [&str; 3] =
    ["/admin/api/v1/login", "/admin/api/v1/logout", "/admin/api/v1/members/card-code-lookups"];

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let mut member = Http::new(HttpAuthScheme::Bearer);
        member.description = Some("Member session token from `POST /m/api/v1/sessions`".into());
        components.add_security_scheme("member_bearer", SecurityScheme::Http(member));
        for (name, schema) in components.schemas.iter_mut() {
            let tag = if TYPE_TAGGED.contains(&name.as_str()) { "type" } else { "kind" };
            close_tagged_variants(schema, tag);
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/admin/") || path.starts_with("/m/api/");
            if let Some(get) = item.get.as_mut() {
                decorate(get, api);
            }
            // Every admin write but the unkeyed ones is idempotent by key.
            let keyed = path.starts_with("/admin/api/v1/") && !UNKEYED_ADMIN_POSTS.contains(&path.as_str());
            for operation in [&mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten() {
                decorate(operation, api);
                if keyed || declares_idempotency_key(operation) {
                    require_idempotency_key(operation);
                }
            }
        }
    }
}

/// `deny_unknown_fields` on an internally tagged enum refuses unknown fields
/// in every variant; utoipa does not say so on the variants' objects.
/// Tagged enums whose tag is `type` (the others' is `kind`).
const TYPE_TAGGED: [&str; 1] = ["ReplyDto"];

fn close_tagged_variants(schema: &mut RefOr<Schema>, tag: &str) {
    let RefOr::T(Schema::OneOf(one_of)) = schema else {
        return;
    };
    for variant in one_of.items.iter_mut() {
        if let RefOr::T(Schema::Object(object)) = variant {
            if object.properties.contains_key(tag) {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    ResponseBuilder::new().description(description).content("application/json", content).build().into()
}

/// Documents an error answer: a new response, or the codes added to the
/// description of the one already there.
fn add_error(operation: &mut Operation, status: &str, codes: &[&str]) {
    let text = codes.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    match operation.responses.responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            let missing: Vec<String> = codes
                .iter()
                .filter(|c| !response.description.contains(&format!("`{c}`")))
                .map(|c| format!("`{c}`"))
                .collect();
            if !missing.is_empty() {
                response.description = format!("{}; {}", response.description, missing.join(", "));
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            operation.responses.responses.insert(status.into(), error_response(&text));
        }
    }
}

fn declares_idempotency_key(operation: &Operation) -> bool {
    operation.parameters.iter().flatten().any(|p| p.name.eq_ignore_ascii_case("Idempotency-Key"))
}

/// The `Idempotency-Key` header as the server reads it (`IdempotencyKey::parse`),
/// replacing whatever the operation declared.
fn require_idempotency_key(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.retain(|p| !p.name.eq_ignore_ascii_case("Idempotency-Key"));
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(IdempotencyKey::LEN_MIN))
        .max_length(Some(IdempotencyKey::LEN_MAX))
        .pattern(Some("^[!-~]+$"));
    parameters.push(
        ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(utoipa::openapi::Required::True)
            .description(Some(
                "8..=128 printable ASCII characters without spaces; the same key with the same request replays the \
first answer (`Idempotent-Replayed: true`), with another request 409 `idempotency_key_reused`, while the first runs \
409 `request_in_progress`",
            ))
            .schema(Some(schema))
            .build(),
    );
    add_error(operation, "400", &["idempotency_key_missing", "idempotency_key_invalid"]);
    add_error(operation, "409", &["idempotency_key_reused", "request_in_progress"]);
}

fn decorate(operation: &mut Operation, api: bool) {
    let parameter: Parameter = ParameterBuilder::new()
        .name("X-Correlation-Id")
        .parameter_in(ParameterIn::Header)
        .description(Some("Optional UUID tying logs and events together; echoed on the response"))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid))),
        ))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(parameter);
    // The correlation layer runs before every route.
    add_error(operation, "400", &["invalid_correlation_id"]);
    if api && operation.request_body.as_ref().is_some_and(|b| b.content.contains_key("application/json")) {
        // `extract::ApiJson`: syntax, size, media type, shape.
        add_error(operation, "400", &["malformed_json"]);
        add_error(operation, "413", &["payload_too_large"]);
        add_error(operation, "415", &["unsupported_media_type"]);
        add_error(operation, "422", &["invalid_body"]);
    }
    if operation.security.is_some() {
        operation
            .responses
            .responses
            .insert("401".into(), error_response("`unauthenticated`: missing, invalid or expired token"));
    }
    if api {
        operation.responses.responses.insert("500".into(), error_response("`internal`"));
        operation.responses.responses.insert(
            "503".into(),
            error_response(
                "`contention`, `timeout` or `unavailable` (the database could not be reached: the outcome is \
unknown); see `Retry-After` and retry with the same idempotency key",
            ),
        );
    }
}

/// Which configured limit bounds a body field.
#[derive(Clone, Copy)]
enum Limit {
    AmountFen,
    Points,
}

/// Body fields whose maximum is configuration (`limits.amount_fen_max`,
/// `limits.points_max`): (schema, property, limit).
const CONFIGURED_MAXIMA: [(&str, &str, Limit); 5] = [
    ("GrantPointsBody", "points", Limit::Points),
    ("DeductPointsBody", "points", Limit::Points),
    ("CashBody", "amount_fen", Limit::AmountFen),
    ("RefundBody", "amount_fen", Limit::AmountFen),
    ("RechargeBody", "amount_fen", Limit::AmountFen),
];

/// The document of a server with these limits (the committed copy has the defaults).
pub fn document_for(limits: &Limits) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let mut schemas = doc.components.as_mut().map(|c| &mut c.schemas);
    for (schema, property, limit) in CONFIGURED_MAXIMA {
        let max = match limit {
            Limit::AmountFen => limits.amount_fen_max,
            Limit::Points => limits.points_max,
        };
        let field = schemas.as_deref_mut().and_then(|s| s.get_mut(schema)).and_then(|s| match s {
            RefOr::T(Schema::Object(o)) => o.properties.get_mut(property),
            _ => None,
        });
        if let Some(RefOr::T(Schema::Object(field))) = field {
            field.maximum = isize::try_from(max).ok().map(utoipa::Number::Int);
        }
    }
    doc
}

/// The document with the default limits (what the tests check).
#[cfg(test)]
pub fn document() -> utoipa::openapi::OpenApi {
    document_for(&Limits::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/openapi.json");
        let generated = format!("{}\n", crate::openapi_json());
        if std::env::var("WXCM_WRITE_OPENAPI").is_ok_and(|v| v == "1") {
            std::fs::write(path, &generated).expect("write schemas/openapi.json");
        }
        let committed = std::fs::read_to_string(path)
            .expect("schemas/openapi.json is missing; run WXCM_WRITE_OPENAPI=1 cargo test -p wxcm-http");
        assert!(
            committed == generated,
            "schemas/openapi.json is stale; run WXCM_WRITE_OPENAPI=1 cargo test -p wxcm-http"
        );
    }

    #[test]
    fn configured_maxima_name_existing_fields() {
        let limits = Limits { amount_fen_max: 123, points_max: 456, ..Limits::default() };
        let doc = serde_json::to_value(document_for(&limits)).unwrap();
        for (schema, property, limit) in CONFIGURED_MAXIMA {
            let want = match limit {
                Limit::AmountFen => 123,
                Limit::Points => 456,
            };
            let max = &doc["components"]["schemas"][schema]["properties"][property]["maximum"];
            assert_eq!(max, want, "{schema}.{property}");
        }
    }

    /// utoipa names a component after its type and silently keeps one of two
    /// types of the same name (in two modules), so a route would document the
    /// other's body. Every type deriving `ToSchema` here has a name of its own.
    #[test]
    fn schema_types_have_names_of_their_own() {
        fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("source dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    rust_files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        rust_files(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")), &mut files);
        let mut seen: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        let mut clashes = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            let mut deriving = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with("#[derive(") && line.contains("ToSchema") {
                    deriving = true;
                    continue;
                }
                if deriving && !line.starts_with("#[") && !line.starts_with("///") {
                    deriving = false;
                    let name = line
                        .strip_prefix("pub ")
                        .unwrap_or(line)
                        .split_whitespace()
                        .skip_while(|w| *w != "struct" && *w != "enum")
                        .nth(1)
                        .map(|n| n.trim_end_matches(['{', '(', ';', '<']).to_owned());
                    let Some(name) = name else { continue };
                    let here = file.display().to_string();
                    if let Some(first) = seen.insert(name.clone(), here.clone()) {
                        clashes.push(format!("{name}: {first} and {here}"));
                    }
                }
            }
        }
        assert!(clashes.is_empty(), "schema types named twice: {clashes:#?}");
    }

    #[test]
    fn menu_button_types_are_the_ones_the_server_takes() {
        let doc = serde_json::to_value(document()).unwrap();
        let documented = &doc["components"]["schemas"]["MenuButtonType"]["enum"];
        let taken: Vec<&str> = crate::resources::wechat::menus::MENU_TYPES.to_vec();
        assert_eq!(documented, &serde_json::json!(taken));
    }

    #[test]
    fn every_admin_and_member_operation_but_sign_in_is_secured() {
        let doc = document();
        for (path, item) in &doc.paths.paths {
            let operations = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
            for operation in operations.into_iter().flatten() {
                let secured = operation.security.is_some();
                let public = !(path.starts_with("/admin/") || path.starts_with("/m/api/"))
                    || path == "/admin/api/v1/login"
                    || path == "/m/api/v1/sessions";
                assert_eq!(secured, !public, "{path}");
            }
        }
    }

    #[test]
    fn payment_member_and_notify_routes_are_documented() {
        let doc = document();
        for path in [
            "/pay/notify/v2/{appid}",
            "/pay/notify/v3/{appid}",
            "/pay/notify/refund/{appid}",
            "/m/api/v1/sessions",
            "/m/api/v1/me",
            "/m/api/v1/recharges",
            "/m/api/v1/recharges/{order_id}",
            "/admin/api/v1/payments",
            "/admin/api/v1/payments/{order_id}",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
        let schemes = doc.components.map(|c| c.security_schemes).unwrap_or_default();
        assert!(schemes.contains_key("member_bearer"));
    }
}
