//! Given/when/then tests of the product aggregate, one per command and
//! refusal, and property tests over random command sequences.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::{Actor, EventSourced, InvariantViolation};

pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap()
}

pub(super) fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

pub(super) fn admin() -> Actor {
    Actor::Admin { username: "boss".into() }
}

pub(super) fn product_id() -> ProductId {
    ProductId::from_uuid(Uuid::from_u128(77))
}

pub(super) fn member(n: u128) -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(n))
}

pub(super) fn order(n: u128) -> MallOrderId {
    MallOrderId::from_uuid(Uuid::from_u128(10_000 + n))
}

pub(super) fn qty(n: i64) -> Quantity {
    Quantity::new(n).unwrap()
}

pub(super) fn points_price(points: i64) -> Price {
    Price::Points { points: PointsAmount::new(points).unwrap() }
}

pub(super) fn name() -> ProductName {
    ProductName::parse("爆米花 popcorn").unwrap()
}

fn listing(images: usize) -> ProductListing {
    ProductListing {
        name: name(),
        description: ProductDescription::parse("Large.\nSalted or sweet.").unwrap(),
        images: (0..images).map(|i| ImageUrl::parse(&format!("https://img.example.com/p/{i}.jpg")).unwrap()).collect(),
    }
}

fn expires() -> DateTime<Utc> {
    now() + Duration::minutes(15)
}

fn given(events: &[ProductEvent]) -> Product {
    let mut product = Product::default();
    for (i, e) in events.iter().enumerate() {
        product.apply(e).unwrap_or_else(|err| panic!("history event {i}: {err}"));
    }
    product
}

/// The events `command` decides, applied to a copy of `product`.
#[track_caller]
fn then_events(product: &Product, command: ProductCommand, expected: Vec<ProductEvent>) -> Product {
    assert_eq!(product.handle(command, now()), Ok(expected.clone()));
    let mut after = product.clone();
    for e in &expected {
        after.apply(e).unwrap();
    }
    after
}

#[track_caller]
fn broken_rule(history: &[ProductEvent], event: ProductEvent) -> &'static str {
    let mut product = given(history);
    match product.apply(&event) {
        Ok(()) => panic!("applied: {event:?}"),
        Err(InvariantViolation { rule, .. }) => rule,
    }
}

fn created(stock: Stock, limit: Option<u32>) -> ProductEvent {
    ProductEvent::ProductCreated {
        product_id: product_id(),
        tenant_id: tenant(),
        listing: listing(1),
        price: points_price(100),
        stock,
        per_member_limit: limit,
        on_sale: true,
        actor: admin(),
        created_at: now(),
    }
}

fn create(listing: ProductListing, stock: Stock, limit: Option<u32>) -> ProductCommand {
    ProductCommand::Create {
        product_id: product_id(),
        tenant_id: tenant(),
        listing,
        price: points_price(100),
        stock,
        per_member_limit: limit,
        on_sale: true,
        actor: admin(),
    }
}

fn reserve(o: u128, m: u128, q: i64) -> ProductCommand {
    ProductCommand::Reserve {
        order_id: order(o),
        member_id: member(m),
        quantity: qty(q),
        unit_price: points_price(100),
        expires_at: expires(),
    }
}

fn reserved(o: u128, m: u128, q: i64, reserved_after: u64, member_units_after: Option<u32>) -> ProductEvent {
    ProductEvent::ProductStockReserved {
        order_id: order(o),
        member_id: member(m),
        quantity: qty(q),
        unit_price: points_price(100),
        expires_at: expires(),
        reserved_after,
        member_units_after,
        reserved_at: now(),
    }
}

fn released(o: u128, q: i64, reserved_after: u64, member_units_after: Option<u32>) -> ProductEvent {
    ProductEvent::ProductReservationReleased {
        order_id: order(o),
        quantity: qty(q),
        reason: ReleaseReason::Expired,
        reserved_after,
        member_units_after,
        released_at: now(),
    }
}

fn confirmed(o: u128, q: i64, reserved_after: u64, sold_after: u64) -> ProductEvent {
    ProductEvent::ProductSaleConfirmed {
        order_id: order(o),
        quantity: qty(q),
        reserved_after,
        sold_after,
        confirmed_at: now(),
    }
}

