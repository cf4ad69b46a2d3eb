//! Arbitrary bytes through the bounded XML reader, then, when it accepts
//! them, through the typed message and component-event readers. Any panic,
//! hang or unbounded allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxcm_protocol::wechat::message::{encrypted_payload, parse_component_event, parse_inbound};
use wxcm_protocol::wechat::xml::{parse, XmlLimits};

fuzz_target!(|data: &[u8]| {
    let limits = XmlLimits::default();
    let Ok(doc) = parse(data, &limits) else { return };
    assert!(doc.fields.len() < limits.elements_max);
    assert!(doc.fields.iter().all(|(_, text)| text.len() <= limits.field_bytes_max));
    if let Ok(message) = parse_inbound(&doc) {
        let _ = message.dedup_key();
    }
    let _ = parse_component_event(&doc);
    let _ = encrypted_payload(&doc);
});
