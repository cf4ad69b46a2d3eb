//! Payment order use cases: run a command on one WeChat Pay order of a
//! tenant, read an order. The order id is the `out_trade_no` wxcm generated.

use chrono::{DateTime, Utc};
use serde::Serialize;
use wxcm_domain::payment::{
    CloseReason, PaidVia, PayApiVersion, PaymentCommand, PaymentError, PaymentEvent, PaymentOrder, PaymentPurpose,
    PaymentStatus,
};
use wxcm_domain::{AppId, EventSourced, MemberId, OpenId, OutTradeNo, TenantId};

use crate::executor::{CommandContext, ExecuteError, Outcome};
use crate::ports::{App, PortError, RouteError};

#[derive(Debug, thiserror::Error)]
pub enum PaymentOpError {
    #[error("payment order not found")]
    NotFound,
    #[error(transparent)]
    Rejected(#[from] PaymentError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    #[error("too much contention, try again")]
    Contention,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database or broker is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for PaymentOpError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            PaymentOpError::Unavailable(e.to_string())
        } else {
            PaymentOpError::Infra(e.to_string())
        }
    }
}

impl From<ExecuteError<PaymentError>> for PaymentOpError {
    fn from(e: ExecuteError<PaymentError>) -> Self {
        match e {
            ExecuteError::Domain(PaymentError::NotFound) | ExecuteError::ForeignAggregate => PaymentOpError::NotFound,
            ExecuteError::Domain(d) => PaymentOpError::Rejected(d),
            ExecuteError::IdempotencyMismatch => PaymentOpError::IdempotencyMismatch,
            ExecuteError::Contention => PaymentOpError::Contention,
            ExecuteError::Invariant(broken) => PaymentOpError::Infra(broken.to_string()),
            ExecuteError::Store(s) => PaymentOpError::Infra(s),
            ExecuteError::Unavailable(s) => PaymentOpError::Unavailable(s),
        }
    }
}

/// A payment order as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaymentView {
    pub order_id: OutTradeNo,
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub openid: OpenId,
    pub appid: AppId,
    pub mch_id: String,
    pub purpose: PaymentPurpose,
    pub amount_fen: i64,
    pub api_version: PayApiVersion,
    pub status: PaymentStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub transaction_id: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub paid_via: Option<PaidVia>,
    pub closed_reason: Option<CloseReason>,
    pub closed_at: Option<DateTime<Utc>>,
    pub refunded_total_fen: i64,
    pub refunds: usize,
    pub version: u64,
}

impl PaymentView {
    pub fn from_state(p: &PaymentOrder) -> Option<Self> {
        let order = p.details()?;
        Some(Self {
            order_id: order.order_id.clone(),
            tenant_id: order.tenant_id.clone(),
            member_id: order.member_id,
            openid: order.openid.clone(),
            appid: order.appid.clone(),
            mch_id: order.mch_id.to_string(),
            purpose: order.purpose,
            amount_fen: order.amount_fen.get(),
            api_version: order.api_version,
            status: p.status()?,
            created_at: order.created_at,
            expires_at: order.expires_at,
            transaction_id: p.payment().map(|x| x.transaction_id.to_string()),
            paid_at: p.payment().map(|x| x.paid_at),
            paid_via: p.payment().map(|x| x.via),
            closed_reason: p.closed().map(|(reason, _)| reason),
            closed_at: p.closed().map(|(_, at)| at),
            refunded_total_fen: p.refunded_total_fen(),
            refunds: p.refunds().len(),
            version: p.version,
        })
    }
}

/// Runs a command on the payment order `order_id` of `tenant`. A `Create`
/// must name the same order and tenant it is sent to.
pub async fn execute(
    app: &App,
    tenant: &TenantId,
    order_id: &OutTradeNo,
    command: PaymentCommand,
    request: &(impl Serialize + Sync),
    ctx: &CommandContext,
) -> Result<Outcome<PaymentEvent>, PaymentOpError> {
    if let PaymentCommand::Create { order_id: created, tenant_id, .. } = &command {
        if created != order_id || tenant_id != tenant {
            return Err(PaymentOpError::Invalid("create names another order or tenant than it is sent to".into()));
        }
    }
    let shard = app.router.route(tenant)?;
    Ok(shard.payments.execute(order_id.as_str(), command, request, ctx).await?)
}

pub async fn get(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<PaymentView, PaymentOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.payments.load(tenant, order_id.as_str()).await?;
    if state.tenant() != Some(tenant) {
        return Err(PaymentOpError::NotFound);
    }
    PaymentView::from_state(&state).ok_or(PaymentOpError::NotFound)
}

#[cfg(test)]
mod tests {
    use wxcm_domain::member::Provenance;
    use wxcm_domain::{Actor, AmountFen, IdempotencyKey, PayRef, Reference};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_view_shows_the_order_and_its_payment() {
        let tenant = TenantId::parse("acme").unwrap();
        let openid = OpenId::parse("oABCdef123456").unwrap();
        let mut order = PaymentOrder::default();
        let created = order
            .handle(
                PaymentCommand::Create {
                    order_id: OutTradeNo::parse("rc0000000001").unwrap(),
                    tenant_id: tenant.clone(),
                    member_id: MemberId::for_openid(&tenant, &openid),
                    openid,
                    appid: AppId::parse("wx0123456789abcdef").unwrap(),
                    mch_id: PayRef::parse("1900000109").unwrap(),
                    purpose: PaymentPurpose::BalanceRecharge,
                    amount_fen: AmountFen::new(500).unwrap(),
                    api_version: PayApiVersion::V2,
                    expires_at: at("2026-03-10T02:30:00Z"),
                    provenance: Provenance {
                        actor: Actor::System { job: "test".into() },
                        reason: Reference::parse("recharge").unwrap(),
                        reference: None,
                        idempotency_key: IdempotencyKey::parse("key-00000001").unwrap(),
                    },
                },
                at("2026-03-10T02:00:00Z"),
            )
            .unwrap();
        created.iter().for_each(|e| order.apply(e).unwrap());
        assert_eq!(PaymentView::from_state(&PaymentOrder::default()), None);
        let view = PaymentView::from_state(&order).unwrap();
        assert_eq!((view.status, view.amount_fen, view.version), (PaymentStatus::Created, 500, 1));
        assert_eq!(view.transaction_id, None);
    }

    #[test]
    fn domain_not_found_maps_to_not_found() {
        assert!(matches!(PaymentOpError::from(ExecuteError::Domain(PaymentError::NotFound)), PaymentOpError::NotFound));
        assert!(matches!(
            PaymentOpError::from(ExecuteError::Domain(PaymentError::AlreadyPaid)),
            PaymentOpError::Rejected(PaymentError::AlreadyPaid)
        ));
    }
}
