//! WeChat callbacks: `GET|POST /wechat/mp/{appid}` (developer mode),
//! `POST /wechat/component/mp/{appid}` (accounts authorized to the
//! third-party platform) and `POST /wechat/component/events` (authorization
//! events).
//!
//! Order of checks: account known → `signature` with a timestamp window →
//! body bounded → in safe mode `msg_signature` before decrypting (so decrypt
//! errors cannot serve as an oracle) → appid tail → bounded XML without DTDs →
//! typed message. Only then is anything claimed, stored or commanded.
//!
//! WeChat gives up after 5 s and shows the member an error; the handler
//! answers within `reply_budget_ms` whatever the downstream work does, and a
//! reply that comes later goes out through the customer-service API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wxcm_commands::wechat::{
    self as usecase, AccountMode, ClaimOutcome, InboundCallback, InboundKind, ReplyContent, WechatOpError,
};
use wxcm_domain::{AppId, OpenId, SceneKey, TenantId};

use crate::state::AppState;
use crate::wechat_edge::{CallbackSecrets, WechatEdge};
use wxcm_protocol::wechat::crypto::{self, AesKey, MsgCrypt};
use wxcm_protocol::wechat::message::{
    self, ArticleUrl, ComponentEvent, CopyrightCheck, Event, Inbound, InboundMessage,
};
use wxcm_protocol::wechat::reply::{self, Article, NO_REPLY};
use wxcm_protocol::wechat::xml;

#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    openid: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

/// Query values are short; anything longer is not WeChat.
const QUERY_VALUE_CHARS_MAX: usize = 512;

#[derive(Debug)]
enum Refusal {
    UnknownAccount,
    Signature,
    StaleTimestamp,
    TooLarge,
    BadRequest(String),
    Unavailable,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, text) = match &self {
            Refusal::UnknownAccount => (StatusCode::NOT_FOUND, "unknown account".to_owned()),
            Refusal::Signature => (StatusCode::FORBIDDEN, "bad signature".to_owned()),
            Refusal::StaleTimestamp => (StatusCode::FORBIDDEN, "timestamp outside the accepted window".to_owned()),
            Refusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body too large".to_owned()),
            Refusal::BadRequest(why) => (StatusCode::BAD_REQUEST, why.clone()),
            Refusal::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "try again".to_owned()),
        };
        tracing::info!(?self, "wechat callback refused");
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    }
}

fn plain(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn xml_response(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response()
}

fn infra(e: WechatOpError) -> Refusal {
    tracing::error!(error = %e, "wechat callback failed");
    Refusal::Unavailable
}

fn bounded(value: &Option<String>, what: &str) -> Result<String, Refusal> {
    match value {
        Some(v) if !v.is_empty() && v.chars().count() <= QUERY_VALUE_CHARS_MAX => Ok(v.clone()),
        Some(_) => Err(Refusal::BadRequest(format!("{what} is empty or too long"))),
        None => Err(Refusal::BadRequest(format!("{what} is missing"))),
    }
}

/// `signature` over (token, timestamp, nonce) and the timestamp within the window.
fn check_signature(edge: &WechatEdge, token: &str, q: &CallbackQuery) -> Result<(String, String), Refusal> {
    let signature = bounded(&q.signature, "signature")?;
    let timestamp = bounded(&q.timestamp, "timestamp")?;
    let nonce = bounded(&q.nonce, "nonce")?;
    if !crypto::verify_hex(&crypto::signature(token, &timestamp, &nonce), &signature) {
        return Err(Refusal::Signature);
    }
    let sent_s: i64 = timestamp.parse().map_err(|_| Refusal::BadRequest("timestamp is not an integer".into()))?;
    let now_s = edge.now_unix();
    if (now_s - sent_s).abs() > edge.settings.timestamp_window_s {
        return Err(Refusal::StaleTimestamp);
    }
    Ok((timestamp, nonce))
}

async fn account(state: &AppState, edge: &WechatEdge, appid: &str) -> Result<(AppId, TenantId, AccountMode), Refusal> {
    let appid = AppId::parse(appid).map_err(|_| Refusal::UnknownAccount)?;
    match edge.directory.lookup(&state.app, &appid).await {
        Ok(Some((tenant, mode))) => Ok((appid, tenant, mode)),
        Ok(None) => Err(Refusal::UnknownAccount),
        Err(e) => Err(infra(e)),
    }
}

async fn secrets_for(
    state: &AppState,
    edge: &WechatEdge,
    tenant: &TenantId,
    appid: &AppId,
    mode: AccountMode,
) -> Result<CallbackSecrets, Refusal> {
    match mode {
        AccountMode::Direct => match edge.direct_secrets(&state.app, tenant, appid).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(Refusal::UnknownAccount),
            Err(e) => Err(infra(e)),
        },
        AccountMode::Component => edge.component_secrets().ok_or(Refusal::UnknownAccount),
    }
}

