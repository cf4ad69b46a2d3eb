//! The committed event schemas (`schemas/events/*.schema.json`) are current,
//! every event variant validates against them, and they reject what
//! deserialization rejects.
//!
//! Regenerate after changing an event type:
//! `WXCM_WRITE_SCHEMAS=1 cargo test -p wxcm-domain --test event_schemas`

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use jsonschema::Validator;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use wxcm_domain::campaign::{
    AwardRef, BeaconRound, BeaconValue, CampaignEvent, CampaignId, CampaignKind, CampaignTerms, CampaignText, Cycle,
    DrawSeed, EntrantsHash, EntryId, EntryRefund, ItemSubmitters, Limits, PeriodWinner, PeriodicTerms, Prize,
    PrizeTier, PurchaseId, ShakeDraw, ShakeSlot, ShakeTerms, SharePayMethod, SharePayment, ShareRefund, SnatchTerms,
    TicketSource, VoteItemId, VoteItemText, VotePeriod, VotingTerms,
};
use wxcm_domain::coupon::{
    Audience, Benefit, CouponEvent, CouponId, CouponTerms, CouponText, IssueChannel, IssueGrant, IssuedCoupon,
    RedemptionCode, Stock, TemplateEvent, TemplateId, Validity,
};
use wxcm_domain::distribution::{
    CommissionAccountEvent, CommissionKey, CommissionLevel, CommissionRule, DistributorEvent, EnrolmentRoute,
    LevelRates, PayoutMethod, RateBps, WithdrawalId,
};
use wxcm_domain::mall::{
    AppliedCoupon, CashPayment, CashRefund, ImageUrl, MallOrderEvent, MallOrderId, OrderEnd, OrderRefund, OrderTotals,
    PaymentMethod, PlacedOrder, Price, ProductDescription, ProductEvent, ProductId, ProductListing, ProductName,
    Quantity, ReleaseReason, Stock as ProductStock,
};
use wxcm_domain::member::{
    Attribution, CardLevel, ExpiryPolicy, LotTake, MemberEvent, PointsSource, Provenance, RegistrationSource,
    SpendPurpose,
};
use wxcm_domain::payment::{CloseReason, PaidVia, PayApiVersion, PaymentEvent, PaymentPurpose};
use wxcm_domain::schema::{
    event_schemas, schema_path, CAMPAIGN_EVENTS, COMMISSION_ACCOUNT_EVENTS, COUPON_EVENTS, COUPON_TEMPLATE_EVENTS,
    DISTRIBUTOR_EVENTS, MALL_ORDER_EVENTS, MALL_PRODUCT_EVENTS, MEMBER_EVENTS, PAYMENT_EVENTS, TENANT_EVENTS,
};
use wxcm_domain::tenant::{OfficialAccount, PaySettings, PointsRules, SealedSecret, TenantEvent};
use wxcm_domain::{
    Actor, AmountFen, AppId, BalanceFen, CardNumber, DomainEventMeta, IdempotencyKey, MemberId, OpenId, OutTradeNo,
    PayRef, PointsAmount, PointsBalance, Reference, SceneKey, TenantId,
};

const WRITE_ENV: &str = "WXCM_WRITE_SCHEMAS";
const REGENERATE: &str = "WXCM_WRITE_SCHEMAS=1 cargo test -p wxcm-domain --test event_schemas";

fn workspace_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn schema(name: &str) -> Value {
    event_schemas()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no schema named {name}"))
}

fn validator(schema: &Value) -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("the generated schema compiles")
}

fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect()
}

// ---------------------------------------------------------------- (a) drift

#[test]
fn committed_schemas_are_current() {
    let write = std::env::var_os(WRITE_ENV).is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, generated) in event_schemas() {
        let relative = schema_path(name);
        let path = workspace_file(&relative);
        let text = format!("{}\n", serde_json::to_string_pretty(&generated).unwrap());
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).ok();
        let current =
            committed.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok()).is_some_and(|c| c == generated);
        if !current {
            stale.push(relative);
        }
    }
    assert!(
        stale.is_empty(),
        "{} missing or out of date with the event types; regenerate with:\n    {REGENERATE}\nand commit the result",
        stale.join(", ")
    );
}

// ---------------------------------------------------------------- samples

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn pts(n: i64) -> PointsAmount {
    PointsAmount::new(n).unwrap()
}

fn fen(n: i64) -> AmountFen {
    AmountFen::new(n).unwrap()
}

fn take(lot_no: u64, points: i64) -> LotTake {
    LotTake { lot_no, points: pts(points) }
}

fn provenance(reference_too: bool) -> Provenance {
    Provenance {
        actor: Actor::Staff { username: "clerk".into() },
        reason: reference("counter sale"),
        reference: reference_too.then(|| reference("ticket-42")),
        idempotency_key: IdempotencyKey::parse("key-00000001").unwrap(),
    }
}

/// One sample per variant (the test below checks none is missing).
fn member_events() -> Vec<MemberEvent> {
    let tenant = TenantId::parse("acme-cinema").unwrap();
    let openid = OpenId::parse("oABCdef123456").unwrap();
    let p = provenance;
    vec![
        MemberEvent::MemberRegistered {
            member_id: MemberId::for_openid(&tenant, &openid),
            tenant_id: tenant,
            card_no: CardNumber::from_serial(7).unwrap(),
            openid: Some(openid),
            source: RegistrationSource::Subscribe,
            card_level: CardLevel::standard(),
            registered_at: at("2026-03-10T02:00:00Z"),
            actor: Actor::Wechat { source: "subscribe".into() },
            idempotency_key: IdempotencyKey::parse("wx-msg-123456").unwrap(),
            attribution: None,
        },
        MemberEvent::MemberRegistered {
            member_id: MemberId::new_random(),
            tenant_id: TenantId::parse("acme-cinema").unwrap(),
            card_no: CardNumber::from_serial(8).unwrap(),
            openid: None,
            source: RegistrationSource::Oauth,
            card_level: CardLevel::standard(),
            registered_at: at("2026-03-10T02:00:00Z"),
            actor: Actor::Wechat { source: "oauth".into() },
            idempotency_key: IdempotencyKey::parse("wx-msg-123457").unwrap(),
            attribution: Some(Attribution::Referral { referrer: MemberId::new_random() }),
        },
        MemberEvent::MemberFollowed {
            attribution: Attribution::SceneQr { scene: SceneKey::parse("poster-7").unwrap() },
            followed_at: at("2026-03-11T02:00:00Z"),
            provenance: Provenance { actor: Actor::Wechat { source: "subscribe".into() }, ..p(false) },
        },
        MemberEvent::MemberFollowed {
            attribution: Attribution::Direct,
            followed_at: at("2026-03-11T02:00:00Z"),
            provenance: p(false),
        },
        MemberEvent::MemberUnfollowed { unfollowed_at: at("2026-03-12T02:00:00Z"), provenance: p(false) },
        MemberEvent::CardLevelChanged {
            from: CardLevel::standard(),
            to: CardLevel::parse("金卡 gold").unwrap(),
            source: wxcm_domain::card_levels::LevelSource::Manual,
            provenance: Provenance { actor: Actor::Admin { username: "boss".into() }, ..p(true) },
        },
        MemberEvent::CardLevelChanged {
            from: CardLevel::parse("金卡 gold").unwrap(),
            to: CardLevel::parse("black").unwrap(),
            source: wxcm_domain::card_levels::LevelSource::Rule,
            provenance: Provenance { actor: Actor::System { job: "card_level_rule".into() }, ..p(false) },
        },
        MemberEvent::PurchasePaid {
            amount_fen: AmountFen::new(2_500).unwrap(),
            payment: Reference::parse("mall-order:6f1c1a52").unwrap(),
            provenance: p(false),
            total_paid_after_fen: BalanceFen::new(2_500).unwrap(),
        },
        MemberEvent::PurchaseRefunded {
            amount_fen: AmountFen::new(500).unwrap(),
            payment: Reference::parse("mall-order:6f1c1a52").unwrap(),
            provenance: p(false),
            total_paid_after_fen: BalanceFen::new(2_000).unwrap(),
        },
        MemberEvent::PointsGranted {
            lot_no: 1,
            points: pts(PointsAmount::MAX),
            source: PointsSource::SignIn,
            granted_at: at("2026-03-10T02:00:00Z"),
            expires_at: Some(at("2026-03-31T16:00:00Z")),
            provenance: p(false),
            points_after: PointsBalance::new(PointsAmount::MAX).unwrap(),
        },
        MemberEvent::PointsDeducted {
            points: pts(5),
            taken: vec![take(1, 5)],
            provenance: p(true),
            points_after: PointsBalance::new(95).unwrap(),
        },
        MemberEvent::PointsSpent {
            points: pts(30),
            purpose: SpendPurpose::Lottery,
            taken: vec![take(1, 10), take(2, 20)],
            provenance: Provenance { actor: Actor::Member { member_id: MemberId::new_random() }, ..p(false) },
            points_after: PointsBalance::ZERO,
        },
        MemberEvent::PointsHeld {
            hold_id: reference("order-1"),
            points: pts(1),
            taken: vec![take(3, 1)],
            provenance: p(false),
            points_after: PointsBalance::new(9).unwrap(),
            held_after: 1,
        },
        MemberEvent::HeldPointsSpent {
            hold_id: reference("order-1"),
            points: pts(1),
            provenance: p(false),
            points_after: PointsBalance::new(9).unwrap(),
            held_after: 0,
        },
        MemberEvent::PointsHoldReleased {
            hold_id: reference("order-2"),
            points: pts(50),
            returned: vec![take(2, 10)],
            expired: vec![take(1, 40)],
            provenance: p(false),
            points_after: PointsBalance::new(60).unwrap(),
            held_after: 0,
        },
        MemberEvent::PointsExpired {
            points: pts(70),
            lots: vec![take(1, 70)],
            as_of: at("2026-03-31T16:00:00Z"),
            provenance: Provenance { actor: Actor::System { job: "scheduler".into() }, ..p(false) },
            points_after: PointsBalance::ZERO,
        },
        MemberEvent::CashDeposited {
            amount_fen: fen(AmountFen::MAX),
            provenance: p(false),
            balance_after_fen: BalanceFen::new(AmountFen::MAX).unwrap(),
        },
        MemberEvent::CashCharged { amount_fen: fen(1), provenance: p(true), balance_after_fen: BalanceFen::ZERO },
        MemberEvent::RechargeCredited {
            amount_fen: fen(10_000),
            order_id: reference("4200001234202603100000000001"),
            provenance: Provenance { actor: Actor::Wechat { source: "pay-v3".into() }, ..p(true) },
            balance_after_fen: BalanceFen::new(10_000).unwrap(),
        },
        MemberEvent::ChargeRefunded {
            amount_fen: fen(1),
            reverses_sequence: 11,
            provenance: p(true),
            balance_after_fen: BalanceFen::new(10_001).unwrap(),
        },
        MemberEvent::RechargeReversed {
            amount_fen: fen(1),
            order_id: reference("rc20260310000001"),
            refund_no: reference("rf20260311000001"),
            provenance: Provenance { actor: Actor::Wechat { source: "pay-v3".into() }, ..p(false) },
            balance_after_fen: BalanceFen::new(10_000).unwrap(),
        },
        MemberEvent::RechargeReversalFlagged {
            amount_fen: fen(10_000),
            order_id: reference("rc20260310000001"),
            refund_no: reference("rf20260311000002"),
            balance_fen: BalanceFen::ZERO,
            provenance: p(true),
        },
    ]
}

