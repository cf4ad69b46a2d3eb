//! [`Pusher`]: delivers callbacks with WeChat's retries and opens the passive replies.

use std::collections::BTreeMap;
use std::time::Instant;

use wxcm_protocol::wechat::crypto::{self};
use wxcm_protocol::wechat::message::encrypted_payload;
use wxcm_protocol::wechat::xml::{self, XmlLimits};

use super::*;

use super::compose::*;

impl Pusher {
    pub fn new() -> Result<Self, PushError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| PushError::Client(e.to_string()))?;
        Ok(Self { http })
    }

    /// The request for one copy of `req`: URL with the signed query, and body.
    pub fn prepare(&self, req: &PushRequest) -> Result<PreparedPush, PushError> {
        check_field("appid", &req.appid)?;
        check_field("token", &req.token)?;
        let base = target(&req.target_base_url)?;
        let fields = message_fields(&req.appid, &req.message, req.tamper)?;
        let plaintext = document(&fields, req.tamper);
        let timestamp = match req.tamper {
            Tamper::TimestampStale => now_unix() - STALE_BY_S,
            _ => now_unix(),
        }
        .to_string();
        let nonce = nonce();
        let sign_token = match req.tamper {
            Tamper::Signature => format!("{}-not", req.token),
            _ => req.token.clone(),
        };
        let (body, encrypt) =
            match req.mode {
                PushMode::Plaintext => {
                    if req.tamper == Tamper::AppidTail {
                        return Err(PushError::Invalid("appid_tail needs compat or safe mode".into()));
                    }
                    (plaintext, None)
                }
                PushMode::Compat | PushMode::Safe => {
                    let aes = req.encoding_aes_key.as_deref().ok_or_else(|| {
                        PushError::Invalid("encoding_aes_key is required in compat and safe mode".into())
                    })?;
                    let crypt_appid = match (req.tamper, req.component) {
                        (Tamper::AppidTail, _) => FOREIGN_APPID.to_owned(),
                        (_, true) => req.component_appid.clone().ok_or_else(|| {
                            PushError::Invalid("component_appid is required for component pushes".into())
                        })?,
                        (_, false) => req.appid.clone(),
                    };
                    let encrypt = crypt_for(aes, &crypt_appid)?
                        .encrypt_random(&plaintext)
                        .map_err(|e| PushError::Invalid(e.to_string()))?;
                    let mut body = String::from("<xml>");
                    if req.mode == PushMode::Compat {
                        // Compat mode: WeChat sends the plain fields beside the ciphertext.
                        body.push_str(&fields);
                    } else {
                        element(&mut body, "ToUserName", &original_id(&req.appid));
                    }
                    element(&mut body, "Encrypt", &encrypt);
                    body.push_str("</xml>");
                    (body, Some(encrypt))
                }
            };
        let query = signed_query(&sign_token, &timestamp, &nonce, encrypt.as_deref(), Some(&req.message.openid));
        let path = if req.component { "wechat/component/mp" } else { "wechat/mp" };
        Ok(PreparedPush { url: format!("{base}/{path}/{}?{query}", urlencode(&req.appid)), body })
    }

    /// Pushes `req.copies` copies and opens each passive reply.
    pub async fn push(&self, req: &PushRequest) -> Result<Vec<PushResponse>, PushError> {
        if req.copies == 0 || req.copies > PUSH_COPIES_MAX {
            return Err(PushError::Invalid(format!("copies must be 1..={PUSH_COPIES_MAX}")));
        }
        let policy = RetryPolicy::from_request(req.retry, req.retry_interval_ms, req.timeout_ms)?;
        // Copies are the same message: fix the time and id once, as WeChat's retries keep them.
        let mut fixed = req.clone();
        fixed.message.create_time.get_or_insert_with(now_unix);
        fixed.message.msg_id.get_or_insert_with(|| rand::random::<u64>() >> 1);
        let opener = match req.mode {
            PushMode::Plaintext => None,
            _ => {
                let appid =
                    if req.component { req.component_appid.clone().unwrap_or_default() } else { req.appid.clone() };
                Some((req.encoding_aes_key.clone().unwrap_or_default(), appid))
            }
        };
        let mut prepared = Vec::new();
        for _ in 0..req.copies {
            prepared.push(self.prepare(&fixed)?);
        }
        let mut responses = Vec::with_capacity(prepared.len());
        if req.concurrent {
            let mut set = tokio::task::JoinSet::new();
            for (copy, p) in (0u32..).zip(prepared) {
                let pusher = self.clone();
                set.spawn(async move { (copy, pusher.send(&p, policy).await) });
            }
            while let Some(joined) = set.join_next().await {
                let (copy, r) = joined.map_err(|e| PushError::Client(e.to_string()))?;
                responses.push((copy, r));
            }
            responses.sort_by_key(|(copy, _)| *copy);
        } else {
            for (copy, p) in (0u32..).zip(prepared) {
                responses.push((copy, self.send(&p, policy).await));
            }
        }
        Ok(responses
            .into_iter()
            .map(|(copy, mut r)| {
                r.copy = copy;
                open_reply(&mut r, &req.token, opener.as_ref());
                r
            })
            .collect())
    }

    /// Pushes one third-party-platform authorization event (always encrypted).
    pub async fn push_component(&self, req: &ComponentPushRequest) -> Result<PushResponse, PushError> {
        check_field("component_appid", &req.component_appid)?;
        check_field("token", &req.token)?;
        let base = target(&req.target_base_url)?;
        let policy = RetryPolicy::from_request(req.retry, req.retry_interval_ms, req.timeout_ms)?;
        let now = now_unix();
        let mut fields = String::new();
        element(&mut fields, "AppId", &req.component_appid);
        number(&mut fields, "CreateTime", now);
        match &req.info {
            ComponentInfo::VerifyTicket { ticket } => {
                check_field("ticket", ticket)?;
                element(&mut fields, "InfoType", "component_verify_ticket");
                element(&mut fields, "ComponentVerifyTicket", ticket);
            }
            ComponentInfo::Authorized { authorizer_appid, authorization_code, pre_auth_code } => {
                check_field("authorizer_appid", authorizer_appid)?;
                check_field("authorization_code", authorization_code)?;
                check_field("pre_auth_code", pre_auth_code)?;
                element(&mut fields, "InfoType", "authorized");
                element(&mut fields, "AuthorizerAppid", authorizer_appid);
                element(&mut fields, "AuthorizationCode", authorization_code);
                number(&mut fields, "AuthorizationCodeExpiredTime", now + 3600);
                element(&mut fields, "PreAuthCode", pre_auth_code);
            }
            ComponentInfo::Unauthorized { authorizer_appid } => {
                check_field("authorizer_appid", authorizer_appid)?;
                element(&mut fields, "InfoType", "unauthorized");
                element(&mut fields, "AuthorizerAppid", authorizer_appid);
            }
        }
        let encrypt = crypt_for(&req.encoding_aes_key, &req.component_appid)?
            .encrypt_random(&document(&fields, Tamper::None))
            .map_err(|e| PushError::Invalid(e.to_string()))?;
        let mut body = String::from("<xml>");
        element(&mut body, "AppId", &req.component_appid);
        element(&mut body, "Encrypt", &encrypt);
        body.push_str("</xml>");
        let query = signed_query(&req.token, &now.to_string(), &nonce(), Some(&encrypt), None);
        let prepared = PreparedPush { url: format!("{base}/wechat/component/events?{query}"), body };
        Ok(self.send(&prepared, policy).await)
    }

    async fn send(&self, p: &PreparedPush, policy: RetryPolicy) -> PushResponse {
        let started = Instant::now();
        let mut last_error = None;
        for attempt in 1..=policy.tries {
            if attempt > 1 {
                tokio::time::sleep(policy.interval).await;
            }
            let sent = self
                .http
                .post(&p.url)
                .header("content-type", "text/xml")
                .timeout(policy.timeout)
                .body(p.body.clone())
                .send()
                .await;
            let answer = match sent {
                Ok(res) => {
                    let status = res.status().as_u16();
                    res.bytes().await.map(|b| (status, b))
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok((status, bytes)) => {
                    let keep = bytes.len().min(RESPONSE_BODY_KEPT_BYTES_MAX);
                    return PushResponse {
                        copy: 0,
                        tries: attempt,
                        status: Some(status),
                        body: String::from_utf8_lossy(&bytes[..keep]).into_owned(),
                        elapsed_ms: elapsed_ms(started),
                        reply: None,
                        reply_error: None,
                        error: None,
                    };
                }
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        PushResponse {
            copy: 0,
            tries: policy.tries,
            status: None,
            body: String::new(),
            elapsed_ms: elapsed_ms(started),
            reply: None,
            reply_error: None,
            error: last_error,
        }
    }
}

pub(super) fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Parses an XML reply; opens and verifies a safe-mode envelope.
pub(super) fn open_reply(r: &mut PushResponse, token: &str, opener: Option<&(String, String)>) {
    if r.status != Some(200) || !r.body.trim_start().starts_with('<') {
        return;
    }
    match parse_reply(&r.body, token, opener) {
        Ok(reply) => r.reply = Some(reply),
        Err(e) => r.reply_error = Some(e),
    }
}

pub(super) fn parse_reply(body: &str, token: &str, opener: Option<&(String, String)>) -> Result<PassiveReply, String> {
    let limits = XmlLimits::default();
    let outer = xml::parse(body.as_bytes(), &limits).map_err(|e| e.to_string())?;
    let fields_of = |doc: &xml::XmlDoc| {
        let mut map = BTreeMap::new();
        for (k, v) in &doc.fields {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
        map
    };
    let Some(encrypt) = encrypted_payload(&outer) else {
        return Ok(PassiveReply { encrypted: false, signature_valid: None, fields: fields_of(&outer) });
    };
    let (aes, appid) = opener.ok_or("an encrypted reply to a plaintext callback")?;
    let timestamp = outer.get("TimeStamp").ok_or("reply without TimeStamp")?;
    let nonce = outer.get("Nonce").ok_or("reply without Nonce")?;
    let given = outer.get("MsgSignature").ok_or("reply without MsgSignature")?;
    let signature_valid = crypto::verify_hex(&crypto::msg_signature(token, timestamp, nonce, encrypt), given);
    let inner = crypt_for(aes, appid).map_err(|e| e.to_string())?.decrypt(encrypt).map_err(|e| e.to_string())?;
    let doc = xml::parse(inner.as_bytes(), &limits).map_err(|e| e.to_string())?;
    Ok(PassiveReply { encrypted: true, signature_valid: Some(signature_valid), fields: fields_of(&doc) })
}
