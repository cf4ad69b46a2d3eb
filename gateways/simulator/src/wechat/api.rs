//! The simulated WeChat endpoints. Errors are WeChat's JSON shape with HTTP 200.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::state::{
    random_token, Kind, Sim, WxErr, BAD_JSON, BAD_REFRESH_TOKEN, BAD_TICKET, INVALID_APPID, INVALID_CODE,
    INVALID_CREDENTIAL, MISSING_PARAM, NO_MEDIA,
};
use super::{lock, Shared};

type Q = Query<HashMap<String, String>>;

const ACCOUNT_TOKENS: &[Kind] = &[Kind::Access, Kind::Authorizer];

pub fn wx_error(e: &WxErr) -> Response {
    Json(json!({"errcode": e.0, "errmsg": e.1})).into_response()
}

fn reply(result: Result<Value, WxErr>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => wx_error(&e),
    }
}

fn ok() -> Value {
    json!({"errcode": 0, "errmsg": "ok"})
}

fn parse(body: &[u8]) -> Result<Value, WxErr> {
    serde_json::from_slice::<Value>(body).ok().filter(Value::is_object).ok_or(BAD_JSON)
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, WxErr> {
    v.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(MISSING_PARAM)
}

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, WxErr> {
    q.get(name).map(String::as_str).filter(|s| !s.is_empty()).ok_or(MISSING_PARAM)
}

/// Runs `f` with the account the `access_token` belongs to.
fn with_account(
    s: &Shared,
    q: &HashMap<String, String>,
    f: impl FnOnce(&mut Sim, String) -> Result<Value, WxErr>,
) -> Response {
    let mut sim = lock(s);
    reply(sim.check_token(q.get("access_token"), ACCOUNT_TOKENS).and_then(|appid| f(&mut sim, appid)))
}

pub async fn unknown_api() -> Response {
    wx_error(&WxErr(48001, "api unauthorized (not simulated)"))
}

pub async fn token(State(s): State<Shared>, Query(q): Q) -> Response {
    let mut sim = lock(&s);
    reply((|| {
        if param(&q, "grant_type")? != "client_credential" {
            return Err(WxErr(40002, "invalid grant_type"));
        }
        let appid = param(&q, "appid")?;
        sim.check_secret(appid, param(&q, "secret")?)?;
        let (token, expires_in) = sim.issue(Kind::Access, appid)?;
        Ok(json!({"access_token": token, "expires_in": expires_in}))
    })())
}

pub async fn menu_create(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |sim, appid| {
        let menu = parse(&body)?;
        if !menu.get("button").is_some_and(Value::is_array) {
            return Err(WxErr(40016, "invalid button size"));
        }
        sim.menus.insert(appid, menu);
        Ok(ok())
    })
}

pub async fn menu_get(State(s): State<Shared>, Query(q): Q) -> Response {
    with_account(&s, &q, |sim, appid| match sim.menus.get(&appid) {
        Some(menu) => Ok(json!({"menu": menu})),
        None => Err(WxErr(46003, "menu no exist")),
    })
}

pub async fn qrcode_create(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |sim, appid| {
        let req = parse(&body)?;
        let action = field(&req, "action_name")?;
        let permanent = match action {
            "QR_LIMIT_STR_SCENE" | "QR_LIMIT_SCENE" => true,
            "QR_STR_SCENE" | "QR_SCENE" => false,
            _ => return Err(WxErr(40097, "invalid action_name")),
        };
        let scene = &req["action_info"]["scene"];
        let scene = scene
            .get("scene_str")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| scene.get("scene_id").and_then(Value::as_i64).map(|n| n.to_string()))
            .ok_or(MISSING_PARAM)?;
        sim.room(sim.qr_tickets.len())?;
        let ticket = random_token();
        sim.qr_tickets.insert(ticket.clone(), (appid, scene, permanent));
        let mut v = json!({"ticket": ticket, "url": format!("http://weixin.qq.com/q/{}", &ticket[..22])});
        if !permanent {
            v["expire_seconds"] = json!(req.get("expire_seconds").and_then(Value::as_i64).unwrap_or(60));
        }
        Ok(v)
    })
}

pub async fn custom_send(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |_, _| {
        let req = parse(&body)?;
        field(&req, "touser")?;
        field(&req, "msgtype")?;
        Ok(ok())
    })
}

pub async fn template_send(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |sim, _| {
        let req = parse(&body)?;
        field(&req, "touser")?;
        field(&req, "template_id")?;
        Ok(json!({"errcode": 0, "errmsg": "ok", "msgid": sim.next_id()}))
    })
}

pub async fn mass_sendall(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |sim, _| {
        let req = parse(&body)?;
        req.get("filter").ok_or(MISSING_PARAM)?;
        Ok(json!({"errcode": 0, "errmsg": "send job submission success", "msg_id": sim.next_id(), "msg_data_id": 0}))
    })
}

