//! JSON Schemas of the stored events, one per aggregate.
//!
//! They are committed as `schemas/events/<name>.schema.json` so that readers of
//! the event store (projectors, auditors, other languages) can check payloads
//! without this crate. `domain/tests/event_schemas.rs` fails when the committed
//! files drift from what is generated here, and validates a sample of every
//! event variant against them.
//!
//! Constraints that serde enforces through `try_from` (positive bounded amounts,
//! id lengths and character sets) are repeated on the types with `#[schemars]`
//! attributes, so the schemas reject what deserialization would reject.

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;

use crate::campaign::CampaignEvent;
use crate::coupon::{CouponEvent, TemplateEvent};
use crate::distribution::{CommissionAccountEvent, DistributorEvent};
use crate::mall::{MallOrderEvent, ProductEvent};
use crate::member::{MemberEvent, Provenance};
use crate::payment::PaymentEvent;
use crate::tenant::TenantEvent;

/// Name of the member event schema (file stem under `schemas/events/`).
pub const MEMBER_EVENTS: &str = "member-events";
/// Name of the tenant event schema (file stem under `schemas/events/`).
pub const TENANT_EVENTS: &str = "tenant-events";
/// Name of the payment order event schema (file stem under `schemas/events/`).
pub const PAYMENT_EVENTS: &str = "payment-events";
/// Name of the coupon template event schema (file stem under `schemas/events/`).
pub const COUPON_TEMPLATE_EVENTS: &str = "coupon-template-events";
/// Name of the issued coupon event schema (file stem under `schemas/events/`).
pub const COUPON_EVENTS: &str = "coupon-events";
/// Name of the mall product event schema (file stem under `schemas/events/`).
pub const MALL_PRODUCT_EVENTS: &str = "mall-product-events";
/// Name of the mall order event schema (file stem under `schemas/events/`).
pub const MALL_ORDER_EVENTS: &str = "mall-order-events";
/// Name of the campaign event schema (file stem under `schemas/events/`).
pub const CAMPAIGN_EVENTS: &str = "campaign-events";
/// Name of the commission account event schema (file stem under `schemas/events/`).
pub const COMMISSION_ACCOUNT_EVENTS: &str = "commission-account-events";
/// Name of the distributor event schema (file stem under `schemas/events/`).
pub const DISTRIBUTOR_EVENTS: &str = "distributor-events";

/// Every event schema as (name, JSON Schema draft 2020-12 document).
pub fn event_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (MEMBER_EVENTS, event_schema::<MemberEvent>()),
        (TENANT_EVENTS, event_schema::<TenantEvent>()),
        (PAYMENT_EVENTS, event_schema::<PaymentEvent>()),
        (COUPON_TEMPLATE_EVENTS, event_schema::<TemplateEvent>()),
        (COUPON_EVENTS, event_schema::<CouponEvent>()),
        (MALL_PRODUCT_EVENTS, event_schema::<ProductEvent>()),
        (MALL_ORDER_EVENTS, event_schema::<MallOrderEvent>()),
        (CAMPAIGN_EVENTS, event_schema::<CampaignEvent>()),
        (COMMISSION_ACCOUNT_EVENTS, event_schema::<CommissionAccountEvent>()),
        (DISTRIBUTOR_EVENTS, event_schema::<DistributorEvent>()),
    ]
}

/// The path, relative to the workspace root, where a schema is committed.
pub fn schema_path(name: &str) -> String {
    format!("schemas/events/{name}.schema.json")
}

fn event_schema<T: JsonSchema>() -> Value {
    let mut schema = SchemaGenerator::default().into_root_schema_for::<T>().to_value();
    strip_flattened_provenance_description(&mut schema);
    schema
}

/// Events flatten `Provenance` into their payload; schemars then copies the
/// struct's doc comment ("Who asks, why, ...") onto each event payload, where it
/// would describe the wrong thing.
fn strip_flattened_provenance_description(schema: &mut Value) {
    let provenance = SchemaGenerator::default().into_root_schema_for::<Provenance>().to_value();
    let Some(description) = provenance.get("description").cloned() else {
        return;
    };
    let Some(variants) = schema.get_mut("oneOf").and_then(Value::as_array_mut) else {
        return;
    };
    for variant in variants {
        let Some(properties) = variant.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for payload in properties.values_mut() {
            if let Some(payload) = payload.as_object_mut() {
                if payload.get("description") == Some(&description) {
                    payload.remove("description");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_schema_per_event_enum_with_every_variant() {
        let schemas = event_schemas();
        let names: Vec<_> = schemas.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                MEMBER_EVENTS,
                TENANT_EVENTS,
                PAYMENT_EVENTS,
                COUPON_TEMPLATE_EVENTS,
                COUPON_EVENTS,
                MALL_PRODUCT_EVENTS,
                MALL_ORDER_EVENTS,
                CAMPAIGN_EVENTS,
                COMMISSION_ACCOUNT_EVENTS,
                DISTRIBUTOR_EVENTS
            ]
        );
        for (name, schema) in &schemas {
            let variants = schema["oneOf"].as_array().expect("externally tagged enum");
            assert!(!variants.is_empty(), "{name}");
            for variant in variants {
                assert_eq!(variant["additionalProperties"], Value::Bool(false));
                let payloads = variant["properties"].as_object().expect("variant");
                for payload in payloads.values() {
                    assert!(payload.get("description").is_none(), "{name}: provenance doc leaked into {payload}");
                }
            }
        }
    }
}