fn state(product: &Product) -> &ProductState {
    product.created.as_ref().unwrap()
}

// ---------------------------------------------------------------- create and edit

#[test]
fn a_product_is_created_once_with_bounded_terms() {
    let fresh = Product::default();
    let product = then_events(
        &fresh,
        create(listing(1), Stock::Finite { total: 5 }, Some(2)),
        vec![created(Stock::Finite { total: 5 }, Some(2))],
    );
    assert_eq!(state(&product).available(), Some(5));
    assert_eq!(product.handle(create(listing(1), Stock::Unlimited, None), now()), Err(ProductError::AlreadyExists));

    let refused = |command| fresh.handle(command, now()).unwrap_err();
    assert_eq!(refused(create(listing(IMAGES_MAX + 1), Stock::Unlimited, None)), ProductError::TooManyImages);
    assert!(fresh.handle(create(listing(IMAGES_MAX), Stock::Unlimited, None), now()).is_ok());
    assert_eq!(refused(create(listing(0), Stock::Finite { total: STOCK_MAX + 1 }, None)), ProductError::InvalidStock);
    assert!(fresh.handle(create(listing(0), Stock::Finite { total: STOCK_MAX }, None), now()).is_ok());
    assert_eq!(refused(create(listing(0), Stock::Unlimited, Some(0))), ProductError::InvalidLimit);
    assert_eq!(
        refused(create(listing(0), Stock::Unlimited, Some(PER_MEMBER_LIMIT_MAX + 1))),
        ProductError::InvalidLimit
    );
    assert!(fresh.handle(create(listing(0), Stock::Unlimited, Some(PER_MEMBER_LIMIT_MAX)), now()).is_ok());
}

#[test]
fn commands_on_a_product_not_created_are_refused() {
    let fresh = Product::default();
    let commands = [
        ProductCommand::EditListing { listing: listing(0), actor: admin() },
        ProductCommand::SetPrice { price: points_price(1), actor: admin() },
        ProductCommand::SetStock { stock: Stock::Unlimited, actor: admin() },
        ProductCommand::SetMemberLimit { per_member_limit: None, actor: admin() },
        ProductCommand::PutOnSale { actor: admin() },
        ProductCommand::TakeOffSale { actor: admin() },
        reserve(1, 1, 1),
        ProductCommand::Release { order_id: order(1), reason: ReleaseReason::Cancelled },
        ProductCommand::ConfirmSale { order_id: order(1) },
        ProductCommand::ReturnSold { order_id: order(1), member_id: member(1), quantity: qty(1) },
    ];
    for command in commands {
        assert_eq!(fresh.handle(command, now()), Err(ProductError::NotFound));
    }
    assert_eq!(broken_rule(&[], released(1, 1, 0, None)), rules::PRODUCT_EXISTS);
    assert_eq!(
        broken_rule(&[created(Stock::Unlimited, None)], created(Stock::Unlimited, None)),
        rules::PRODUCT_CREATED_ONCE
    );
}

#[test]
fn listing_and_price_edits_are_events_and_an_order_must_quote_the_current_price() {
    let product = given(&[created(Stock::Unlimited, None)]);
    let edited = ProductEvent::ProductListingEdited { listing: listing(3), actor: admin(), edited_at: now() };
    then_events(&product, ProductCommand::EditListing { listing: listing(3), actor: admin() }, vec![edited]);
    assert_eq!(
        product.handle(ProductCommand::EditListing { listing: listing(IMAGES_MAX + 1), actor: admin() }, now()),
        Err(ProductError::TooManyImages)
    );

    let cash = Price::PointsAndFen { points: PointsAmount::new(50).unwrap(), amount_fen: AmountFen::new(990).unwrap() };
    let set = ProductEvent::ProductPriceSet { price: cash, actor: admin(), set_at: now() };
    let repriced = then_events(&product, ProductCommand::SetPrice { price: cash, actor: admin() }, vec![set]);
    // The member saw 100 points; the product now costs 50 points + 9.90 yuan.
    assert_eq!(repriced.handle(reserve(1, 1, 1), now()), Err(ProductError::PriceChanged { current: cash }));
}