/// `GET /wechat/mp/{appid}`: URL verification.
pub async fn verify_url(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let edge = state.wechat.clone();
    let result = async {
        let (appid, tenant, mode) = account(&state, &edge, &appid).await?;
        let secrets = secrets_for(&state, &edge, &tenant, &appid, mode).await?;
        check_signature(&edge, &secrets.token, &q)?;
        bounded(&q.echostr, "echostr")
    }
    .await;
    match result {
        Ok(echostr) => plain(StatusCode::OK, echostr),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /wechat/mp/{appid}`: messages and events of a developer-mode account.
pub async fn receive(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    Query(q): Query<CallbackQuery>,
    body: Bytes,
) -> Response {
    receive_for(state, appid, q, body, AccountMode::Direct).await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /wechat/component/mp/{appid}`: messages and events of an authorized account.
pub async fn receive_component(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    Query(q): Query<CallbackQuery>,
    body: Bytes,
) -> Response {
    receive_for(state, appid, q, body, AccountMode::Component).await.unwrap_or_else(IntoResponse::into_response)
}

/// Checks `msg_signature` and decrypts a safe-mode body; plaintext bodies pass through.
fn open_body(
    edge: &WechatEdge,
    secrets: &CallbackSecrets,
    q: &CallbackQuery,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
    crypt_appid: &str,
) -> Result<(Vec<u8>, Option<MsgCrypt>), Refusal> {
    let limits = edge.xml_limits();
    let safe = q.encrypt_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("aes"));
    if !safe {
        if edge.settings.require_safe_mode {
            return Err(Refusal::BadRequest("plaintext callbacks are disabled".into()));
        }
        return Ok((body.to_vec(), None));
    }
    let outer = xml::parse(body, &limits).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let encrypt = message::encrypted_payload(&outer).ok_or_else(|| Refusal::BadRequest("Encrypt is missing".into()))?;
    let msg_signature = bounded(&q.msg_signature, "msg_signature")?;
    if !crypto::verify_hex(&crypto::msg_signature(&secrets.token, timestamp, nonce, encrypt), &msg_signature) {
        return Err(Refusal::Signature);
    }
    let aes = secrets.encoding_aes_key.as_deref().ok_or(Refusal::UnknownAccount)?;
    let key = AesKey::from_encoding_aes_key(aes).map_err(|_| Refusal::Unavailable)?;
    let crypt = MsgCrypt::new(key, crypt_appid).map_err(|_| Refusal::Unavailable)?;
    let plaintext = crypt.decrypt(encrypt).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    Ok((plaintext.into_bytes(), Some(crypt)))
}

async fn receive_for(
    state: AppState,
    appid: String,
    q: CallbackQuery,
    body: Bytes,
    route_mode: AccountMode,
) -> Result<Response, Refusal> {
    let edge = state.wechat.clone();
    let (appid, tenant, mode) = account(&state, &edge, &appid).await?;
    if mode != route_mode {
        return Err(Refusal::UnknownAccount);
    }
    let secrets = secrets_for(&state, &edge, &tenant, &appid, mode).await?;
    let (timestamp, nonce) = check_signature(&edge, &secrets.token, &q)?;
    if body.len() > edge.settings.body_bytes_max {
        return Err(Refusal::TooLarge);
    }
    let crypt_appid = match mode {
        AccountMode::Direct => appid.as_str().to_owned(),
        AccountMode::Component => edge.component_appid().ok_or(Refusal::UnknownAccount)?.to_owned(),
    };
    let (plaintext, crypt) = open_body(&edge, &secrets, &q, &timestamp, &nonce, &body, &crypt_appid)?;
    let doc = xml::parse(&plaintext, &edge.xml_limits()).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let msg = message::parse_inbound(&doc).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let openid = OpenId::parse(&msg.header.from_user_name)
        .map_err(|_| Refusal::BadRequest("FromUserName is not an openid".into()))?;
    if let Some(query_openid) = &q.openid {
        if query_openid != openid.as_str() {
            return Err(Refusal::BadRequest("openid does not match FromUserName".into()));
        }
    }
    let cb = to_callback(tenant, appid, openid, &msg, &doc)?;
    let reply_xml = handle(&state, &edge, cb, &msg).await?;
    let Some(reply_xml) = reply_xml else {
        return Ok(plain(StatusCode::OK, NO_REPLY.to_owned()));
    };
    match crypt {
        None => Ok(xml_response(reply_xml)),
        Some(crypt) => {
            let envelope = reply::encrypted_reply_random(&crypt, &secrets.token, &timestamp, &nonce, &reply_xml)
                .map_err(|_| Refusal::Unavailable)?;
            Ok(xml_response(envelope))
        }
    }
}

fn scene(key: Option<&str>) -> Option<SceneKey> {
    key.and_then(|k| SceneKey::parse(k).ok())
}

fn to_callback(
    tenant: TenantId,
    appid: AppId,
    openid: OpenId,
    msg: &InboundMessage,
    doc: &xml::XmlDoc,
) -> Result<InboundCallback, Refusal> {
    let (event, event_key, kind) = match &msg.body {
        Inbound::Event(event) => {
            let kind = match event {
                Event::Subscribe { event_key, .. } => {
                    InboundKind::Subscribe { scene: scene(event_key.as_deref().and_then(message::scene_of_subscribe)) }
                }
                Event::Unsubscribe => InboundKind::Unsubscribe,
                Event::Scan { event_key, .. } => InboundKind::Scan { scene: scene(Some(event_key)) },
                Event::Click { key } => InboundKind::Click { key: key.clone() },
                Event::TemplateSendJobFinish { msg_id, status } => {
                    InboundKind::TemplateJobFinish { msg_id: *msg_id, status: status.clone() }
                }
                Event::MassSendJobFinish {
                    msg_id,
                    status,
                    total_count,
                    filter_count,
                    sent_count,
                    error_count,
                    copyright_check,
                    article_urls,
                } => {
                    let counts = [
                        ("total", *total_count),
                        ("filter", *filter_count),
                        ("sent", *sent_count),
                        ("error", *error_count),
                    ];
                    InboundKind::MassJobFinish {
                        msg_id: *msg_id,
                        status: status.clone(),
                        counts: mass_result(counts, copyright_check.as_ref(), article_urls)?,
                    }
                }
                Event::Location { .. }
                | Event::View { .. }
                | Event::ScanCode { .. }
                | Event::PicsSent { .. }
                | Event::LocationSelected { .. }
                | Event::Other { .. } => InboundKind::Other,
            };
            (Some(event.name().to_owned()), event.event_key().map(str::to_owned), kind)
        }
        Inbound::Text { content, .. } => (None, None, InboundKind::Text { content: content.clone() }),
        _ => (None, None, InboundKind::Other),
    };
    let sent_at = chrono::DateTime::from_timestamp(msg.header.create_time, 0)
        .ok_or_else(|| Refusal::BadRequest("CreateTime out of range".into()))?;
    Ok(InboundCallback {
        tenant,
        appid,
        openid,
        sent_at,
        dedup_key: msg.dedup_key(),
        msg_type: msg.header.msg_type.to_ascii_lowercase(),
        event,
        event_key,
        kind,
        fields: stored_fields(doc),
    })
}

/// What a MASSSENDJOBFINISH stores with its delivery result (`counts`): the
/// counts, and the copyright check and article URLs when WeChat sent them.
fn mass_result(
    counts: [(&str, u64); 4],
    copyright_check: Option<&CopyrightCheck>,
    article_urls: &[ArticleUrl],
) -> Result<serde_json::Value, Refusal> {
    let mut result: serde_json::Map<String, serde_json::Value> =
        counts.into_iter().map(|(name, count)| (name.to_owned(), count.into())).collect();
    // Plain structs of numbers and strings: serializing them cannot fail.
    if let Some(check) = copyright_check {
        result.insert("copyright_check".into(), serde_json::to_value(check).map_err(|_| Refusal::Unavailable)?);
    }
    if !article_urls.is_empty() {
        result.insert("article_urls".into(), serde_json::to_value(article_urls).map_err(|_| Refusal::Unavailable)?);
    }
    Ok(serde_json::Value::Object(result))
}

/// The message's fields as stored: path → text, and path → texts in document
/// order for a path that repeats (the leaves of list items).
fn stored_fields(doc: &xml::XmlDoc) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    for (path, text) in &doc.fields {
        let text = serde_json::Value::String(text.clone());
        match fields.get_mut(path) {
            None => {
                fields.insert(path.clone(), text);
            }
            Some(serde_json::Value::Array(texts)) => texts.push(text),
            Some(first) => *first = serde_json::Value::Array(vec![first.take(), text]),
        }
    }
    serde_json::Value::Object(fields)
}