pub async fn mass_send(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |sim, _| {
        let req = parse(&body)?;
        let n = req.get("touser").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        if n < 2 {
            return Err(WxErr(40130, "invalid openid list size, at least two openid"));
        }
        Ok(json!({"errcode": 0, "errmsg": "send job submission success", "msg_id": sim.next_id()}))
    })
}

/// The first file part of a multipart body: (content type, bytes).
fn multipart_file(headers: &HeaderMap, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes())? + delimiter.len();
    let rest = &body[start..];
    let header_end = find(rest, b"\r\n\r\n")?;
    let part_headers = String::from_utf8_lossy(&rest[..header_end]).to_string();
    let content = &rest[header_end + 4..];
    let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
    let content_type = part_headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type:").or_else(|| l.strip_prefix("content-type:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "application/octet-stream".into());
    Some((content_type, content[..end].to_vec()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub async fn media_upload(State(s): State<Shared>, Query(q): Q, headers: HeaderMap, body: Bytes) -> Response {
    with_account(&s, &q, |sim, _| {
        let media_type = param(&q, "type")?.to_owned();
        let (content_type, bytes) = multipart_file(&headers, &body).ok_or(WxErr(41005, "media data missing"))?;
        sim.room(sim.media.len())?;
        let media_id = random_token();
        sim.media.insert(media_id.clone(), (content_type, bytes));
        Ok(json!({"type": media_type, "media_id": media_id, "created_at": super::state::unix_ms() / 1000}))
    })
}

pub async fn media_get(State(s): State<Shared>, Query(q): Q) -> Response {
    let sim = lock(&s);
    let found = sim
        .check_token(q.get("access_token"), ACCOUNT_TOKENS)
        .and_then(|_| sim.media.get(param(&q, "media_id")?).cloned().ok_or(NO_MEDIA));
    match found {
        Ok((content_type, bytes)) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(e) => wx_error(&e),
    }
}

fn user(openid: &str) -> Value {
    json!({"subscribe": 1, "openid": openid, "nickname": format!("user-{}", &openid.chars().take(6).collect::<String>()),
           "language": "zh_CN", "subscribe_time": 1_700_000_000, "remark": "", "tagid_list": [],
           "subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": 0, "qr_scene_str": ""})
}

pub async fn user_info(State(s): State<Shared>, Query(q): Q) -> Response {
    with_account(&s, &q, |_, _| Ok(user(param(&q, "openid")?)))
}

pub async fn user_info_batch(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |_, _| {
        let req = parse(&body)?;
        let list = req.get("user_list").and_then(Value::as_array).ok_or(MISSING_PARAM)?;
        if list.len() > 100 {
            return Err(WxErr(45035, "too many openids"));
        }
        let users: Vec<Value> = list.iter().filter_map(|u| u.get("openid").and_then(Value::as_str)).map(user).collect();
        Ok(json!({"user_info_list": users}))
    })
}

pub async fn tags_create(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |sim, appid| {
        let req = parse(&body)?;
        let name = req["tag"]["name"].as_str().filter(|n| !n.is_empty()).ok_or(MISSING_PARAM)?.to_owned();
        let id = sim.next_id();
        let tags = sim.tags.entry(appid).or_default();
        if tags.len() >= 100 {
            return Err(WxErr(45056, "too many tags"));
        }
        if tags.iter().any(|(_, n, _)| *n == name) {
            return Err(WxErr(45157, "tag name already exists"));
        }
        tags.push((id, name.clone(), Vec::new()));
        Ok(json!({"tag": {"id": id, "name": name}}))
    })
}

pub async fn tags_get(State(s): State<Shared>, Query(q): Q) -> Response {
    with_account(&s, &q, |sim, appid| {
        let tags: Vec<Value> = sim
            .tags
            .get(&appid)
            .map(|t| {
                t.iter().map(|(id, name, members)| json!({"id": id, "name": name, "count": members.len()})).collect()
            })
            .unwrap_or_default();
        Ok(json!({"tags": tags}))
    })
}

pub async fn tags_batch_tagging(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    with_account(&s, &q, |sim, appid| {
        let req = parse(&body)?;
        let tag_id = req.get("tagid").and_then(Value::as_i64).ok_or(MISSING_PARAM)?;
        let openids: Vec<String> = req
            .get("openid_list")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if openids.is_empty() || openids.len() > 50 {
            return Err(WxErr(40032, "invalid openid list size"));
        }
        let tag = sim
            .tags
            .get_mut(&appid)
            .and_then(|t| t.iter_mut().find(|(id, _, _)| *id == tag_id))
            .ok_or(WxErr(45159, "invalid tag id"))?;
        for o in openids {
            if !tag.2.contains(&o) {
                tag.2.push(o);
            }
        }
        Ok(ok())
    })
}

pub async fn getticket(State(s): State<Shared>, Query(q): Q) -> Response {
    with_account(&s, &q, |sim, appid| {
        if param(&q, "type")? != "jsapi" {
            return Err(WxErr(40097, "invalid ticket type"));
        }
        let (ticket, expires_in) = sim.issue(Kind::Jsapi, &appid)?;
        Ok(json!({"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": expires_in}))
    })
}