#[test]
fn stock_is_set_never_below_what_is_reserved_or_sold() {
    let product = given(&[
        created(Stock::Finite { total: 5 }, None),
        reserved(1, 1, 2, 2, None),
        confirmed(1, 2, 0, 2),
        reserved(2, 2, 1, 1, None),
    ]);
    let set = |total| ProductCommand::SetStock { stock: Stock::Finite { total }, actor: admin() };
    assert_eq!(product.handle(set(2), now()), Err(ProductError::StockBelowCommitted { requested: 2, committed: 3 }));
    let event = ProductEvent::ProductStockSet { stock: Stock::Finite { total: 3 }, actor: admin(), set_at: now() };
    let full = then_events(&product, set(3), vec![event]);
    assert_eq!(full.handle(reserve(3, 3, 1), now()), Err(ProductError::SoldOut { available: 0 }));
    assert_eq!(product.handle(set(STOCK_MAX + 1), now()), Err(ProductError::InvalidStock));
    let unlimited = ProductEvent::ProductStockSet { stock: Stock::Unlimited, actor: admin(), set_at: now() };
    then_events(&product, ProductCommand::SetStock { stock: Stock::Unlimited, actor: admin() }, vec![unlimited]);

    let below = ProductEvent::ProductStockSet { stock: Stock::Finite { total: 2 }, actor: admin(), set_at: now() };
    assert_eq!(
        broken_rule(&[created(Stock::Finite { total: 5 }, None), reserved(2, 2, 3, 3, None)], below),
        rules::WITHIN_STOCK
    );
}

#[test]
fn a_product_goes_on_and_off_sale_and_off_sale_refuses_orders() {
    let product = given(&[created(Stock::Unlimited, None)]);
    assert_eq!(
        product.handle(ProductCommand::PutOnSale { actor: admin() }, now()),
        Err(ProductError::SameSwitch("on sale"))
    );
    let off = ProductEvent::ProductSaleSwitched { on_sale: false, actor: admin(), switched_at: now() };
    let product = then_events(&product, ProductCommand::TakeOffSale { actor: admin() }, vec![off]);
    assert_eq!(product.handle(reserve(1, 1, 1), now()), Err(ProductError::NotOnSale));
    assert_eq!(
        product.handle(ProductCommand::TakeOffSale { actor: admin() }, now()),
        Err(ProductError::SameSwitch("off sale"))
    );
    let on = ProductEvent::ProductSaleSwitched { on_sale: true, actor: admin(), switched_at: now() };
    then_events(&product, ProductCommand::PutOnSale { actor: admin() }, vec![on]);
}

// ---------------------------------------------------------------- reservations

#[test]
fn the_last_unit_goes_to_one_order_and_the_next_is_sold_out() {
    let product = given(&[created(Stock::Finite { total: 3 }, None), reserved(1, 1, 2, 2, None)]);
    let product = then_events(&product, reserve(2, 2, 1), vec![reserved(2, 2, 1, 3, None)]);
    assert_eq!(state(&product).available(), Some(0));
    assert_eq!(product.handle(reserve(3, 3, 1), now()), Err(ProductError::SoldOut { available: 0 }));
    let product = given(&[created(Stock::Finite { total: 3 }, None), reserved(1, 1, 2, 2, None)]);
    assert_eq!(product.handle(reserve(3, 3, 2), now()), Err(ProductError::SoldOut { available: 1 }));
    // A stored reservation past the stock is a broken invariant, not an oversale.
    assert_eq!(
        broken_rule(
            &[created(Stock::Finite { total: 3 }, None), reserved(1, 1, 2, 2, None)],
            reserved(2, 2, 2, 4, None)
        ),
        rules::WITHIN_STOCK
    );
    assert_eq!(
        broken_rule(&[created(Stock::Finite { total: 3 }, None)], reserved(1, 1, 2, 5, None)),
        rules::COUNTS_AFTER
    );
}

#[test]
fn a_retried_reservation_changes_nothing_and_a_different_one_for_the_same_order_is_refused() {
    let history = [created(Stock::Unlimited, None), reserved(1, 1, 2, 2, None)];
    let product = given(&history);
    assert_eq!(product.handle(reserve(1, 1, 2), now()), Ok(Vec::new()));
    assert_eq!(product.handle(reserve(1, 1, 3), now()), Err(ProductError::ReservationConflict(order(1))));
    assert_eq!(product.handle(reserve(1, 2, 2), now()), Err(ProductError::ReservationConflict(order(1))));
    assert_eq!(broken_rule(&history, reserved(1, 1, 2, 4, None)), rules::RESERVATION_UNIQUE);
}

