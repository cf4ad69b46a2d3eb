//! The process managers of a mall order's commissions: accrue on payment,
//! settle after delivery and the hold, reverse or claw back on refund.

use super::*;

/// The distributor `member` was bound to at `at`, if they are an active
/// distributor now, with their level code (if any).
async fn earner(
    shard: &ShardServices,
    tenant: &TenantId,
    member: MemberId,
    at: DateTime<Utc>,
) -> Result<Option<(MemberId, Option<DistributorLevelCode>)>, CommissionError> {
    let history = shard.distribution.binding_history(tenant, member, BINDINGS_READ_MAX).await?;
    let Some(binding) = history.into_iter().find(|b| b.bound_at <= at) else {
        return Ok(None);
    };
    let distributor = binding.distributor_id;
    let Some(view) = shard.distribution.distributor(tenant, distributor).await? else {
        return Ok(None);
    };
    if view.standing != DistributorStanding::Active || distributor == member {
        return Ok(None);
    }
    // A code the catalog no longer has (or could not parse) earns the defaults.
    let level = view.level.as_deref().and_then(|c| DistributorLevelCode::parse(c).ok());
    Ok(Some((distributor, level)))
}

/// Runs one command on a distributor's account under a key of `parts`.
async fn run(
    shard: &ShardServices,
    tenant: &TenantId,
    distributor: MemberId,
    command: CommissionAccountCommand,
    parts: &[&str],
) -> Result<u32, CommissionError> {
    let key = system_key(parts)?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:commissions".into());
    let outcome =
        shard.commission_accounts.execute(&account_stream(tenant, distributor), command.clone(), &command, &ctx).await;
    match outcome {
        Ok(o) => Ok(if o.replayed { 0 } else { o.events.len() as u32 }),
        Err(e) => Err(e.into()),
    }
}

fn level_name(level: CommissionLevel) -> &'static str {
    match level {
        CommissionLevel::First => "1",
        CommissionLevel::Second => "2",
    }
}

/// Due work `commission_accrue`: the order's levels 1 and 2 earn once.
pub async fn due_accrue(app: &App, tenant: &TenantId, order_id: MallOrderId) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let order_stream = order_id.to_string();
    let (order, _) = shard.mall_orders.load(tenant, &order_stream).await?;
    let (Some(placed), Some(payment)) = (&order.placed, &order.payment) else {
        return Ok(0);
    };
    // Refunded before anything accrued: nothing was earned. Points never earn.
    let Some(cash) = payment.cash.as_ref().filter(|_| order.status != Some(OrderStatus::Refunded)) else {
        return Ok(0);
    };
    let settings = shard.distribution.settings(tenant).await?.unwrap_or_default();
    let tenant_rates = settings.default_rates();
    let buyer = placed.member_id;
    let Some((first, first_level)) = earner(&shard, tenant, buyer, payment.paid_at).await? else {
        return Ok(0);
    };
    let second = match settings.depth() {
        CommissionDepth::Two => earner(&shard, tenant, first, payment.paid_at).await?.filter(|(d, _)| *d != buyer),
        CommissionDepth::One => None,
    };
    let catalog = shard.commissions.settings(tenant).await?.unwrap_or_default();
    let level_rates = |code: Option<&DistributorLevelCode>| code.and_then(|c| catalog.level_rates(c));
    let (product, _) = shard.products.load(tenant, &placed.product_id.to_string()).await?;
    let product_terms = product.created.as_ref().filter(|p| &p.tenant_id == tenant).and_then(|p| p.commission);
    let first_rule =
        resolve_rule_from(CommissionLevel::First, tenant_rates, level_rates(first_level.as_ref()), product_terms);
    let second_rule = second.as_ref().and_then(|(_, level)| {
        resolve_rule_from(CommissionLevel::Second, tenant_rates, level_rates(level.as_ref()), product_terms)
    });
    tracing::debug!(%tenant, order = %order_id, ?first_rule, ?second_rule, "commission rules resolved");
    let rules: [(CommissionLevel, Option<MemberId>, Option<CommissionRule>); 2] = [
        (CommissionLevel::First, Some(first), first_rule.map(|(r, _)| r)),
        (CommissionLevel::Second, second.as_ref().map(|(d, _)| *d), second_rule.map(|(r, _)| r)),
    ];
    let basis = cash.amount_fen();
    let (first_fen, _) =
        split_order(basis.get(), placed.quantity, rules[0].2, rules[1].2).ok_or_else(|| infra("negative basis"))?;
    let mut written = 0;
    for (level, distributor, rule) in rules {
        let (Some(distributor), Some(rule)) = (distributor, rule) else { continue };
        let command = CommissionAccountCommand::Accrue {
            tenant_id: tenant.clone(),
            distributor_id: distributor,
            buyer_id: buyer,
            key: CommissionKey { order_id, level },
            basis_fen: basis,
            quantity: placed.quantity,
            rule,
            nearer_levels_fen: if level == CommissionLevel::First { 0 } else { first_fen },
        };
        let parts = ["commission-accrue", tenant.as_str(), &order_stream, level_name(level)];
        match run(&shard, tenant, distributor, command, &parts).await {
            Ok(n) => written += n,
            // A retry whose facts changed (a setting, a standing): the first run stands.
            Err(CommissionError::IdempotencyMismatch) => {}
            Err(CommissionError::Account(CommissionAccountError::OwnOrder)) => {}
            Err(e) => return Err(e),
        }
    }
    if written > 0 {
        let second = second.map(|(d, _)| d);
        tracing::info!(%tenant, order = %order_id, %first, ?second, "commissions accrued");
    }
    // A refund recorded while we accrued: reverse what we just accrued.
    let (order, _) = shard.mall_orders.load(tenant, &order_stream).await?;
    if order.status == Some(OrderStatus::Refunded) {
        written += due_reverse(app, tenant, order_id).await?;
    }
    Ok(written)
}

