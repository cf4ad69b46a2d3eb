//! The coupon part of `wxcm audit reconcile`: folds every coupon template and
//! coupon stream of a tenant with the domain aggregates (`CouponTemplate::apply`,
//! `Coupon::apply`) and checks
//! - across aggregates: every grant of a template's `CouponsIssued` is a coupon
//!   stream of that template with that serial and member, and every coupon
//!   stream was granted (the template's `issued` = its coupons);
//! - against `rm_coupons`: one row per coupon with its template, member,
//!   serial and state.
//!
//! Read-only, from one snapshot. A stream that cannot be folded is a
//! [`BrokenStream`] finding (stream, sequence, rule).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, Row};
use wxcm_domain::coupon::{Coupon, CouponTemplate, TemplateEvent};
use wxcm_domain::{EventSourced, TenantId};

use crate::reconcile::{BrokenStream, NOT_CONTIGUOUS, UNDECODABLE};

/// One coupon figure that differs; `expected` from the events, `found` from
/// the other side (`-`: missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CouponDifference {
    /// `coupon/<id>` or `coupon_template/<id>`.
    pub stream: String,
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CouponReconcile {
    pub templates: u64,
    pub coupons: u64,
    pub broken_streams: Vec<BrokenStream>,
    pub differences: Vec<CouponDifference>,
}

impl CouponReconcile {
    pub fn is_clean(&self) -> bool {
        self.broken_streams.is_empty() && self.differences.is_empty()
    }
}

const EVENTS_SQL: &str = "SELECT aggregate_type, aggregate_id, sequence, payload FROM events
  WHERE tenant_id = $1 AND aggregate_type IN ('coupon_template', 'coupon')
  ORDER BY aggregate_type, aggregate_id, sequence";

/// A stream being folded with its domain aggregate (also used by the mall part).
pub(crate) struct Fold<T> {
    pub(crate) state: T,
    pub(crate) version: i64,
    /// Set at the first event that cannot be folded; later events are ignored.
    pub(crate) broken: Option<BrokenStream>,
}

impl<T: EventSourced> Fold<T> {
    pub(crate) fn new() -> Self {
        Self { state: T::default(), version: 0, broken: None }
    }

    pub(crate) fn apply(&mut self, id: &str, sequence: i64, payload: serde_json::Value) {
        if self.broken.is_some() {
            return;
        }
        let stream = format!("{}/{id}", T::TYPE);
        if sequence != self.version + 1 {
            self.broken = Some(BrokenStream {
                stream,
                sequence,
                rule: NOT_CONTIGUOUS,
                detail: format!("expected sequence {}", self.version + 1),
            });
            return;
        }
        let event: T::Event = match serde_json::from_value(payload) {
            Ok(e) => e,
            Err(e) => {
                self.broken = Some(BrokenStream { stream, sequence, rule: UNDECODABLE, detail: e.to_string() });
                return;
            }
        };
        match self.state.apply(&event) {
            Ok(()) => self.version = sequence,
            Err(v) => self.broken = Some(BrokenStream { stream, sequence, rule: v.rule, detail: v.detail }),
        }
    }
}

/// (template, member, serial, state) of a coupon; what both sides are compared on.
type CouponKey = (String, String, i64, String);