#[test]
fn a_reservation_expires_after_now_and_within_the_pay_window() {
    let product = given(&[created(Stock::Unlimited, None)]);
    let at = |expires_at| ProductCommand::Reserve {
        order_id: order(1),
        member_id: member(1),
        quantity: qty(1),
        unit_price: points_price(100),
        expires_at,
    };
    assert_eq!(product.handle(at(now()), now()), Err(ProductError::InvalidExpiry));
    let window = Duration::minutes(PAY_WINDOW_MAX_MINUTES);
    assert_eq!(product.handle(at(now() + window + Duration::seconds(1)), now()), Err(ProductError::InvalidExpiry));
    assert!(product.handle(at(now() + window), now()).is_ok());
}

#[test]
fn the_per_member_limit_counts_units_across_orders_on_the_product_stream() {
    let product = given(&[created(Stock::Unlimited, Some(3)), reserved(1, 1, 2, 2, Some(2))]);
    assert_eq!(product.handle(reserve(2, 1, 2), now()), Err(ProductError::LimitReached { limit: 3, held: 2 }));
    let product = then_events(&product, reserve(2, 1, 1), vec![reserved(2, 1, 1, 3, Some(3))]);
    // Another member has their own count.
    then_events(&product, reserve(3, 2, 3), vec![reserved(3, 2, 3, 6, Some(3))]);
    // A sale keeps counting; a release frees the units.
    let product =
        then_events(&product, ProductCommand::ConfirmSale { order_id: order(1) }, vec![confirmed(1, 2, 1, 2)]);
    assert_eq!(state(&product).member_units.get(&member(1)), Some(&3));
    let release = ProductCommand::Release { order_id: order(2), reason: ReleaseReason::Expired };
    let product = then_events(&product, release, vec![released(2, 1, 0, Some(2))]);
    then_events(&product, reserve(4, 1, 1), vec![reserved(4, 1, 1, 1, Some(3))]);

    let history = [created(Stock::Unlimited, Some(3)), reserved(1, 1, 2, 2, Some(2))];
    assert_eq!(broken_rule(&history, reserved(2, 1, 2, 4, Some(4))), rules::WITHIN_MEMBER_LIMIT);
    assert_eq!(broken_rule(&history, reserved(2, 1, 1, 3, Some(1))), rules::COUNTS_AFTER);
}

/// The yudao bug: a per-member limit above the stock count (here unlimited) works.
#[test]
fn an_unlimited_stock_with_a_per_member_limit_sells_up_to_the_limit() {
    let product = given(&[created(Stock::Unlimited, Some(PER_MEMBER_LIMIT_MAX))]);
    let product = then_events(&product, reserve(1, 1, 99), vec![reserved(1, 1, 99, 99, Some(99))]);
    assert_eq!(product.handle(reserve(2, 1, 1), now()), Err(ProductError::LimitReached { limit: 99, held: 99 }));
    assert_eq!(state(&product).available(), None);
}

#[test]
fn lifting_the_limit_drops_the_count_and_a_new_limit_counts_afresh() {
    let product = given(&[created(Stock::Unlimited, Some(1)), reserved(1, 1, 1, 1, Some(1))]);
    assert_eq!(
        product.handle(ProductCommand::SetMemberLimit { per_member_limit: Some(0), actor: admin() }, now()),
        Err(ProductError::InvalidLimit)
    );
    let lift = ProductEvent::ProductMemberLimitSet { per_member_limit: None, actor: admin(), set_at: now() };
    let product =
        then_events(&product, ProductCommand::SetMemberLimit { per_member_limit: None, actor: admin() }, vec![lift]);
    assert!(state(&product).member_units.is_empty());
    let product = then_events(&product, reserve(2, 1, 5), vec![reserved(2, 1, 5, 6, None)]);
    let set = ProductEvent::ProductMemberLimitSet { per_member_limit: Some(2), actor: admin(), set_at: now() };
    let product =
        then_events(&product, ProductCommand::SetMemberLimit { per_member_limit: Some(2), actor: admin() }, vec![set]);
    // Reservations made without a limit are not counted, nor uncounted on release.
    let release = ProductCommand::Release { order_id: order(2), reason: ReleaseReason::Cancelled };
    let mut expected = released(2, 5, 1, Some(0));
    if let ProductEvent::ProductReservationReleased { reason, .. } = &mut expected {
        *reason = ReleaseReason::Cancelled;
    }
    let product = then_events(&product, release, vec![expected]);
    then_events(&product, reserve(3, 1, 2), vec![reserved(3, 1, 2, 3, Some(2))]);
}