fn account(pay: Option<PaySettings>) -> OfficialAccount {
    OfficialAccount {
        appid: AppId::parse("wx0123456789abcdef").unwrap(),
        name: "Acme Cinema".into(),
        token: SealedSecret::from_ciphertext("sealed:token".into()),
        encoding_aes_key: SealedSecret::from_ciphertext("sealed:aes".into()),
        app_secret: SealedSecret::from_ciphertext("sealed:secret".into()),
        pay,
    }
}

fn tenant_events() -> Vec<TenantEvent> {
    let admin = Actor::Admin { username: "operator".into() };
    vec![
        TenantEvent::TenantCreated {
            tenant_id: TenantId::parse("acme-cinema").unwrap(),
            name: "Acme Cinema".into(),
            created_at: at("2026-01-01T00:00:00Z"),
            actor: admin.clone(),
        },
        TenantEvent::TenantRenamed { name: "Acme Cinemas 影城".into(), actor: admin.clone() },
        TenantEvent::OfficialAccountBound {
            account: account(Some(PaySettings {
                mch_id: "1900000109".into(),
                api_v2_key: Some(SealedSecret::from_ciphertext("sealed:v2".into())),
                api_v3_key: None,
                merchant_cert_serial: Some("5157F09EFDC096DE15EBE81A47057A72".into()),
                merchant_private_key: Some(SealedSecret::from_ciphertext("sealed:pk".into())),
            })),
            actor: admin.clone(),
        },
        TenantEvent::OfficialAccountBound { account: account(None), actor: admin.clone() },
        TenantEvent::OfficialAccountUnbound {
            appid: AppId::parse("wx0123456789abcdef").unwrap(),
            actor: admin.clone(),
        },
        TenantEvent::PointsRulesSet { rules: PointsRules::default(), actor: admin.clone() },
        TenantEvent::PointsRulesSet {
            rules: PointsRules {
                initial_points: 100,
                referral_level1_points: 1_000_000,
                referral_level2_points: 0,
                expiry: ExpiryPolicy::Days { days: 365 },
            },
            actor: admin.clone(),
        },
        TenantEvent::ComponentAccountAuthorized {
            appid: AppId::parse("wx00000000000000aa").unwrap(),
            refresh_token: SealedSecret::from_ciphertext("sealed:refresh".into()),
            authorized_at: Some(at("2026-01-02T00:00:00Z")),
            actor: Actor::Wechat { source: "component".into() },
        },
        TenantEvent::ComponentAccountDeauthorized {
            appid: AppId::parse("wx00000000000000aa").unwrap(),
            actor: admin.clone(),
        },
        TenantEvent::CardLevelsSet {
            catalog: serde_json::from_value(serde_json::json!({
                "levels": [
                    { "name": "普卡", "image_url": "https://img.example.com/a.png", "colour": "#C0C0C0",
                      "privileges": "", "threshold": null },
                    { "name": "银卡", "image_url": "https://img.example.com/b.png", "colour": "#A0A0A0",
                      "privileges": "9.5 折", "threshold": { "kind": "lifetime_points", "points": 1000 } },
                    { "name": "金卡", "image_url": "https://img.example.com/c.png", "colour": "#C0A060",
                      "privileges": "9 折\n生日双倍积分", "threshold": { "kind": "total_paid", "fen": 100000 } }
                ],
                "downgrade": "rule_levels_only"
            }))
            .unwrap(),
            revision: 1,
            actor: admin,
        },
    ]
}

fn pay_ref(s: &str) -> PayRef {
    PayRef::parse(s).unwrap()
}

fn payment_events() -> Vec<PaymentEvent> {
    let tenant = TenantId::parse("acme-cinema").unwrap();
    let openid = OpenId::parse("oABCdef123456").unwrap();
    vec![
        PaymentEvent::PaymentOrderCreated {
            order_id: OutTradeNo::parse("rc20260310000001").unwrap(),
            member_id: MemberId::for_openid(&tenant, &openid),
            tenant_id: tenant,
            openid,
            appid: AppId::parse("wx0123456789abcdef").unwrap(),
            mch_id: pay_ref("1900000109"),
            purpose: PaymentPurpose::BalanceRecharge,
            amount_fen: fen(10_000),
            api_version: PayApiVersion::V3,
            created_at: at("2026-03-10T02:00:00Z"),
            expires_at: at("2026-03-10T02:30:00Z"),
            provenance: provenance(false),
        },
        PaymentEvent::PaymentOrderPaid {
            transaction_id: pay_ref("4200001234202603100000000001"),
            total_fen: fen(10_000),
            paid_at: at("2026-03-10T02:01:00Z"),
            via: PaidVia::NotifyV3,
            notification_id: Some(pay_ref("EV-2018022511223320873")),
        },
        PaymentEvent::PaymentOrderPaid {
            transaction_id: pay_ref("4200001234202603100000000001"),
            total_fen: fen(10_000),
            paid_at: at("2026-03-10T02:01:00Z"),
            via: PaidVia::Query,
            notification_id: None,
        },
        PaymentEvent::PaymentOrderClosed { reason: CloseReason::Expired, closed_at: at("2026-03-10T02:30:00Z") },
        PaymentEvent::PaymentOrderRefunded {
            refund_no: pay_ref("rf20260311000001"),
            refund_id: pay_ref("50000000382019052709732678859"),
            amount_fen: fen(10_000),
            refunded_total_fen: 10_000,
            fully_refunded: true,
            succeeded_at: at("2026-03-11T02:00:00Z"),
        },
    ]
}

fn coupon_terms(benefit: Benefit, validity: Validity, audience: Audience) -> CouponTerms {
    CouponTerms {
        name: CouponText::parse("满100减10").unwrap(),
        benefit,
        validity,
        per_member_limit: Some(2),
        audience,
    }
}

fn template_events() -> Vec<TemplateEvent> {
    let admin = Actor::Admin { username: "boss".into() };
    let cash = Benefit::Cash { value_fen: fen(1_000), min_spend_fen: Some(fen(10_000)) };
    let window = Validity::Window { from: at("2026-12-01T00:00:00Z"), until: at("2027-01-01T00:00:00Z") };
    let gold = Audience::CardLevels { levels: vec![wxcm_domain::member::CardLevel::parse("gold").unwrap()] };
    let grant = IssueGrant {
        coupon_id: CouponId::from_uuid(uuid::Uuid::from_u128(5)),
        member_id: MemberId::from_uuid(uuid::Uuid::from_u128(6)),
        serial: 1,
    };
    vec![
        TemplateEvent::CouponTemplateCreated {
            template_id: TemplateId::from_uuid(uuid::Uuid::from_u128(4)),
            tenant_id: TenantId::parse("acme").unwrap(),
            terms: coupon_terms(cash, window, Audience::AllMembers),
            stock: Stock::Finite { total: 100 },
            actor: admin.clone(),
            created_at: at("2026-12-01T00:00:00Z"),
        },
        TemplateEvent::CouponTemplateEdited {
            terms: coupon_terms(
                Benefit::Discount { percent_off: 15, cap_fen: None },
                Validity::DaysFromIssue { days: 7 },
                gold,
            ),
            actor: admin.clone(),
            edited_at: at("2026-12-02T00:00:00Z"),
        },
        TemplateEvent::CouponStockSet {
            stock: Stock::Unlimited,
            actor: admin.clone(),
            set_at: at("2026-12-02T00:00:00Z"),
        },
        TemplateEvent::CouponTemplateSwitched {
            enabled: false,
            actor: admin.clone(),
            switched_at: at("2026-12-02T00:00:00Z"),
        },
        TemplateEvent::CouponWelcomeSet { on: true, actor: admin, set_at: at("2026-12-02T00:00:00Z") },
        TemplateEvent::CouponsIssued { grants: vec![grant], issued_after: 1, issued_at: at("2026-12-03T00:00:00Z") },
    ]
}