fn render(reply: &ReplyContent, msg: &InboundMessage, now_s: i64) -> Option<String> {
    let to = &msg.header.from_user_name;
    let from = &msg.header.to_user_name;
    match reply {
        ReplyContent::Text { content } => Some(reply::text_reply(to, from, now_s, content)),
        ReplyContent::News { articles } => {
            let articles: Vec<Article> = articles
                .iter()
                .map(|a| Article {
                    title: a.title.clone(),
                    description: a.description.clone(),
                    pic_url: a.pic_url.clone(),
                    url: a.url.clone(),
                })
                .collect();
            reply::news_reply(to, from, now_s, &articles).ok()
        }
    }
}

/// Claims, processes within the budget, and returns the plaintext reply XML.
async fn handle(
    state: &AppState,
    edge: &Arc<WechatEdge>,
    cb: InboundCallback,
    msg: &InboundMessage,
) -> Result<Option<String>, Refusal> {
    match usecase::claim(&state.app, &cb).await.map_err(infra)? {
        ClaimOutcome::Done { reply } => return Ok(reply),
        // The first try is still running; it replies through the customer-service API if late.
        ClaimOutcome::InProgress => return Ok(None),
        ClaimOutcome::Claimed => {}
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = state.app.clone();
    let edge_for_task = edge.clone();
    let msg = msg.clone();
    // The work runs in its own task so that answering WeChat in time never cancels it.
    tokio::spawn(async move {
        let outcome = usecase::process(&app, &cb).await;
        let outcome = match outcome {
            Ok(reply) => {
                let xml = reply.as_ref().and_then(|r| render(r, &msg, edge_for_task.now_unix()));
                match usecase::finish(&app, &cb, xml.as_deref()).await {
                    Ok(()) => Ok((reply, xml)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, appid = %cb.appid.as_str(), "wechat callback processing failed");
            // Let WeChat's retry run it again instead of waiting for the claim to go stale.
            if let Err(e) = usecase::release(&app, &cb).await {
                tracing::warn!(error = %e, "could not release the callback claim");
            }
        }
        if let Err(Ok((Some(reply), _))) = tx.send(outcome) {
            // The handler gave up waiting: send the reply as a customer-service message.
            edge_for_task.send_late_reply(&cb.tenant, &cb.appid, &cb.openid, &reply).await;
        }
    });
    match tokio::time::timeout(edge.reply_budget(), rx).await {
        Ok(Ok(Ok((_, xml)))) => Ok(xml),
        Ok(Ok(Err(_))) | Ok(Err(_)) => Err(Refusal::Unavailable),
        Err(_) => Ok(None),
    }
}

/// `POST /wechat/component/events`: component_verify_ticket and authorization changes.
pub async fn component_events(State(state): State<AppState>, Query(q): Query<CallbackQuery>, body: Bytes) -> Response {
    let edge = state.wechat.clone();
    let result = async {
        let secrets = edge.component_secrets().ok_or(Refusal::UnknownAccount)?;
        let component_appid = edge.component_appid().ok_or(Refusal::UnknownAccount)?.to_owned();
        let (timestamp, nonce) = check_signature(&edge, &secrets.token, &q)?;
        if body.len() > edge.settings.body_bytes_max {
            return Err(Refusal::TooLarge);
        }
        let mut safe_query = q;
        // Authorization events are always encrypted.
        safe_query.encrypt_type.get_or_insert_with(|| "aes".to_owned());
        let (plaintext, _) = open_body(&edge, &secrets, &safe_query, &timestamp, &nonce, &body, &component_appid)?;
        let doc = xml::parse(&plaintext, &edge.xml_limits()).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let event = message::parse_component_event(&doc).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        apply_component_event(&state, &edge, event).await
    }
    .await;
    match result {
        Ok(()) => plain(StatusCode::OK, NO_REPLY.to_owned()),
        Err(refusal) => refusal.into_response(),
    }
}

async fn apply_component_event(state: &AppState, edge: &WechatEdge, event: ComponentEvent) -> Result<(), Refusal> {
    match event {
        ComponentEvent::VerifyTicket { ticket, .. } => edge.store_verify_ticket(&ticket).await.map_err(|e| {
            tracing::error!(error = %e, "component_verify_ticket not stored");
            Refusal::Unavailable
        }),
        ComponentEvent::Authorized(grant) | ComponentEvent::UpdateAuthorized(grant) => {
            let appid = AppId::parse(&grant.authorizer_appid)
                .map_err(|_| Refusal::BadRequest("AuthorizerAppid is not an appid".into()))?;
            edge.authorize(&state.app, &appid, &grant.authorization_code, grant.pre_auth_code.as_deref()).await.map_err(
                |e| match e {
                    WechatOpError::Invalid(why) => Refusal::BadRequest(why),
                    WechatOpError::UnknownAccount(_) => Refusal::UnknownAccount,
                    other => infra(other),
                },
            )
        }
        ComponentEvent::Unauthorized { authorizer_appid } => {
            let appid = AppId::parse(&authorizer_appid)
                .map_err(|_| Refusal::BadRequest("AuthorizerAppid is not an appid".into()))?;
            edge.deauthorize(&state.app, &appid).await.map_err(infra)
        }
        ComponentEvent::Other { info_type } => {
            tracing::info!(%info_type, "component event ignored");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wxcm_protocol::wechat::xml::XmlLimits;

    use super::*;

    #[test]
    fn stored_fields_keep_every_item_of_a_list() {
        let doc = xml::parse(
            b"<xml><Event>pic_photo_or_album</Event><SendPicsInfo><Count>2</Count><PicList>\
              <item><PicMd5Sum>a</PicMd5Sum></item><item><PicMd5Sum>b</PicMd5Sum></item><item><PicMd5Sum>c</PicMd5Sum></item>\
              </PicList></SendPicsInfo></xml>",
            &XmlLimits::default(),
        )
        .unwrap();
        assert_eq!(
            stored_fields(&doc),
            json!({
                "Event": "pic_photo_or_album",
                "SendPicsInfo/Count": "2",
                "SendPicsInfo/PicList/item/PicMd5Sum": ["a", "b", "c"],
            })
        );
    }

    #[test]
    fn mass_results_carry_the_lists_only_when_sent() {
        let counts = [("total", 3), ("filter", 2), ("sent", 1), ("error", 1)];
        assert_eq!(mass_result(counts, None, &[]).unwrap(), json!({"total": 3, "filter": 2, "sent": 1, "error": 1}));
        let check = CopyrightCheck { count: 0, check_state: 1, results: Vec::new() };
        let urls = [ArticleUrl { article_idx: 1, article_url: Some("https://mp.weixin.qq.com/s/1".into()) }];
        assert_eq!(
            mass_result(counts, Some(&check), &urls).unwrap(),
            json!({
                "total": 3, "filter": 2, "sent": 1, "error": 1,
                "copyright_check": {"count": 0, "check_state": 1, "results": []},
                "article_urls": [{"article_idx": 1, "article_url": "https://mp.weixin.qq.com/s/1"}],
            })
        );
    }
}