#[test]
fn open_reservations_and_limited_buyers_are_bounded() {
    let mut history = vec![created(Stock::Unlimited, Some(1))];
    for n in 0..OPEN_RESERVATIONS_MAX as u128 {
        history.push(reserved(n, n, 1, n as u64 + 1, Some(1)));
    }
    let product = given(&history);
    let next = OPEN_RESERVATIONS_MAX as u128;
    assert_eq!(product.handle(reserve(next, next, 1), now()), Err(ProductError::TooManyReservations));
    assert_eq!(broken_rule(&history, reserved(next, next, 1, next as u64 + 1, Some(1))), rules::RESERVATIONS_MAX);
    // Sold, the reservations are closed but the buyers still count.
    let mut sold = product;
    for n in 0..OPEN_RESERVATIONS_MAX as u128 {
        let left = (OPEN_RESERVATIONS_MAX as u128 - n - 1) as u64;
        sold.apply(&confirmed(n, 1, left, n as u64 + 1)).unwrap();
    }
    assert_eq!(state(&sold).member_units.len(), LIMITED_BUYERS_MAX);
    assert_eq!(sold.handle(reserve(next, next, 1), now()), Err(ProductError::TooManyBuyers));
    let mut broken = sold.clone();
    let beyond = reserved(next, next, 1, 1, Some(1));
    assert_eq!(broken.apply(&beyond).unwrap_err().rule, rules::BUYERS_MAX);
}

// ---------------------------------------------------------------- ends of a reservation

#[test]
fn a_reservation_is_released_once() {
    let product = given(&[created(Stock::Finite { total: 2 }, None), reserved(1, 1, 2, 2, None)]);
    let release = ProductCommand::Release { order_id: order(1), reason: ReleaseReason::Expired };
    let after = then_events(&product, release.clone(), vec![released(1, 2, 0, None)]);
    assert_eq!(state(&after).available(), Some(2));
    assert_eq!(after.handle(release, now()), Err(ProductError::ReservationNotOpen(order(1))));
    let history = [created(Stock::Finite { total: 2 }, None), reserved(1, 1, 2, 2, None), released(1, 2, 0, None)];
    assert_eq!(broken_rule(&history, released(1, 2, 0, None)), rules::RESERVATION_OPEN);
    assert_eq!(broken_rule(&history[..2], released(1, 1, 1, None)), rules::RESERVATION_OPEN);
    assert_eq!(broken_rule(&history[..2], released(1, 2, 1, None)), rules::COUNTS_AFTER);
}

#[test]
fn a_reservation_of_an_order_never_placed_is_released_only_after_its_expiry() {
    let product = given(&[created(Stock::Unlimited, None), reserved(1, 1, 1, 1, None)]);
    let sweep = ProductCommand::Release { order_id: order(1), reason: ReleaseReason::NotPlaced };
    assert_eq!(product.handle(sweep.clone(), now()), Err(ProductError::ReservationStillValid(order(1), expires())));
    assert!(product.handle(sweep, expires()).is_ok());
}