/// Due work `commission_settle`: the order's pending commissions settle once
/// the holding period after delivery passed (the account refuses earlier:
/// the item is retried).
pub async fn due_settle(app: &App, tenant: &TenantId, order_id: MallOrderId) -> Result<u32, CommissionError> {
    // An accrual still due (or lost) first: settlement must find it.
    let mut written = due_accrue(app, tenant, order_id).await?;
    let shard = app.router.route(tenant)?;
    let order_stream = order_id.to_string();
    let (order, _) = shard.mall_orders.load(tenant, &order_stream).await?;
    if order.status == Some(OrderStatus::Refunded) {
        return Ok(written);
    }
    let delivered_at = order.delivery.as_ref().map(|d| d.delivered_at);
    // An open refund request blocks settlement; its rejection writes this due work again.
    let refund_open = order.open_refund_request().is_some();
    let hold_days = settings(app, tenant).await?.hold_days();
    for c in shard.commissions.of_order(tenant, order_id).await? {
        if c.state != "pending" {
            continue;
        }
        let level = if c.level == 1 { CommissionLevel::First } else { CommissionLevel::Second };
        let key = CommissionKey { order_id, level };
        let command = CommissionAccountCommand::Settle { key, delivered_at, hold_days, refund_open };
        let parts = ["commission-settle", tenant.as_str(), &order_stream, level_name(level)];
        match run(&shard, tenant, c.distributor_id, command, &parts).await {
            Ok(n) => written += n,
            Err(CommissionError::Account(CommissionAccountError::RefundOpen)) => {
                tracing::info!(%tenant, order = %order_id, "settlement waits for the open refund request");
            }
            Err(CommissionError::Account(CommissionAccountError::Reversed | CommissionAccountError::ClawedBack)) => {}
            Err(CommissionError::Account(e)) => return Err(CommissionError::Retry(e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Due work `commission_reverse`: the refunded order's commissions are
/// reversed (pending) or clawed back (settled; the shortfall is debt).
pub async fn due_reverse(app: &App, tenant: &TenantId, order_id: MallOrderId) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let order_stream = order_id.to_string();
    let refund = Reference::parse(&format!("mall-order-refund:{order_id}")).map_err(infra)?;
    let mut written = 0;
    for c in shard.commissions.of_order(tenant, order_id).await? {
        if c.state != "pending" && c.state != "settled" {
            continue;
        }
        let level = if c.level == 1 { CommissionLevel::First } else { CommissionLevel::Second };
        let command =
            CommissionAccountCommand::Reverse { key: CommissionKey { order_id, level }, refund: refund.clone() };
        let parts = ["commission-reverse", tenant.as_str(), &order_stream, level_name(level)];
        written += run(&shard, tenant, c.distributor_id, command, &parts).await?;
    }
    if written > 0 {
        tracing::info!(%tenant, order = %order_id, "commissions reversed");
    }
    Ok(written)
}
