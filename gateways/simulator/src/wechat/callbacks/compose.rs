//! The callback documents WeChat sends: fields, XML, signatures, encryption.

use std::time::{SystemTime, UNIX_EPOCH};

use wxcm_protocol::wechat::crypto::{self, AesKey, MsgCrypt};
use wxcm_protocol::wechat::xml::write_cdata;

use super::*;

pub(super) fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

pub(super) fn nonce() -> String {
    rand::random::<u32>().to_string()
}

pub(super) fn check_field(what: &str, value: &str) -> Result<(), PushError> {
    if value.is_empty() || value.chars().count() > FIELD_CHARS_MAX {
        return Err(PushError::Invalid(format!("{what} must be 1..={FIELD_CHARS_MAX} characters")));
    }
    Ok(())
}

pub(super) fn element(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    write_cdata(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

pub(super) fn number(out: &mut String, name: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("<{name}>{value}</{name}>"));
}

/// The account's original id as WeChat puts it in ToUserName.
pub(super) fn original_id(appid: &str) -> String {
    format!("gh_{}", appid.trim_start_matches("wx").chars().take(12).collect::<String>())
}

/// The plaintext callback XML WeChat would send (without the root element).
pub(super) fn message_fields(appid: &str, m: &PushMessage, tamper: Tamper) -> Result<String, PushError> {
    check_field("openid", &m.openid)?;
    let create_time = m.create_time.unwrap_or_else(now_unix);
    let msg_id = m.msg_id.unwrap_or_else(|| rand::random::<u64>() >> 1);
    let mut out = String::new();
    element(&mut out, "ToUserName", &original_id(appid));
    element(&mut out, "FromUserName", &m.openid);
    number(&mut out, "CreateTime", create_time);
    let event = |out: &mut String, name: &str| {
        element(out, "MsgType", "event");
        element(out, "Event", name);
    };
    let need = |value: &Option<String>, what: &str| -> Result<String, PushError> {
        let v = value.clone().ok_or_else(|| PushError::Invalid(format!("{what} is required for this kind")))?;
        check_field(what, &v)?;
        Ok(v)
    };
    match m.kind {
        MessageKind::Subscribe => {
            event(&mut out, "subscribe");
            if let Some(scene) = &m.scene {
                check_field("scene", scene)?;
                element(&mut out, "EventKey", &format!("qrscene_{scene}"));
                element(&mut out, "Ticket", &format!("ticket-{scene}"));
            }
        }
        MessageKind::Unsubscribe => event(&mut out, "unsubscribe"),
        MessageKind::Scan => {
            let scene = need(&m.scene, "scene")?;
            event(&mut out, "SCAN");
            element(&mut out, "EventKey", &scene);
            element(&mut out, "Ticket", &format!("ticket-{scene}"));
        }
        MessageKind::Text => {
            let content =
                if tamper == Tamper::Oversized { "x".repeat(OVERSIZED_BYTES) } else { need(&m.content, "content")? };
            element(&mut out, "MsgType", "text");
            element(&mut out, "Content", &content);
            number(&mut out, "MsgId", msg_id);
        }
        MessageKind::Click => {
            let key = need(&m.key, "key")?;
            event(&mut out, "CLICK");
            element(&mut out, "EventKey", &key);
        }
        MessageKind::View => {
            let url = need(&m.key, "key")?;
            event(&mut out, "VIEW");
            element(&mut out, "EventKey", &url);
        }
        MessageKind::Location => {
            event(&mut out, "LOCATION");
            element(&mut out, "Latitude", "23.137466");
            element(&mut out, "Longitude", "113.352425");
            element(&mut out, "Precision", "119.385040");
        }
        MessageKind::TemplateFinish => {
            event(&mut out, "TEMPLATESENDJOBFINISH");
            number(&mut out, "MsgID", msg_id);
            element(&mut out, "Status", "success");
        }
        MessageKind::MassFinish => {
            event(&mut out, "MASSSENDJOBFINISH");
            number(&mut out, "MsgID", msg_id);
            element(&mut out, "Status", "send success");
            for (name, n) in [("TotalCount", 100), ("FilterCount", 80), ("SentCount", 75), ("ErrorCount", 5)] {
                number(&mut out, name, n);
            }
        }
        MessageKind::Image => {
            element(&mut out, "MsgType", "image");
            element(&mut out, "PicUrl", "http://mmbiz.qpic.cn/sandbox.jpg");
            element(&mut out, "MediaId", "sandbox-media-id");
            number(&mut out, "MsgId", msg_id);
        }
    }
    if tamper == Tamper::Oversized && m.kind != MessageKind::Text {
        element(&mut out, "Padding", &"x".repeat(OVERSIZED_BYTES));
    }
    Ok(out)
}

/// Wraps fields in the root, with the XXE payload first for the `doctype` tamper.
pub(super) fn document(fields: &str, tamper: Tamper) -> String {
    let mut out = String::new();
    if tamper == Tamper::Doctype {
        out.push_str("<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>");
    }
    out.push_str("<xml>");
    out.push_str(fields);
    if tamper == Tamper::Doctype {
        out.push_str("<Leak>&xxe;</Leak>");
    }
    out.push_str("</xml>");
    out
}

pub(super) fn crypt_for(encoding_aes_key: &str, appid: &str) -> Result<MsgCrypt, PushError> {
    let key = AesKey::from_encoding_aes_key(encoding_aes_key)
        .map_err(|e| PushError::Invalid(format!("encoding_aes_key: {e}")))?;
    MsgCrypt::new(key, appid).map_err(|e| PushError::Invalid(format!("appid: {e}")))
}

/// Query string of a signed callback (`signature`, and `msg_signature` over `encrypt`).
pub(super) fn signed_query(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: Option<&str>,
    openid: Option<&str>,
) -> String {
    let mut query =
        format!("signature={}&timestamp={timestamp}&nonce={nonce}", crypto::signature(token, timestamp, nonce));
    if let Some(openid) = openid {
        query.push_str(&format!("&openid={}", urlencode(openid)));
    }
    if let Some(encrypt) = encrypt {
        query.push_str(&format!(
            "&encrypt_type=aes&msg_signature={}",
            crypto::msg_signature(token, timestamp, nonce, encrypt)
        ));
    }
    query
}

pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn target(base: &str) -> Result<&str, PushError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() > FIELD_CHARS_MAX {
        return Err(PushError::Invalid("target_base_url must be an http(s) URL".into()));
    }
    Ok(base)
}