fn coupon_events() -> Vec<CouponEvent> {
    let staff = Actor::Staff { username: "clerk".into() };
    let issued = IssuedCoupon {
        coupon_id: CouponId::from_uuid(uuid::Uuid::from_u128(5)),
        tenant_id: TenantId::parse("acme").unwrap(),
        template_id: TemplateId::from_uuid(uuid::Uuid::from_u128(4)),
        member_id: MemberId::from_uuid(uuid::Uuid::from_u128(6)),
        serial: 1,
        code: RedemptionCode::from_random([7; RedemptionCode::BYTES]),
        name: CouponText::parse("free popcorn").unwrap(),
        benefit: Benefit::Gift { item: CouponText::parse("popcorn").unwrap() },
        valid_from: at("2026-12-03T00:00:00Z"),
        valid_until: at("2026-12-10T00:00:00Z"),
        channel: IssueChannel::MemberClaim { ordinal: Some(1) },
        actor: Actor::Member { member_id: MemberId::from_uuid(uuid::Uuid::from_u128(6)) },
        issued_at: at("2026-12-03T00:00:00Z"),
    };
    let granted =
        IssuedCoupon { channel: IssueChannel::OperatorGrant { reason: reference("apology") }, ..issued.clone() };
    let dispatched =
        IssuedCoupon { channel: IssueChannel::Dispatch { job_id: uuid::Uuid::from_u128(9) }, ..issued.clone() };
    let with_purchase = IssuedCoupon {
        channel: IssueChannel::MallPurchase { order_id: MallOrderId::from_uuid(uuid::Uuid::from_u128(11)) },
        ..issued.clone()
    };
    let prize = IssuedCoupon {
        channel: IssueChannel::CampaignPrize { campaign_id: uuid::Uuid::from_u128(12), award: reference("draw 1/3") },
        ..issued.clone()
    };
    vec![
        CouponEvent::CouponIssued(Box::new(issued)),
        CouponEvent::CouponIssued(Box::new(granted)),
        CouponEvent::CouponIssued(Box::new(dispatched)),
        CouponEvent::CouponIssued(Box::new(with_purchase)),
        CouponEvent::CouponIssued(Box::new(prize)),
        CouponEvent::CouponRedeemed {
            store: Some(reference("store 1")),
            actor: staff.clone(),
            redeemed_at: at("2026-12-04T00:00:00Z"),
        },
        CouponEvent::CouponVoided { reason: reference("mistake"), actor: staff, voided_at: at("2026-12-04T00:00:00Z") },
        CouponEvent::CouponExpired { expired_at: at("2026-12-10T00:00:00Z") },
        CouponEvent::CouponHeld { order_id: mall_order(), held_at: at("2026-12-04T00:00:00Z") },
        CouponEvent::CouponUsed { order_id: mall_order(), used_at: at("2026-12-04T00:05:00Z") },
        CouponEvent::CouponReleased { order_id: mall_order(), released_at: at("2026-12-04T00:15:00Z") },
        CouponEvent::CouponReturned { order_id: mall_order(), returned_at: at("2026-12-05T00:00:00Z") },
    ]
}

fn mall_order() -> wxcm_domain::mall::MallOrderId {
    wxcm_domain::mall::MallOrderId::parse("6f9619ff-8b86-d011-b42d-00cf4fc964ff").unwrap()
}

#[test]
fn every_coupon_template_event_variant_validates() {
    check_samples(COUPON_TEMPLATE_EVENTS, &template_events());
}

#[test]
fn every_coupon_event_variant_validates() {
    check_samples(COUPON_EVENTS, &coupon_events());
}

fn product_listing() -> ProductListing {
    ProductListing {
        name: ProductName::parse("爆米花 popcorn").unwrap(),
        description: ProductDescription::parse("Large.\nSalted or sweet.").unwrap(),
        images: vec![ImageUrl::parse("https://img.example.com/p/1.jpg?w=640").unwrap()],
    }
}

fn mall_order_id() -> MallOrderId {
    MallOrderId::from_uuid(uuid::Uuid::from_u128(11))
}

fn product_events() -> Vec<ProductEvent> {
    let admin = Actor::Admin { username: "boss".into() };
    let order_id = mall_order_id();
    let member_id = MemberId::from_uuid(uuid::Uuid::from_u128(6));
    let two = Quantity::new(2).unwrap();
    let price = Price::PointsAndFen { points: pts(200), amount_fen: fen(990) };
    vec![
        ProductEvent::ProductCreated {
            product_id: ProductId::from_uuid(uuid::Uuid::from_u128(10)),
            tenant_id: TenantId::parse("acme").unwrap(),
            listing: product_listing(),
            price: Price::Points { points: pts(500) },
            stock: ProductStock::Finite { total: 100 },
            per_member_limit: Some(2),
            on_sale: true,
            actor: admin.clone(),
            created_at: at("2026-12-01T00:00:00Z"),
        },
        ProductEvent::ProductListingEdited {
            listing: ProductListing { images: Vec::new(), ..product_listing() },
            actor: admin.clone(),
            edited_at: at("2026-12-01T01:00:00Z"),
        },
        ProductEvent::ProductPriceSet { price, actor: admin.clone(), set_at: at("2026-12-01T02:00:00Z") },
        ProductEvent::ProductPriceSet {
            price: Price::Fen { amount_fen: fen(1_500) },
            actor: admin.clone(),
            set_at: at("2026-12-01T02:00:00Z"),
        },
        ProductEvent::ProductStockSet {
            stock: ProductStock::Unlimited,
            actor: admin.clone(),
            set_at: at("2026-12-01T03:00:00Z"),
        },
        ProductEvent::ProductMemberLimitSet {
            per_member_limit: None,
            actor: admin.clone(),
            set_at: at("2026-12-01T03:00:00Z"),
        },
        ProductEvent::ProductGiftCouponSet {
            gift_coupon: Some(TemplateId::from_uuid(uuid::Uuid::from_u128(13))),
            actor: admin.clone(),
            set_at: at("2026-12-01T03:30:00Z"),
        },
        ProductEvent::ProductSaleSwitched { on_sale: false, actor: admin, switched_at: at("2026-12-01T04:00:00Z") },
        ProductEvent::ProductStockReserved {
            order_id,
            member_id,
            quantity: two,
            unit_price: price,
            expires_at: at("2026-12-02T00:15:00Z"),
            reserved_after: 2,
            member_units_after: Some(2),
            reserved_at: at("2026-12-02T00:00:00Z"),
        },
        ProductEvent::ProductReservationReleased {
            order_id,
            quantity: two,
            reason: ReleaseReason::Expired,
            reserved_after: 0,
            member_units_after: None,
            released_at: at("2026-12-02T00:15:00Z"),
        },
        ProductEvent::ProductSaleConfirmed {
            order_id,
            quantity: two,
            reserved_after: 0,
            sold_after: 2,
            confirmed_at: at("2026-12-02T00:05:00Z"),
        },
        ProductEvent::ProductSaleReturned {
            order_id,
            member_id,
            quantity: two,
            sold_after: 0,
            member_units_after: Some(0),
            returned_at: at("2026-12-03T00:00:00Z"),
        },
        ProductEvent::ProductCommissionSet {
            commission: Some(wxcm_domain::distribution::ProductCommission::FixedPerUnit {
                first_fen: fen(300),
                second_fen: Some(fen(100)),
            }),
            actor: Actor::Admin { username: "boss".into() },
            set_at: at("2026-12-03T01:00:00Z"),
        },
        ProductEvent::ProductCommissionSet {
            commission: Some(wxcm_domain::distribution::ProductCommission::Rates {
                rates: LevelRates::new(RateBps::new(1_200).unwrap(), RateBps::new(300).unwrap()).unwrap(),
            }),
            actor: Actor::Admin { username: "boss".into() },
            set_at: at("2026-12-03T01:00:00Z"),
        },
        ProductEvent::ProductCommissionSet {
            commission: Some(wxcm_domain::distribution::ProductCommission::Excluded),
            actor: Actor::Admin { username: "boss".into() },
            set_at: at("2026-12-03T01:00:00Z"),
        },
        ProductEvent::ProductCommissionSet {
            commission: None,
            actor: Actor::Admin { username: "boss".into() },
            set_at: at("2026-12-03T01:00:00Z"),
        },
    ]
}