pub async fn reconcile_coupons(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<CouponReconcile> {
    let mut templates: BTreeMap<String, Fold<CouponTemplate>> = BTreeMap::new();
    let mut coupons: BTreeMap<String, Fold<Coupon>> = BTreeMap::new();
    // Grants the templates made: coupon id → (template, member, serial).
    let mut granted: BTreeMap<String, (String, String, i64)> = BTreeMap::new();
    {
        let mut rows = sqlx::query(EVENTS_SQL).bind(tenant.as_str()).fetch(&mut *snapshot);
        while let Some(row) = rows.try_next().await.context("reading coupon events")? {
            let kind: String = row.try_get("aggregate_type")?;
            let id: String = row.try_get("aggregate_id")?;
            let sequence: i64 = row.try_get("sequence")?;
            let payload: serde_json::Value = row.try_get("payload")?;
            if kind == CouponTemplate::TYPE {
                if let Ok(TemplateEvent::CouponsIssued { grants, .. }) = serde_json::from_value(payload.clone()) {
                    for g in grants {
                        let serial = i64::try_from(g.serial).unwrap_or(i64::MAX);
                        granted.insert(g.coupon_id.to_string(), (id.clone(), g.member_id.to_string(), serial));
                    }
                }
                templates.entry(id.clone()).or_insert_with(Fold::new).apply(&id, sequence, payload);
            } else {
                coupons.entry(id.clone()).or_insert_with(Fold::new).apply(&id, sequence, payload);
            }
        }
    }
    let mut report = CouponReconcile {
        templates: templates.len() as u64,
        coupons: coupons.len() as u64,
        ..CouponReconcile::default()
    };
    report.broken_streams.extend(templates.values().filter_map(|f| f.broken.clone()));
    report.broken_streams.extend(coupons.values().filter_map(|f| f.broken.clone()));

    let mut expected: BTreeMap<String, CouponKey> = BTreeMap::new();
    let mut per_template: BTreeMap<String, u64> = BTreeMap::new();
    for (id, fold) in &coupons {
        let Some((issued, state)) = fold.state.issued.as_ref().filter(|_| fold.broken.is_none()) else { continue };
        let template = issued.template_id.to_string();
        *per_template.entry(template.clone()).or_default() += 1;
        let key = (
            template,
            issued.member_id.to_string(),
            i64::try_from(issued.serial).unwrap_or(i64::MAX),
            state.as_str().to_owned(),
        );
        match granted.get(id) {
            Some((t, m, s)) if (t, m, s) == (&key.0, &key.1, &key.2) => {}
            Some((t, m, s)) => report.differences.push(CouponDifference {
                stream: format!("coupon/{id}"),
                field: "grant",
                expected: format!("{t} {m} #{s}"),
                found: format!("{} {} #{}", key.0, key.1, key.2),
            }),
            None => report.differences.push(CouponDifference {
                stream: format!("coupon/{id}"),
                field: "grant",
                expected: "-".into(),
                found: "a coupon no template granted".into(),
            }),
        }
        expected.insert(id.clone(), key);
    }
    for (id, (template, _, serial)) in &granted {
        if !coupons.contains_key(id) {
            report.differences.push(CouponDifference {
                stream: format!("coupon_template/{template}"),
                field: "granted coupon",
                expected: format!("coupon/{id} #{serial}"),
                found: "-".into(),
            });
        }
    }
    for (id, fold) in &templates {
        let Some(state) = fold.state.created.as_ref().filter(|_| fold.broken.is_none()) else { continue };
        let coupons_of_template = per_template.get(id).copied().unwrap_or(0);
        if state.issued != coupons_of_template {
            report.differences.push(CouponDifference {
                stream: format!("coupon_template/{id}"),
                field: "issued",
                expected: state.issued.to_string(),
                found: format!("{coupons_of_template} coupon streams"),
            });
        }
    }

    let rows: Vec<(String, String, String, i64, String)> =
        sqlx::query_as("SELECT coupon_id, template_id, member_id, serial, state FROM rm_coupons WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_all(&mut *snapshot)
            .await
            .context("reading rm_coupons")?;
    let found: BTreeMap<String, CouponKey> = rows.into_iter().map(|(id, t, m, s, st)| (id, (t, m, s, st))).collect();
    let show = |k: &CouponKey| format!("{} {} #{} {}", k.0, k.1, k.2, k.3);
    for (id, e) in &expected {
        match found.get(id) {
            Some(f) if f == e => {}
            Some(f) => report.differences.push(CouponDifference {
                stream: format!("coupon/{id}"),
                field: "rm_coupons",
                expected: show(e),
                found: show(f),
            }),
            None => report.differences.push(CouponDifference {
                stream: format!("coupon/{id}"),
                field: "rm_coupons",
                expected: show(e),
                found: "-".into(),
            }),
        }
    }
    for (id, f) in &found {
        if !expected.contains_key(id) && coupons.get(id).is_none_or(|c| c.broken.is_none()) {
            report.differences.push(CouponDifference {
                stream: format!("coupon/{id}"),
                field: "rm_coupons",
                expected: "-".into(),
                found: show(f),
            });
        }
    }
    Ok(report)
}