fn oauth_answer(appid: &str, openid: &str) -> Value {
    json!({"access_token": random_token(), "expires_in": 7200, "refresh_token": random_token(),
           "openid": openid, "scope": "snsapi_base", "is_snapshotuser": 0, "unionid": format!("union-{appid}-{openid}")})
}

/// Takes a code minted for `appid` (a code works once).
fn take_code(sim: &mut Sim, appid: &str, code: &str) -> Result<String, WxErr> {
    match sim.oauth_codes.remove(code) {
        Some((owner, openid)) if owner == appid => Ok(openid),
        _ => Err(INVALID_CODE),
    }
}

pub async fn oauth_access_token(State(s): State<Shared>, Query(q): Q) -> Response {
    let mut sim = lock(&s);
    reply((|| {
        let appid = param(&q, "appid")?;
        sim.check_secret(appid, param(&q, "secret")?)?;
        let openid = take_code(&mut sim, appid, param(&q, "code")?)?;
        Ok(oauth_answer(appid, &openid))
    })())
}

pub async fn oauth_component_access_token(State(s): State<Shared>, Query(q): Q) -> Response {
    let mut sim = lock(&s);
    reply((|| {
        let component = sim.check_token(q.get("component_access_token"), &[Kind::Component])?;
        if param(&q, "component_appid")? != component {
            return Err(INVALID_APPID);
        }
        let appid = param(&q, "appid")?;
        let openid = take_code(&mut sim, appid, param(&q, "code")?)?;
        Ok(oauth_answer(appid, &openid))
    })())
}

pub async fn component_token(State(s): State<Shared>, body: Bytes) -> Response {
    let mut sim = lock(&s);
    reply((|| {
        let req = parse(&body)?;
        let component = field(&req, "component_appid")?;
        sim.check_secret(component, field(&req, "component_appsecret")?)?;
        if sim.verify_tickets.get(component).map(String::as_str) != Some(field(&req, "component_verify_ticket")?) {
            return Err(BAD_TICKET);
        }
        let (token, expires_in) = sim.issue(Kind::Component, component)?;
        Ok(json!({"component_access_token": token, "expires_in": expires_in}))
    })())
}

fn component_of(sim: &Sim, q: &HashMap<String, String>, req: &Value) -> Result<String, WxErr> {
    let component = sim.check_token(q.get("component_access_token"), &[Kind::Component])?;
    if field(req, "component_appid")? != component {
        return Err(INVALID_CREDENTIAL);
    }
    Ok(component)
}

pub async fn create_preauthcode(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    let sim = lock(&s);
    reply((|| {
        component_of(&sim, &q, &parse(&body)?)?;
        Ok(json!({"pre_auth_code": format!("preauthcode@@@{}", random_token()), "expires_in": 600}))
    })())
}

fn authorizer_answer(sim: &mut Sim, component: &str, authorizer: &str) -> Result<(String, i64, String), WxErr> {
    let (token, expires_in) = sim.issue(Kind::Authorizer, authorizer)?;
    sim.room(sim.refresh_tokens.len())?;
    let refresh = format!("refreshtoken@@@{}", random_token());
    sim.refresh_tokens.retain(|_, (_, a)| a != authorizer);
    sim.refresh_tokens.insert(refresh.clone(), (component.to_owned(), authorizer.to_owned()));
    Ok((token, expires_in, refresh))
}

pub async fn query_auth(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    let mut sim = lock(&s);
    reply((|| {
        let req = parse(&body)?;
        let component = component_of(&sim, &q, &req)?;
        let code = field(&req, "authorization_code")?;
        let authorizer = match sim.auth_codes.remove(code) {
            Some((c, a)) if c == component => a,
            _ => return Err(WxErr(61010, "code is expired or invalid")),
        };
        let (token, expires_in, refresh) = authorizer_answer(&mut sim, &component, &authorizer)?;
        Ok(json!({"authorization_info": {"authorizer_appid": authorizer, "authorizer_access_token": token,
                  "expires_in": expires_in, "authorizer_refresh_token": refresh, "func_info": []}}))
    })())
}

pub async fn authorizer_token(State(s): State<Shared>, Query(q): Q, body: Bytes) -> Response {
    let mut sim = lock(&s);
    reply((|| {
        let req = parse(&body)?;
        let component = component_of(&sim, &q, &req)?;
        let authorizer = field(&req, "authorizer_appid")?;
        match sim.refresh_tokens.get(field(&req, "authorizer_refresh_token")?) {
            Some((c, a)) if *c == component && a == authorizer => {}
            _ => return Err(BAD_REFRESH_TOKEN),
        }
        let authorizer = authorizer.to_owned();
        let (token, expires_in, refresh) = authorizer_answer(&mut sim, &component, &authorizer)?;
        Ok(json!({"authorizer_access_token": token, "expires_in": expires_in, "authorizer_refresh_token": refresh}))
    })())
}