fn mall_order_events() -> Vec<MallOrderEvent> {
    let admin = Actor::Admin { username: "boss".into() };
    let staff = Actor::Staff { username: "clerk".into() };
    let member_id = MemberId::from_uuid(uuid::Uuid::from_u128(6));
    let pay = CashPayment::WechatPay { amount_fen: fen(980), transaction_id: pay_ref("4200001234202612020000000001") };
    let placed = PlacedOrder {
        order_id: mall_order_id(),
        tenant_id: TenantId::parse("acme").unwrap(),
        member_id,
        product_id: ProductId::from_uuid(uuid::Uuid::from_u128(10)),
        product_name: ProductName::parse("爆米花 popcorn").unwrap(),
        quantity: Quantity::new(2).unwrap(),
        unit_price: Price::PointsAndFen { points: pts(200), amount_fen: fen(990) },
        coupon: Some(AppliedCoupon {
            coupon_id: CouponId::from_uuid(uuid::Uuid::from_u128(5)),
            benefit: Benefit::Cash { value_fen: fen(1_000), min_spend_fen: None },
        }),
        gift_coupon: Some(TemplateId::from_uuid(uuid::Uuid::from_u128(13))),
        totals: OrderTotals { points_total: 400, cash_fen: 1_980, discount_fen: 1_000, cash_due_fen: 980 },
        method: PaymentMethod::PointsAndWechatPay,
        placed_at: at("2026-12-02T00:00:00Z"),
        expires_at: at("2026-12-02T00:15:00Z"),
        actor: Actor::Member { member_id },
        idempotency_key: IdempotencyKey::parse("order-key-0001").unwrap(),
    };
    vec![
        MallOrderEvent::MallOrderPlaced(Box::new(placed)),
        MallOrderEvent::MallOrderPointsHeld {
            hold_id: mall_order_id().hold_id(),
            points: pts(400),
            held_at: at("2026-12-02T00:00:01Z"),
        },
        MallOrderEvent::MallOrderPaid {
            points: Some(pts(400)),
            cash: Some(pay.clone()),
            paid_at: at("2026-12-02T00:03:00Z"),
        },
        MallOrderEvent::MallOrderPaid {
            points: None,
            cash: Some(CashPayment::Balance { amount_fen: fen(1_500), charge_sequence: 17 }),
            paid_at: at("2026-12-02T00:03:00Z"),
        },
        MallOrderEvent::MallOrderExpired { expired_at: at("2026-12-02T00:15:00Z") },
        MallOrderEvent::MallOrderCancelled {
            actor: Actor::Member { member_id },
            reason: reference("changed my mind"),
            cancelled_at: at("2026-12-02T00:05:00Z"),
        },
        MallOrderEvent::MallOrderDelivered {
            actor: staff,
            store: reference("store 1"),
            delivered_at: at("2026-12-03T00:00:00Z"),
        },
        MallOrderEvent::MallOrderPaymentArrivedLate {
            cash: pay,
            after: OrderEnd::Expired,
            arrived_at: at("2026-12-02T00:15:03Z"),
        },
        MallOrderEvent::MallOrderRefunded {
            refund: OrderRefund {
                points_back: Some(pts(400)),
                cash_back: Some(CashRefund::WechatPay {
                    amount_fen: fen(980),
                    transaction_id: pay_ref("4200001234202612020000000001"),
                    refund_no: pay_ref("rf-0001"),
                }),
                quantity_back: Some(Quantity::new(2).unwrap()),
                coupon_back: Some(CouponId::from_uuid(uuid::Uuid::from_u128(5))),
            },
            actor: admin.clone(),
            reason: reference("customer request"),
            refunded_at: at("2026-12-04T00:00:00Z"),
            approves_request: Some(2),
        },
        MallOrderEvent::MallOrderRefundRequested {
            request_no: 1,
            actor: Actor::Member { member_id },
            reason: reference("the lid is cracked"),
            requested_at: at("2026-12-03T01:00:00Z"),
        },
        MallOrderEvent::MallOrderRefundRequestRejected {
            request_no: 1,
            actor: admin.clone(),
            reason: reference("no photo of the damage"),
            rejected_at: at("2026-12-03T02:00:00Z"),
        },
        MallOrderEvent::MallOrderRefunded {
            refund: OrderRefund {
                points_back: None,
                cash_back: Some(CashRefund::Balance { amount_fen: fen(1_500), charge_sequence: 17 }),
                quantity_back: None,
                coupon_back: None,
            },
            actor: admin.clone(),
            reason: reference("paid after expiry"),
            refunded_at: at("2026-12-04T00:00:00Z"),
            approves_request: None,
        },
        MallOrderEvent::MallOrderPriceChanged {
            old_cash_due_fen: fen(1_500),
            new_cash_due_fen: fen(1_200),
            actor: admin,
            reason: reference("loyal customer"),
            changed_at: at("2026-12-02T00:01:00Z"),
        },
        MallOrderEvent::MallOrderPaymentStarted { cash_due_fen: fen(1_200), started_at: at("2026-12-02T00:02:00Z") },
    ]
}

fn campaign_text(s: &str) -> CampaignText {
    CampaignText::parse(s).unwrap()
}

fn campaign_terms(kind: CampaignKind) -> CampaignTerms {
    CampaignTerms {
        name: campaign_text("周末抽奖 weekend draw"),
        starts_at: at("2026-12-04T16:00:00Z"),
        ends_at: at("2026-12-11T16:00:00Z"),
        members_only: true,
        limits: Limits { lifetime: Some(10), per_day: Some(2), per_period: None },
        kind,
    }
}