#[test]
fn a_confirmed_sale_is_never_released_or_confirmed_again() {
    let history = [created(Stock::Finite { total: 2 }, None), reserved(1, 1, 2, 2, None), confirmed(1, 2, 0, 2)];
    let product = given(&history[..2]);
    let sold = then_events(&product, ProductCommand::ConfirmSale { order_id: order(1) }, vec![confirmed(1, 2, 0, 2)]);
    assert_eq!((state(&sold).reserved, state(&sold).sold), (0, 2));
    assert_eq!(
        sold.handle(ProductCommand::ConfirmSale { order_id: order(1) }, now()),
        Err(ProductError::ReservationNotOpen(order(1)))
    );
    let release = ProductCommand::Release { order_id: order(1), reason: ReleaseReason::Cancelled };
    assert_eq!(sold.handle(release, now()), Err(ProductError::ReservationNotOpen(order(1))));
    assert_eq!(broken_rule(&history, confirmed(1, 2, 0, 4)), rules::RESERVATION_OPEN);
    assert_eq!(broken_rule(&history, released(1, 2, 0, None)), rules::RESERVATION_OPEN);
    assert_eq!(broken_rule(&history[..2], confirmed(1, 2, 0, 3)), rules::COUNTS_AFTER);
}

#[test]
fn a_return_gives_sold_units_back_never_below_zero() {
    let history = [created(Stock::Finite { total: 2 }, Some(2)), reserved(1, 1, 2, 2, Some(2)), confirmed(1, 2, 0, 2)];
    let product = given(&history);
    let give_back = |q| ProductCommand::ReturnSold { order_id: order(1), member_id: member(1), quantity: qty(q) };
    assert_eq!(product.handle(give_back(3), now()), Err(ProductError::ReturnExceedsSold { sold: 2, requested: 3 }));
    let returned = ProductEvent::ProductSaleReturned {
        order_id: order(1),
        member_id: member(1),
        quantity: qty(2),
        sold_after: 0,
        member_units_after: Some(0),
        returned_at: now(),
    };
    let after = then_events(&product, give_back(2), vec![returned.clone()]);
    assert_eq!((state(&after).sold, state(&after).available()), (0, Some(2)));
    assert!(state(&after).member_units.is_empty(), "the member may buy again");
    let mut twice = history.to_vec();
    twice.push(returned.clone());
    assert_eq!(broken_rule(&twice, returned), rules::COUNTS_AFTER);
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
enum Step {
    Reserve { order: u128, member: u128, quantity: i64 },
    Release { order: u128 },
    Confirm { order: u128 },
    Return { order: u128, member: u128, quantity: i64 },
    SetStock { total: u32 },
    SetLimit { limit: Option<u32> },
    Switch,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u128..12, 0u128..4, 1i64..6).prop_map(|(order, member, quantity)| Step::Reserve { order, member, quantity }),
        2 => (0u128..12).prop_map(|order| Step::Release { order }),
        2 => (0u128..12).prop_map(|order| Step::Confirm { order }),
        1 => (0u128..12, 0u128..4, 1i64..6).prop_map(|(order, member, quantity)| Step::Return { order, member, quantity }),
        1 => (0u32..40).prop_map(|total| Step::SetStock { total }),
        1 => prop::option::of(1u32..8).prop_map(|limit| Step::SetLimit { limit }),
        1 => Just(Step::Switch),
    ]
}

fn command(product: &Product, step: &Step) -> ProductCommand {
    match *step {
        Step::Reserve { order, member, quantity } => reserve(order, member, quantity),
        Step::Release { order: o } => ProductCommand::Release { order_id: order(o), reason: ReleaseReason::Expired },
        Step::Confirm { order: o } => ProductCommand::ConfirmSale { order_id: order(o) },
        Step::Return { order: o, member: m, quantity } => {
            ProductCommand::ReturnSold { order_id: order(o), member_id: member(m), quantity: qty(quantity) }
        }
        Step::SetStock { total } => ProductCommand::SetStock { stock: Stock::Finite { total }, actor: admin() },
        Step::SetLimit { limit } => ProductCommand::SetMemberLimit { per_member_limit: limit, actor: admin() },
        Step::Switch => {
            if state(product).on_sale {
                ProductCommand::TakeOffSale { actor: admin() }
            } else {
                ProductCommand::PutOnSale { actor: admin() }
            }
        }
    }
}

