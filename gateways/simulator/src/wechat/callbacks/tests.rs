use wxcm_protocol::wechat::crypto;
use wxcm_protocol::wechat::xml::{self, XmlLimits};

use wxcm_protocol::wechat::message::encrypted_payload;

use super::compose::*;
use super::send::parse_reply;
use super::*;

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx0123456789abcdef";

fn request(mode: PushMode, tamper: Tamper) -> PushRequest {
    let mut m = PushMessage::new(MessageKind::Text, "o-member-1");
    m.content = Some("hello".into());
    let mut r = PushRequest::safe("http://127.0.0.1:1", APPID, "tok", KEY, m);
    r.mode = mode;
    r.tamper = tamper;
    r
}

fn query_value<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    url.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")))
}

#[test]
fn safe_push_is_signed_and_decrypts_to_the_message() {
    let p = Pusher::new().unwrap().prepare(&request(PushMode::Safe, Tamper::None)).unwrap();
    let (ts, nonce) = (query_value(&p.url, "timestamp").unwrap(), query_value(&p.url, "nonce").unwrap());
    assert_eq!(query_value(&p.url, "signature").unwrap(), crypto::signature("tok", ts, nonce));
    let outer = xml::parse(p.body.as_bytes(), &XmlLimits::default()).unwrap();
    let encrypt = encrypted_payload(&outer).unwrap();
    assert_eq!(query_value(&p.url, "msg_signature").unwrap(), crypto::msg_signature("tok", ts, nonce, encrypt));
    assert!(outer.get("Content").is_none(), "safe mode hides the fields");
    let inner = crypt_for(KEY, APPID).unwrap().decrypt(encrypt).unwrap();
    let doc = xml::parse(inner.as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(doc.get("Content"), Some("hello"));
    assert!(p.url.contains("/wechat/mp/wx0123456789abcdef?"));
}

#[test]
fn compat_push_carries_both_plaintext_push_neither() {
    let p = Pusher::new().unwrap().prepare(&request(PushMode::Compat, Tamper::None)).unwrap();
    let outer = xml::parse(p.body.as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(outer.get("Content"), Some("hello"));
    assert!(encrypted_payload(&outer).is_some());
    let p = Pusher::new().unwrap().prepare(&request(PushMode::Plaintext, Tamper::None)).unwrap();
    assert!(!p.body.contains("Encrypt") && query_value(&p.url, "msg_signature").is_none());
}

#[test]
fn tampers_break_what_they_say() {
    let pusher = Pusher::new().unwrap();
    let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::Signature)).unwrap();
    let (ts, nonce) = (query_value(&p.url, "timestamp").unwrap(), query_value(&p.url, "nonce").unwrap());
    assert_ne!(query_value(&p.url, "signature").unwrap(), crypto::signature("tok", ts, nonce));
    let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::TimestampStale)).unwrap();
    let ts: i64 = query_value(&p.url, "timestamp").unwrap().parse().unwrap();
    assert!(now_unix() - ts >= STALE_BY_S);
    let p = pusher.prepare(&request(PushMode::Safe, Tamper::AppidTail)).unwrap();
    let outer = xml::parse(p.body.as_bytes(), &XmlLimits::default()).unwrap();
    let encrypt = encrypted_payload(&outer).unwrap();
    assert!(matches!(crypt_for(KEY, APPID).unwrap().decrypt(encrypt), Err(crypto::CryptoError::AppIdMismatch)));
    let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::Doctype)).unwrap();
    assert!(p.body.contains("<!DOCTYPE") && p.body.contains("<!ENTITY"));
    let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::Oversized)).unwrap();
    assert!(p.body.len() > OVERSIZED_BYTES);
    assert!(pusher.prepare(&request(PushMode::Plaintext, Tamper::AppidTail)).is_err());
}

#[test]
fn encrypted_reply_opens_and_its_signature_is_checked() {
    let crypt = crypt_for(KEY, APPID).unwrap();
    let inner = wxcm_protocol::wechat::reply::text_reply("o-member-1", "gh_x", 1, "hi there");
    let body = wxcm_protocol::wechat::reply::encrypted_reply_random(&crypt, "tok", "1700000000", "42", &inner).unwrap();
    let opener = (KEY.to_owned(), APPID.to_owned());
    let reply = parse_reply(&body, "tok", Some(&opener)).unwrap();
    assert_eq!((reply.encrypted, reply.signature_valid, reply.content()), (true, Some(true), Some("hi there")));
    let reply = parse_reply(&body, "other-token", Some(&opener)).unwrap();
    assert_eq!(reply.signature_valid, Some(false));
}

#[tokio::test]
async fn copies_are_bounded_and_no_answer_is_retried() {
    let pusher = Pusher::new().unwrap();
    let mut r = request(PushMode::Safe, Tamper::None);
    r.copies = PUSH_COPIES_MAX + 1;
    assert!(matches!(pusher.push(&r).await, Err(PushError::Invalid(_))));
    // Nothing listens on port 1: three tries, then no answer.
    r.copies = 1;
    r.retry = true;
    r.retry_interval_ms = Some(1);
    let responses = pusher.push(&r).await.unwrap();
    assert_eq!((responses[0].tries, responses[0].status), (PUSH_TRIES_MAX, None));
    assert!(responses[0].error.is_some());
}