fn campaign_events() -> Vec<CampaignEvent> {
    let admin = Actor::Admin { username: "boss".into() };
    let scheduler = Actor::System { job: "scheduler".into() };
    let seed = DrawSeed::from_bytes([7; 32]);
    let member = MemberId::from_uuid(uuid::Uuid::from_u128(42));
    let coupon = Prize::Coupon { template_id: TemplateId::from_uuid(uuid::Uuid::from_u128(9)) };
    let periodic = CampaignKind::PeriodicLottery(PeriodicTerms {
        cycle: Cycle::Daily,
        tickets: TicketSource::Entries,
        entry_cost: Some(pts(10)),
        entrants_max: 1_000,
        tiers: vec![
            PrizeTier { prize: Prize::Physical { item: campaign_text("popcorn") }, count: 1 },
            PrizeTier { prize: Prize::Points { points: pts(100) }, count: 2 },
            PrizeTier { prize: coupon.clone(), count: 5 },
        ],
    });
    let shake = CampaignKind::ShakeLottery(ShakeTerms {
        slots: vec![
            ShakeSlot { prize: coupon.clone(), weight: 30, stock: Some(100) },
            ShakeSlot { prize: Prize::Thanks, weight: 70, stock: None },
        ],
        prizes_per_member_max: 1,
    });
    vec![
        CampaignEvent::CampaignCreated {
            campaign_id: CampaignId::from_uuid(uuid::Uuid::from_u128(500)),
            tenant_id: TenantId::parse("acme-cinema").unwrap(),
            terms: campaign_terms(periodic),
            actor: admin.clone(),
            created_at: at("2026-12-01T02:00:00Z"),
        },
        CampaignEvent::CampaignEdited {
            terms: campaign_terms(shake),
            actor: admin.clone(),
            edited_at: at("2026-12-01T03:00:00Z"),
        },
        CampaignEvent::CampaignScheduled {
            commitment: Some(seed.commitment()),
            actor: admin.clone(),
            scheduled_at: at("2026-12-02T02:00:00Z"),
        },
        CampaignEvent::CampaignScheduled {
            commitment: None,
            actor: admin.clone(),
            scheduled_at: at("2026-12-02T02:00:00Z"),
        },
        CampaignEvent::CampaignStarted { actor: scheduler.clone(), started_at: at("2026-12-04T16:00:00Z") },
        CampaignEvent::CampaignEnded { actor: admin.clone(), ended_at: at("2026-12-11T16:00:00Z") },
        CampaignEvent::CampaignPeriodOpened {
            period_no: 1,
            starts_at: at("2026-12-04T16:00:00Z"),
            ends_at: at("2026-12-05T16:00:00Z"),
            commitment: seed.commitment(),
            beacon: Some(BeaconRound { source: campaign_text("drand-quicknet"), round: 12_345_678 }),
            actor: scheduler.clone(),
            opened_at: at("2026-12-04T15:59:00Z"),
        },
        CampaignEvent::CampaignEntryRecorded {
            entry_id: EntryId::from_uuid(uuid::Uuid::from_u128(1)),
            member_id: member,
            period_no: 1,
            cost_points: Some(pts(10)),
            merchant_day: chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap(),
            member_total_after: 1,
            member_day_after: 1,
            member_period_after: 1,
            period_entries_after: 1,
            period_entrants_after: 1,
            entered_at: at("2026-12-05T02:00:00Z"),
            visitor_openid: None,
        },
        CampaignEvent::CampaignPeriodDrawn {
            period_no: 1,
            algorithm: "wxcm-draw-v1".into(),
            seed,
            beacon: Some(BeaconRound { source: campaign_text("drand-quicknet"), round: 12_345_678 }),
            beacon_value: Some(BeaconValue::parse(&"ab".repeat(32)).unwrap()),
            entrants_hash: EntrantsHash::from_bytes([3; 32]),
            entrants: 1,
            total_tickets: 1,
            winners: vec![PeriodWinner {
                rank: 1,
                member_id: member,
                prize: Prize::Physical { item: campaign_text("popcorn") },
            }],
            actor: scheduler.clone(),
            drawn_at: at("2026-12-05T16:00:00Z"),
        },
        CampaignEvent::CampaignPeriodCancelled {
            period_no: 2,
            refunds: vec![EntryRefund {
                entry_id: EntryId::from_uuid(uuid::Uuid::from_u128(2)),
                member_id: member,
                points: pts(10),
            }],
            actor: admin.clone(),
            cancelled_at: at("2026-12-06T02:00:00Z"),
        },
        CampaignEvent::CampaignShakesDrawn {
            draws: vec![
                ShakeDraw {
                    member_id: member,
                    nonce: 1,
                    merchant_day: chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap(),
                    member_day_after: 1,
                    table_version: 1,
                    total_weight: 100,
                    roll: 12,
                    slot: 0,
                    prize: coupon,
                    stock_left_after: Some(99),
                    member_prizes_after: 1,
                },
                ShakeDraw {
                    member_id: MemberId::from_uuid(uuid::Uuid::from_u128(43)),
                    nonce: 1,
                    merchant_day: chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap(),
                    member_day_after: 1,
                    table_version: 1,
                    total_weight: 100,
                    roll: 99,
                    slot: 1,
                    prize: Prize::Thanks,
                    stock_left_after: None,
                    member_prizes_after: 0,
                },
            ],
            drawn_at: at("2026-12-05T02:00:00Z"),
        },
        CampaignEvent::CampaignShakeSeedRevealed {
            algorithm: "wxcm-draw-v1".into(),
            seed,
            actor: scheduler,
            revealed_at: at("2026-12-11T16:00:00Z"),
        },
        CampaignEvent::CampaignPrizeHandedOver {
            award: AwardRef::Period { period_no: 1, rank: 1 },
            member_id: member,
            item: campaign_text("popcorn"),
            actor: Actor::Staff { username: "clerk".into() },
            handed_over_at: at("2026-12-06T02:00:00Z"),
        },
        CampaignEvent::CampaignPrizeHandedOver {
            award: AwardRef::Shake { member_id: member, nonce: 3 },
            member_id: member,
            item: campaign_text("poster"),
            actor: Actor::Staff { username: "clerk".into() },
            handed_over_at: at("2026-12-06T02:00:00Z"),
        },
        CampaignEvent::CampaignEdited {
            terms: campaign_terms(CampaignKind::Snatch(SnatchTerms {
                prize: Prize::Physical { item: campaign_text("phone") },
                shares_per_period: 100,
                shares_per_member_max: 10,
                shares_per_purchase_max: 5,
            })),
            actor: admin.clone(),
            edited_at: at("2026-12-01T03:00:00Z"),
        },
        CampaignEvent::SnatchSharesReserved {
            purchase_id: PurchaseId::from_uuid(uuid::Uuid::from_u128(77)),
            member_id: member,
            period_no: 1,
            quantity: 3,
            amount_fen: fen(300),
            method: SharePayMethod::WechatPay,
            member_held_after: 3,
            period_taken_after: 40,
            expires_at: at("2026-12-05T02:05:00Z"),
            reserved_at: at("2026-12-05T02:00:00Z"),
        },
        CampaignEvent::SnatchSharesReleased {
            purchase_id: PurchaseId::from_uuid(uuid::Uuid::from_u128(77)),
            member_id: member,
            period_no: 1,
            quantity: 3,
            period_taken_after: 37,
            released_at: at("2026-12-05T02:05:00Z"),
        },
        CampaignEvent::SnatchSharesConfirmed {
            purchase_id: PurchaseId::from_uuid(uuid::Uuid::from_u128(78)),
            member_id: member,
            period_no: 1,
            quantity: 2,
            payment: SharePayment::Balance { amount_fen: fen(200), charge_sequence: 12 },
            member_shares_after: 2,
            period_sold_after: 30,
            confirmed_at: at("2026-12-05T02:01:00Z"),
        },
        CampaignEvent::SnatchPaymentArrivedLate {
            purchase_id: PurchaseId::from_uuid(uuid::Uuid::from_u128(77)),
            member_id: member,
            payment: SharePayment::WechatPay { amount_fen: fen(300), transaction_id: pay_ref("4200000001") },
            released_shares: 0,
            recorded_at: at("2026-12-05T02:06:00Z"),
        },
        CampaignEvent::SnatchPeriodCancelled {
            period_no: 2,
            refunds: vec![ShareRefund {
                purchase_id: PurchaseId::from_uuid(uuid::Uuid::from_u128(79)),
                member_id: member,
                payment: SharePayment::Balance { amount_fen: fen(100), charge_sequence: 14 },
            }],
            cancelled_at: at("2026-12-11T16:00:00Z"),
        },
        CampaignEvent::CampaignEdited {
            terms: CampaignTerms {
                limits: Limits { lifetime: None, per_day: Some(3), per_period: None },
                ..campaign_terms(CampaignKind::Voting(VotingTerms {
                    submitters: ItemSubmitters::Anyone,
                    approval_reward: Some(pts(50)),
                    vote_period: VotePeriod::Day,
                    items_max: 200,
                    items_per_member_max: 2,
                }))
            },
            actor: admin.clone(),
            edited_at: at("2026-12-01T03:00:00Z"),
        },
        CampaignEvent::CampaignVoteItemSubmitted {
            item_id: VoteItemId::from_uuid(uuid::Uuid::from_u128(70)),
            title: campaign_text("海报 poster"),
            description: Some(VoteItemText::parse("two\nlines").unwrap()),
            member_id: Some(member),
            approved: false,
            items_after: 1,
            actor: Actor::Member { member_id: member },
            submitted_at: at("2026-12-05T02:00:00Z"),
        },
        CampaignEvent::CampaignVoteItemSubmitted {
            item_id: VoteItemId::from_uuid(uuid::Uuid::from_u128(71)),
            title: campaign_text("operator's item"),
            description: None,
            member_id: None,
            approved: true,
            items_after: 2,
            actor: admin.clone(),
            submitted_at: at("2026-12-05T02:00:00Z"),
        },
        CampaignEvent::CampaignVoteItemApproved {
            item_id: VoteItemId::from_uuid(uuid::Uuid::from_u128(70)),
            member_id: Some(member),
            reward: Some(pts(50)),
            actor: admin.clone(),
            approved_at: at("2026-12-05T03:00:00Z"),
        },
        CampaignEvent::CampaignVoteItemRejected {
            item_id: VoteItemId::from_uuid(uuid::Uuid::from_u128(72)),
            reason: campaign_text("off topic"),
            actor: admin.clone(),
            rejected_at: at("2026-12-05T03:00:00Z"),
        },
        CampaignEvent::CampaignVoteCast {
            item_id: VoteItemId::from_uuid(uuid::Uuid::from_u128(70)),
            member_id: member,
            merchant_day: chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap(),
            member_total_after: 1,
            member_day_after: 1,
            item_votes_after: 1,
            voted_at: at("2026-12-05T04:00:00Z"),
        },
    ]
}

#[test]
fn every_campaign_event_variant_validates() {
    check_samples(CAMPAIGN_EVENTS, &campaign_events());
}