proptest! {
    /// Random reservations, releases, sales, returns, stock and limit changes:
    /// never oversold, never a negative count, a reservation ends once, every
    /// member within the limit they reserved under, and the replay equals the
    /// live state.
    #[test]
    fn random_product_histories_never_oversell(
        total in 1u32..30,
        limit in prop::option::of(1u32..8),
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let first = created(Stock::Finite { total }, limit);
        let mut live = given(std::slice::from_ref(&first));
        let mut log = vec![first];
        let mut ended = BTreeSet::new();
        for step in &steps {
            let Ok(events) = live.handle(command(&live, step), now()) else { continue };
            for event in events {
                match &event {
                    ProductEvent::ProductReservationReleased { order_id, .. }
                    | ProductEvent::ProductSaleConfirmed { order_id, .. } => {
                        prop_assert!(ended.insert(*order_id), "{order_id} ended twice");
                    }
                    ProductEvent::ProductStockReserved { order_id, member_units_after, .. } => {
                        // A new reservation under the same order id (a retry after a cancel) ends once again.
                        ended.remove(order_id);
                        if let (Some(units), Some(limit)) = (member_units_after, state(&live).per_member_limit) {
                            prop_assert!(*units <= limit);
                        }
                    }
                    _ => {}
                }
                live.apply(&event).unwrap();
                log.push(event);
            }
            let s = state(&live);
            if let Stock::Finite { total } = s.stock {
                prop_assert!(s.reserved + s.sold <= u64::from(total), "oversold");
            }
            let open: u64 = s.reservations.values().map(|r| u64::from(r.quantity.get())).sum();
            prop_assert_eq!(open, s.reserved);
            prop_assert!(s.member_units.values().all(|u| *u > 0));
        }
        prop_assert_eq!(given(&log), live);
    }
}

// ---------------------------------------------------------------- commission terms

#[test]
fn given_a_product_when_commission_terms_are_set_then_fixed_amounts_stay_within_the_unit_price() {
    use crate::distribution::{LevelRates, ProductCommission, RateBps};
    let fen = |n: i64| crate::AmountFen::new(n).unwrap();
    // Given: 100 points and 1,000 fen a unit.
    let price = Price::PointsAndFen { points: PointsAmount::new(100).unwrap(), amount_fen: fen(1_000) };
    let product = given(&[
        created(Stock::Unlimited, None),
        ProductEvent::ProductPriceSet { price, actor: admin(), set_at: now() },
    ]);
    // When / then: fixed amounts up to the unit's cash price are taken.
    let fixed = ProductCommission::FixedPerUnit { first_fen: fen(600), second_fen: Some(fen(400)) };
    let set = ProductCommand::SetCommission { commission: Some(fixed), actor: admin() };
    let after = then_events(
        &product,
        set,
        vec![ProductEvent::ProductCommissionSet { commission: Some(fixed), actor: admin(), set_at: now() }],
    );
    assert_eq!(after.created.as_ref().unwrap().commission, Some(fixed));
    let too_much = ProductCommission::FixedPerUnit { first_fen: fen(600), second_fen: Some(fen(401)) };
    assert_eq!(
        product.handle(ProductCommand::SetCommission { commission: Some(too_much), actor: admin() }, now()),
        Err(ProductError::CommissionAboveUnitPrice { unit_fen: 1_000, fixed_fen: 1_001 })
    );
    // Rates are bounded by their own type (sum ≤ 100%); clearing is always allowed.
    let rates = LevelRates::new(RateBps::new(2_000).unwrap(), RateBps::new(500).unwrap()).unwrap();
    let with_rates =
        ProductCommand::SetCommission { commission: Some(ProductCommission::Rates { rates }), actor: admin() };
    assert_eq!(product.handle(with_rates, now()).unwrap().len(), 1);
    let cleared = ProductCommand::SetCommission { commission: None, actor: admin() };
    let after = then_events(
        &after,
        cleared,
        vec![ProductEvent::ProductCommissionSet { commission: None, actor: admin(), set_at: now() }],
    );
    assert_eq!(after.created.as_ref().unwrap().commission, None);
    // A points-only product takes no fixed cash commission.
    let points_only = given(&[created(Stock::Unlimited, None)]);
    let one = ProductCommission::FixedPerUnit { first_fen: fen(1), second_fen: None };
    assert!(points_only
        .handle(ProductCommand::SetCommission { commission: Some(one), actor: admin() }, now())
        .is_err());
    assert_eq!(
        Product::default().handle(ProductCommand::SetCommission { commission: None, actor: admin() }, now()),
        Err(ProductError::NotFound)
    );
}