fn commission_account_events() -> Vec<CommissionAccountEvent> {
    use CommissionAccountEvent as E;
    let member = MemberId::from_uuid(uuid::Uuid::from_u128(1));
    let buyer = MemberId::from_uuid(uuid::Uuid::from_u128(2));
    let key = CommissionKey { order_id: mall_order_id(), level: CommissionLevel::First };
    let second = CommissionKey { order_id: mall_order_id(), level: CommissionLevel::Second };
    let withdrawal_id = WithdrawalId::from_uuid(uuid::Uuid::from_u128(900));
    let balance = |n| BalanceFen::new(n).unwrap();
    let admin = Actor::Admin { username: "boss".into() };
    vec![
        E::CommissionAccountOpened {
            tenant_id: TenantId::parse("acme").unwrap(),
            distributor_id: member,
            opened_at: at("2026-12-01T10:00:00Z"),
        },
        E::CommissionAccrued {
            key,
            buyer_id: buyer,
            basis_fen: fen(9_990),
            quantity: Quantity::new(1).unwrap(),
            rule: CommissionRule::Rate { bps: RateBps::new(1_000).unwrap() },
            nearer_levels_fen: 0,
            amount_fen: fen(999),
            pending_after_fen: balance(999),
            accrued_at: at("2026-12-01T10:00:00Z"),
        },
        E::CommissionAccrued {
            key: second,
            buyer_id: buyer,
            basis_fen: fen(9_990),
            quantity: Quantity::new(3).unwrap(),
            rule: CommissionRule::FixedPerUnit { fen: fen(100) },
            nearer_levels_fen: 999,
            amount_fen: fen(300),
            pending_after_fen: balance(1_299),
            accrued_at: at("2026-12-01T10:00:00Z"),
        },
        E::CommissionSettled {
            key,
            amount_fen: fen(999),
            delivered_at: at("2026-12-02T10:00:00Z"),
            withdrawable_after_fen: balance(999),
            debt_after_fen: balance(0),
            settled_at: at("2026-12-09T10:00:00Z"),
        },
        E::CommissionReversed {
            key: second,
            amount_fen: fen(300),
            refund: reference("refund RF1"),
            pending_after_fen: balance(0),
            reversed_at: at("2026-12-03T10:00:00Z"),
        },
        E::WithdrawalRequested {
            withdrawal_id,
            amount_fen: fen(999),
            fee_fen: 5,
            payout_fen: fen(994),
            withdrawable_after_fen: balance(0),
            actor: Actor::Member { member_id: member },
            requested_at: at("2026-12-09T11:00:00Z"),
        },
        E::WithdrawalApproved {
            withdrawal_id,
            actor: admin.clone(),
            approved_at: at("2026-12-09T12:00:00Z"),
            method: PayoutMethod::WechatTransfer,
        },
        E::WithdrawalTransferRequested {
            withdrawal_id,
            attempt: 1,
            out_batch_no: withdrawal_id.transfer_nos(1).0,
            out_detail_no: withdrawal_id.transfer_nos(1).1,
            requested_at: at("2026-12-09T12:00:01Z"),
        },
        E::WithdrawalFailed {
            withdrawal_id,
            reason: reference("NAME_MISMATCH"),
            failed_at: at("2026-12-09T12:01:00Z"),
        },
        E::WithdrawalRetried { withdrawal_id, actor: admin.clone(), retried_at: at("2026-12-09T13:00:00Z") },
        E::WithdrawalPaid {
            withdrawal_id,
            payout_ref: reference("ledger credit 42"),
            paid_at: at("2026-12-09T13:01:00Z"),
        },
        E::CommissionClawedBack {
            key,
            amount_fen: fen(999),
            refund: reference("refund RF2"),
            withdrawable_after_fen: balance(0),
            debt_after_fen: balance(999),
            clawed_back_at: at("2026-12-10T10:00:00Z"),
        },
        E::WithdrawalRejected {
            withdrawal_id: WithdrawalId::from_uuid(uuid::Uuid::from_u128(901)),
            reason: reference("bank details wrong"),
            actor: admin.clone(),
            withdrawable_after_fen: balance(500),
            debt_after_fen: balance(0),
            rejected_at: at("2026-12-11T10:00:00Z"),
        },
        E::WithdrawalReturned {
            withdrawal_id: WithdrawalId::from_uuid(uuid::Uuid::from_u128(902)),
            actor: admin,
            withdrawable_after_fen: balance(800),
            debt_after_fen: balance(0),
            returned_at: at("2026-12-12T10:00:00Z"),
        },
    ]
}

#[test]
fn every_commission_account_event_variant_validates() {
    check_samples(COMMISSION_ACCOUNT_EVENTS, &commission_account_events());
}

#[test]
fn invalid_commission_account_events_are_rejected() {
    let reject =
        |what: &str, doc: Value| assert_rejected::<CommissionAccountEvent>(COMMISSION_ACCOUNT_EVENTS, what, doc);
    let doc_of = |event_type: &str| {
        serde_json::to_value(commission_account_events().into_iter().find(|e| e.event_type() == event_type).unwrap())
            .unwrap()
    };
    let mut doc = doc_of("CommissionAccrued");
    doc["CommissionAccrued"]["rule"]["bps"] = json!(10_001);
    reject("a rate above 100%", doc);
    let mut doc = doc_of("CommissionAccrued");
    doc["CommissionAccrued"]["amount_fen"] = json!(0);
    reject("a zero commission", doc);
    let mut doc = doc_of("CommissionAccrued");
    doc["CommissionAccrued"]["key"]["level"] = json!("third");
    reject("a third level", doc);
    let mut doc = doc_of("CommissionClawedBack");
    doc["CommissionClawedBack"]["debt_after_fen"] = json!(-1);
    reject("a negative debt (debt is its own figure)", doc);
    let mut doc = doc_of("WithdrawalRequested");
    doc["WithdrawalRequested"]["withdrawable_after_fen"] = json!(-5);
    reject("a negative balance", doc);
}

fn distributor_events() -> Vec<DistributorEvent> {
    use DistributorEvent as E;
    let member = MemberId::from_uuid(uuid::Uuid::from_u128(1));
    let tenant_id = TenantId::parse("acme").unwrap();
    let admin = Actor::Admin { username: "boss".into() };
    vec![
        E::DistributorApplied {
            tenant_id: tenant_id.clone(),
            member_id: member,
            actor: Actor::Member { member_id: member },
            applied_at: at("2026-12-01T10:00:00Z"),
        },
        E::DistributorRejected {
            reason: reference("profile incomplete"),
            actor: admin.clone(),
            rejected_at: at("2026-12-01T11:00:00Z"),
        },
        E::DistributorApproved { actor: admin.clone(), approved_at: at("2026-12-02T11:00:00Z") },
        E::DistributorEnrolled {
            tenant_id: tenant_id.clone(),
            member_id: member,
            route: EnrolmentRoute::SpendingThreshold { threshold_fen: fen(10_000), paid_net_fen: 12_000 },
            actor: Actor::Member { member_id: member },
            enrolled_at: at("2026-12-01T10:00:00Z"),
        },
        E::DistributorEnrolled {
            tenant_id,
            member_id: member,
            route: EnrolmentRoute::Designated,
            actor: admin.clone(),
            enrolled_at: at("2026-12-01T10:00:00Z"),
        },
        E::DistributorSuspended {
            reason: reference("fraud review"),
            actor: admin.clone(),
            suspended_at: at("2026-12-03T10:00:00Z"),
        },
        E::DistributorReinstated { actor: admin.clone(), reinstated_at: at("2026-12-04T10:00:00Z") },
        E::DistributorLevelSet {
            level: Some(wxcm_domain::distribution::DistributorLevelCode::parse("gold").unwrap()),
            previous: None,
            actor: admin.clone(),
            set_at: at("2026-12-04T11:00:00Z"),
        },
        E::DistributorLevelSet {
            level: None,
            previous: Some(wxcm_domain::distribution::DistributorLevelCode::parse("gold").unwrap()),
            actor: admin,
            set_at: at("2026-12-04T12:00:00Z"),
        },
    ]
}

#[test]
fn every_distributor_event_variant_validates() {
    check_samples(DISTRIBUTOR_EVENTS, &distributor_events());
}

#[test]
fn invalid_campaign_events_are_rejected() {
    let reject = |what: &str, doc: Value| assert_rejected::<CampaignEvent>(CAMPAIGN_EVENTS, what, doc);
    let doc_of = |event_type: &str| {
        serde_json::to_value(campaign_events().into_iter().find(|e| e.event_type() == event_type).unwrap()).unwrap()
    };
    let mut doc = doc_of("CampaignPeriodDrawn");
    doc["CampaignPeriodDrawn"]["seed"] = json!("AB".repeat(32));
    reject("an uppercase seed", doc);
    let mut doc = doc_of("CampaignPeriodDrawn");
    doc["CampaignPeriodDrawn"]["entrants_hash"] = json!("ab");
    reject("a short hash", doc);
    let mut doc = doc_of("CampaignPeriodDrawn");
    doc["CampaignPeriodDrawn"]["beacon_value"] = json!("ab".repeat(65));
    reject("a beacon value past 64 bytes", doc);
    let mut doc = doc_of("CampaignPeriodOpened");
    doc["CampaignPeriodOpened"]["commitment"] = json!("x".repeat(64));
    reject("a commitment that is not hex", doc);
    let mut doc = doc_of("CampaignCreated");
    doc["CampaignCreated"]["terms"]["kind"]["kind"] = json!("snatch");
    reject("a kind not built yet", doc);
    let mut doc = doc_of("CampaignCreated");
    doc["CampaignCreated"]["terms"]["kind"]["tiers"][1]["prize"] = json!({"kind": "points", "points": 0});
    reject("a prize of zero points", doc);
    let mut doc = doc_of("CampaignCreated");
    doc["CampaignCreated"]["terms"]["name"] = json!(" ");
    reject("a blank name", doc);
    let mut doc = doc_of("CampaignShakesDrawn");
    doc["CampaignShakesDrawn"]["draws"][0]["nonce"] = json!(-1);
    reject("a negative nonce", doc);
}

#[test]
fn campaign_text_and_hex_rules_match_the_parsers() {
    let def = |name| def_validator_in(CAMPAIGN_EVENTS, name);
    let (text, seed, beacon) = (def("CampaignText"), def("DrawSeed"), def("BeaconValue"));
    let texts = ["", " ", "popcorn", "爆米花", "line\nbreak", "del\u{7f}", "nel\u{85}", " x "];
    for s in texts.iter().map(|s| s.to_string()).chain([64, 65].map(|n| "x".repeat(n))) {
        agree::<CampaignText>(&text, &json!(s), true);
    }
    for s in ["", "ab", "AB", "abc", "zz"]
        .iter()
        .map(|s| s.to_string())
        .chain([31, 32, 33, 64, 65].into_iter().flat_map(|n| ["ab".repeat(n), "0f".repeat(n), "AB".repeat(n)]))
    {
        agree::<DrawSeed>(&seed, &json!(s), true);
        agree::<BeaconValue>(&beacon, &json!(s), true);
    }
}

#[test]
fn every_mall_product_event_variant_validates() {
    check_samples(MALL_PRODUCT_EVENTS, &product_events());
}

#[test]
fn every_mall_order_event_variant_validates() {
    check_samples(MALL_ORDER_EVENTS, &mall_order_events());
}

#[test]
fn invalid_mall_events_are_rejected() {
    let reject = |what: &str, doc: Value| assert_rejected::<ProductEvent>(MALL_PRODUCT_EVENTS, what, doc);
    let created = serde_json::to_value(&product_events()[0]).unwrap();
    let reserved = serde_json::to_value(&product_events()[7]).unwrap();
    for (what, quantity) in [("a zero quantity", 0), ("a negative quantity", -3), ("a huge quantity", 1_000)] {
        let mut doc = reserved.clone();
        doc["ProductStockReserved"]["quantity"] = json!(quantity);
        reject(what, doc);
    }
    let mut doc = created.clone();
    doc["ProductCreated"]["listing"]["images"][0] = json!("javascript:alert(1)");
    reject("a script URL as an image", doc);
    let mut doc = created.clone();
    doc["ProductCreated"]["price"] = json!({ "kind": "points", "points": 0 });
    reject("a free product", doc);
    let mut doc = created.clone();
    doc["ProductCreated"]["stock"] = json!({ "kind": "finite", "total": -1 });
    reject("stock -1 as unlimited", doc);
    let mut doc = created;
    doc["ProductCreated"]["listing"]["name"] = json!("");
    reject("an empty name", doc);

    // Amounts the schema bounds even where serde reads an i64 (apply refuses them).
    let validator = validator(&schema(MALL_ORDER_EVENTS));
    let mut doc = serde_json::to_value(&mall_order_events()[0]).unwrap();
    doc["MallOrderPlaced"]["totals"]["cash_due_fen"] = json!(-20);
    assert!(!validator.is_valid(&doc), "a negative amount to pay");
    let mut doc = serde_json::to_value(&mall_order_events()[0]).unwrap();
    doc["MallOrderPlaced"]["quantity"] = json!(-1);
    assert_rejected::<MallOrderEvent>(MALL_ORDER_EVENTS, "a negative quantity", doc);
    let mut doc = serde_json::to_value(&mall_order_events()[0]).unwrap();
    doc["MallOrderPlaced"]["method"] = json!("credit");
    assert_rejected::<MallOrderEvent>(MALL_ORDER_EVENTS, "an unknown payment method", doc);
}

#[test]
fn mall_text_and_url_rules_match_the_parsers() {
    let def = |name| def_validator_in(MALL_PRODUCT_EVENTS, name);
    let (name, description, image, quantity) =
        (def("ProductName"), def("ProductDescription"), def("ImageUrl"), def("Quantity"));
    let texts = ["", " ", "popcorn", "爆米花", "line\nbreak", "tab\there", "cr\r\n", "del\u{7f}", "nel\u{85}"];
    for s in texts.iter().map(|s| s.to_string()).chain([64, 65, 2_000, 2_001].map(|n| "x".repeat(n))) {
        agree::<ProductName>(&name, &json!(s), true);
        agree::<ProductDescription>(&description, &json!(s), true);
    }
    let urls = [
        "https://img.example.com/a.jpg",
        "http://img.example.com",
        "https://h",
        "https://",
        "https:///path",
        "https://?q",
        "ftp://img.example.com/a.jpg",
        "javascript:alert(1)",
        "https://img.example.com/a b.jpg",
        "https://img.example.com/\"onerror=x",
        "https://img.example.com/<script>",
        "https://img.example.com/é.jpg",
        "HTTPS://img.example.com/a.jpg",
        "https://img.example.com/a.jpg#frag",
    ];
    let long = format!("https://img.example.com/{}", "a".repeat(ImageUrl::LEN_MAX));
    let at_limit: String = long.chars().take(ImageUrl::LEN_MAX).collect();
    for s in urls.iter().map(|s| s.to_string()).chain([long, at_limit]) {
        agree::<ImageUrl>(&image, &json!(s), true);
    }
    for n in [i64::MIN, -1, 0, 1, 99, 100, i64::MAX] {
        agree::<Quantity>(&quantity, &json!(n), true);
    }
}

fn variant_names(schema: &Value) -> BTreeSet<String> {
    schema["oneOf"]
        .as_array()
        .expect("events are an externally tagged enum")
        .iter()
        .flat_map(|v| v["properties"].as_object().unwrap().keys().cloned())
        .collect()
}

fn check_samples<E>(name: &str, samples: &[E])
where
    E: serde::Serialize + DeserializeOwned + DomainEventMeta + PartialEq + std::fmt::Debug,
{
    let schema = schema(name);
    let validator = validator(&schema);
    let covered: BTreeSet<String> = samples.iter().map(|e| e.event_type().to_owned()).collect();
    assert_eq!(covered, variant_names(&schema), "{name}: add a sample for every variant");
    for event in samples {
        let json = serde_json::to_value(event).unwrap();
        let errors = errors(&validator, &json);
        assert!(errors.is_empty(), "{} does not match {name}: {errors:#?}\n{json:#}", event.event_type());
        // The tag is the stored event type.
        assert!(json.get(event.event_type()).is_some());
        assert_eq!(&serde_json::from_value::<E>(json).unwrap(), event);
    }
}

// ---------------------------------------------------------------- (b) every variant validates

#[test]
fn every_member_event_variant_validates() {
    check_samples(MEMBER_EVENTS, &member_events());
}

#[test]
fn every_tenant_event_variant_validates() {
    check_samples(TENANT_EVENTS, &tenant_events());
}

#[test]
fn every_payment_event_variant_validates() {
    check_samples(PAYMENT_EVENTS, &payment_events());
}

/// Events written before attribution existed still read, and validate.
#[test]
fn registrations_without_attribution_still_read() {
    let doc = member_event_json("MemberRegistered");
    assert!(doc["MemberRegistered"].get("attribution").is_none());
    assert!(validator(&schema(MEMBER_EVENTS)).is_valid(&doc));
    let event: MemberEvent = serde_json::from_value(doc).unwrap();
    assert!(matches!(event, MemberEvent::MemberRegistered { attribution: None, .. }));
}

// ---------------------------------------------------------------- (c) invalid documents

fn member_event_json(event_type: &str) -> Value {
    let event = member_events().into_iter().find(|e| e.event_type() == event_type).unwrap();
    serde_json::to_value(event).unwrap()
}

/// Rejected by the schema, and by deserialization too (the two agree).
#[track_caller]
fn assert_rejected<E: DeserializeOwned + std::fmt::Debug>(name: &str, what: &str, doc: Value) {
    let validator = validator(&schema(name));
    assert!(!validator.is_valid(&doc), "{name} schema accepted {what}: {doc:#}");
    assert!(serde_json::from_value::<E>(doc.clone()).is_err(), "serde accepted {what}: {doc:#}");
}

#[test]
fn invalid_member_events_are_rejected() {
    let reject = |what: &str, doc: Value| assert_rejected::<MemberEvent>(MEMBER_EVENTS, what, doc);

    let mut doc = member_event_json("CashDeposited");
    doc["CashDeposited"]["amount_fen"] = json!(-5);
    reject("a negative amount", doc);

    let mut doc = member_event_json("PointsGranted");
    doc["PointsGranted"]["points"] = json!(0);
    reject("a zero amount", doc);

    let mut doc = member_event_json("CashCharged");
    doc["CashCharged"]["amount_fen"] = json!(AmountFen::MAX + 1);
    reject("an amount over the ceiling", doc);

    let mut doc = member_event_json("CashCharged");
    doc["CashCharged"]["balance_after_fen"] = json!(-1);
    reject("a negative balance", doc);

    let mut doc = member_event_json("PointsSpent");
    doc["PointsSpent"]["taken"][0]["points"] = json!(0);
    reject("an empty lot take", doc);

    let mut doc = member_event_json("PointsSpent");
    doc["PointsSpent"].as_object_mut().unwrap().remove("idempotency_key");
    reject("a missing idempotency key", doc);

    let mut doc = member_event_json("CashCharged");
    doc["CashCharged"]["idempotency_key"] = json!("short");
    reject("a too short idempotency key", doc);

    let mut doc = member_event_json("CashCharged");
    doc["CashCharged"]["reason"] = json!("line\nbreak");
    reject("a control character in a reason", doc);

    let mut doc = member_event_json("MemberRegistered");
    doc["MemberRegistered"]["tenant_id"] = json!("Acme Cinema");
    reject("a malformed tenant id", doc);

    let mut doc = member_event_json("MemberRegistered");
    doc["MemberRegistered"]["member_id"] = json!("not-a-uuid");
    reject("a malformed member id", doc);

    let mut doc = member_event_json("MemberRegistered");
    doc["MemberRegistered"]["registered_at"] = json!("yesterday");
    reject("a malformed timestamp", doc);

    let mut doc = member_event_json("PointsSpent");
    doc["PointsSpent"]["actor"] = json!({"kind": "robot", "name": "r2"});
    reject("an unknown actor kind", doc);

    let payload = member_event_json("CashDeposited")["CashDeposited"].clone();
    reject("an unknown variant", json!({ "PointsStolen": payload.clone() }));
    reject("two variants in one event", json!({ "CashDeposited": payload.clone(), "CashCharged": payload }));
    reject("an untagged payload", member_event_json("CashDeposited")["CashDeposited"].clone());
}

#[test]
fn invalid_tenant_events_are_rejected() {
    let reject = |what: &str, doc: Value| assert_rejected::<TenantEvent>(TENANT_EVENTS, what, doc);
    let created = serde_json::to_value(&tenant_events()[0]).unwrap();

    let mut doc = created.clone();
    doc["TenantCreated"].as_object_mut().unwrap().remove("actor");
    reject("a missing actor", doc);

    let mut doc = serde_json::to_value(&tenant_events()[4]).unwrap();
    doc["OfficialAccountUnbound"]["appid"] = json!("wx123");
    reject("a malformed appid", doc);

    reject("an unknown variant", json!({ "TenantDeleted": created["TenantCreated"].clone() }));

    let rules = serde_json::to_value(&tenant_events()[6]).unwrap();
    let mut doc = rules.clone();
    doc["PointsRulesSet"]["rules"]["initial_points"] = json!(-1);
    let validator = validator(&schema(TENANT_EVENTS));
    assert!(!validator.is_valid(&doc), "negative initial points");
    let mut doc = rules;
    doc["PointsRulesSet"]["rules"]["referral_level1_points"] = json!(1_000_001);
    assert!(!validator.is_valid(&doc), "points over the rule ceiling");
}

#[test]
fn invalid_payment_events_are_rejected() {
    let reject = |what: &str, doc: Value| assert_rejected::<PaymentEvent>(PAYMENT_EVENTS, what, doc);
    let created = serde_json::to_value(&payment_events()[0]).unwrap();

    let mut doc = created.clone();
    doc["PaymentOrderCreated"]["order_id"] = json!("short");
    reject("a too short out_trade_no", doc);

    let mut doc = created.clone();
    doc["PaymentOrderCreated"]["order_id"] = json!("has.dot.in.it");
    reject("an out_trade_no with a dot", doc);

    let mut doc = created.clone();
    doc["PaymentOrderCreated"]["amount_fen"] = json!(0);
    reject("a zero amount", doc);

    let mut doc = created.clone();
    doc["PaymentOrderCreated"]["purpose"] = json!("donation");
    reject("an unknown purpose", doc);

    let mut doc = serde_json::to_value(&payment_events()[1]).unwrap();
    doc["PaymentOrderPaid"]["via"] = json!("carrier_pigeon");
    reject("an unknown source of payment", doc);

    let mut doc = serde_json::to_value(&payment_events()[4]).unwrap();
    doc["PaymentOrderRefunded"]["refund_no"] = json!("");
    reject("an empty refund number", doc);

    reject("an unknown variant", json!({ "PaymentOrderStolen": created["PaymentOrderCreated"].clone() }));
}

// ---------------------------------------------------------------- schema and parsers agree

/// The schema of one `$defs` entry, standalone (those used here have no refs).
fn def_validator(name: &str) -> Validator {
    def_validator_in(MEMBER_EVENTS, name)
}

fn def_validator_in(schema_name: &str, name: &str) -> Validator {
    let schema = schema(schema_name);
    let mut def = schema["$defs"][name].clone();
    assert!(def.is_object(), "no $defs/{name}");
    def["$schema"] = schema["$schema"].clone();
    validator(&def)
}

/// What serde accepts the schema accepts; unless `exact` is false (the Luhn
/// check digit of card numbers cannot be said in JSON Schema), the reverse too.
fn agree<T: DeserializeOwned>(validator: &Validator, value: &Value, exact: bool) {
    let by_serde = serde_json::from_value::<T>(value.clone()).is_ok();
    let by_schema = validator.is_valid(value);
    if exact {
        assert_eq!(
            by_serde,
            by_schema,
            "serde {by_serde} vs schema {by_schema} for {value} ({})",
            std::any::type_name::<T>()
        );
    } else {
        assert!(!by_serde || by_schema, "schema refuses {value}");
    }
}

#[test]
fn amount_and_balance_bounds_match_the_types() {
    let (amount, points, balance, points_balance) = (
        def_validator("AmountFen"),
        def_validator("PointsAmount"),
        def_validator("BalanceFen"),
        def_validator("PointsBalance"),
    );
    let max = AmountFen::MAX;
    for n in [i64::MIN, -1, 0, 1, 2, max - 1, max, max + 1, i64::MAX] {
        let value = json!(n);
        agree::<AmountFen>(&amount, &value, true);
        agree::<PointsAmount>(&points, &value, true);
        agree::<BalanceFen>(&balance, &value, true);
        agree::<PointsBalance>(&points_balance, &value, true);
    }
}

fn id_validators() -> Vec<(&'static str, Validator)> {
    let mut validators: Vec<_> =
        ["TenantId", "OpenId", "CardNumber", "IdempotencyKey", "Reference", "CardLevel", "SceneKey"]
            .into_iter()
            .map(|name| (name, def_validator(name)))
            .collect();
    validators.extend(["OutTradeNo", "PayRef"].into_iter().map(|name| (name, def_validator_in(PAYMENT_EVENTS, name))));
    validators
}

fn ids_agree(validators: &[(&str, Validator)], s: &str) {
    let value = json!(s);
    for (name, v) in validators {
        match *name {
            "TenantId" => agree::<TenantId>(v, &value, true),
            "OpenId" => agree::<OpenId>(v, &value, true),
            "CardNumber" => agree::<CardNumber>(v, &value, false),
            "IdempotencyKey" => agree::<IdempotencyKey>(v, &value, true),
            "Reference" => agree::<Reference>(v, &value, true),
            "CardLevel" => agree::<CardLevel>(v, &value, true),
            "SceneKey" => agree::<SceneKey>(v, &value, true),
            "OutTradeNo" => agree::<OutTradeNo>(v, &value, true),
            "PayRef" => agree::<PayRef>(v, &value, true),
            other => unreachable!("{other}"),
        }
    }
}

#[test]
fn id_rules_match_the_parsers_at_their_limits() {
    let validators = id_validators();
    let lengths = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 32, 33, 40, 41, 64, 65, 128, 129, 200, 201];
    for len in lengths {
        for unit in ["a", "7", "-", "é", "x y", "\u{85}"] {
            let s: String = unit.repeat(len).chars().take(len).collect();
            ids_agree(&validators, &s);
        }
    }
    let edge_cases = [
        "acme-cinema",
        "-acme",
        "acme-",
        "Acme",
        "oABCdef123456",
        "o_ABC-def",
        "0000000000",
        "000000000",
        "key~!@#$%^&*",
        "key with space",
        "tab\there",
        "del\u{7f}char",
        "金卡 gold",
        "ab_c-1|2*",
        "abc.def|",
    ];
    for s in edge_cases {
        ids_agree(&validators, s);
    }
    let appid = {
        let schema = schema(TENANT_EVENTS);
        let mut def = schema["$defs"]["AppId"].clone();
        def["$schema"] = schema["$schema"].clone();
        validator(&def)
    };
    for s in
        ["wx0123456789abcdef", "wx0123456789ABCDEF", "wx0123456789abcdeg", "wx0123456789abcde", "wy0123456789abcdef"]
    {
        agree::<AppId>(&appid, &json!(s), true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_strings_get_the_same_verdict_from_schema_and_parsers(
        s in "[a-zA-Z0-9 _~!\\-\u{0}-\u{1f}\u{7f}-\u{a0}é金]{0,210}"
    ) {
        thread_local! {
            static VALIDATORS: Vec<(&'static str, Validator)> = id_validators();
        }
        VALIDATORS.with(|v| ids_agree(v, &s));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_mall_texts_and_urls_get_the_same_verdict_from_schema_and_parsers(
        text in "[a-zA-Z0-9 _~!\\-\n\r\t\u{0}-\u{1f}\u{7f}-\u{a0}é金]{0,70}",
        url in "(https?|ftp|HTTP)?(://)?[a-z.]{0,6}[/?#]?[a-zA-Z0-9 \"'<>\\\\/?#é.:_-]{0,20}",
    ) {
        thread_local! {
            static VALIDATORS: [Validator; 3] = [
                def_validator_in(MALL_PRODUCT_EVENTS, "ProductName"),
                def_validator_in(MALL_PRODUCT_EVENTS, "ProductDescription"),
                def_validator_in(MALL_PRODUCT_EVENTS, "ImageUrl"),
            ];
        }
        VALIDATORS.with(|[name, description, image]| {
            agree::<ProductName>(name, &json!(text), true);
            agree::<ProductDescription>(description, &json!(text), true);
            agree::<ImageUrl>(image, &json!(url), true);
            agree::<ImageUrl>(image, &json!(text), true);
        });
    }
}
