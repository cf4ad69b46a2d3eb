//! The simulated WeChat: everything in memory, every map bounded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::SandboxConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Access,
    Authorizer,
    Component,
    Jsapi,
}

pub struct Issued {
    pub appid: String,
    pub kind: Kind,
    pub expires_at: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub errcode: i64,
    pub count: u32,
    pub delay_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub at_unix_ms: u64,
}

/// Issuance counters per appid, as `GET /sandbox/stats` returns them.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SandboxStats {
    pub token_issuances: BTreeMap<String, u64>,
    pub authorizer_token_issuances: BTreeMap<String, u64>,
    pub component_token_issuances: BTreeMap<String, u64>,
    pub jsapi_ticket_issuances: BTreeMap<String, u64>,
}

pub struct Sim {
    pub config: SandboxConfig,
    /// appid (or component appid) → secret.
    pub apps: HashMap<String, String>,
    pub tokens: HashMap<String, Issued>,
    /// The newest token per (kind, appid): issuing another one starts the old one's grace.
    pub latest: HashMap<(Kind, String), String>,
    pub stats: SandboxStats,
    pub faults: HashMap<String, Fault>,
    pub log: VecDeque<LoggedRequest>,
    /// code → (appid, openid); removed on use.
    pub oauth_codes: HashMap<String, (String, String)>,
    /// ticket → (appid, scene, permanent).
    pub qr_tickets: HashMap<String, (String, String, bool)>,
    /// component appid → newest verify ticket.
    pub verify_tickets: HashMap<String, String>,
    /// authorization code → (component appid, authorizer appid); removed on use.
    pub auth_codes: HashMap<String, (String, String)>,
    /// refresh token → (component appid, authorizer appid).
    pub refresh_tokens: HashMap<String, (String, String)>,
    /// media id → (content type, bytes).
    pub media: HashMap<String, (String, Vec<u8>)>,
    pub menus: HashMap<String, Value>,
    /// appid → tags (id, name, openids).
    pub tags: HashMap<String, Vec<(i64, String, Vec<String>)>>,
    pub next_id: i64,
}

pub fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// WeChat's error answer (`errcode`, `errmsg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WxErr(pub i64, pub &'static str);

pub const INVALID_CREDENTIAL: WxErr = WxErr(40001, "invalid credential, access_token is invalid or not latest");
pub const EXPIRED: WxErr = WxErr(42001, "access_token expired");
pub const INVALID_APPID: WxErr = WxErr(40013, "invalid appid");
pub const INVALID_SECRET: WxErr = WxErr(40125, "invalid appsecret");
pub const INVALID_CODE: WxErr = WxErr(40029, "invalid code");
pub const BAD_JSON: WxErr = WxErr(47001, "data format error");
pub const MISSING_PARAM: WxErr = WxErr(41001, "missing required parameter");
pub const TOO_MANY: WxErr = WxErr(45009, "reach max api daily quota limit (sandbox entries full)");
pub const BAD_TICKET: WxErr = WxErr(61005, "component verify ticket is expired or invalid");
pub const BAD_REFRESH_TOKEN: WxErr = WxErr(61023, "invalid refresh_token");
pub const NO_MEDIA: WxErr = WxErr(40007, "invalid media_id");

fn bump(map: &mut BTreeMap<String, u64>, appid: &str) {
    *map.entry(appid.to_owned()).or_default() += 1;
}

impl Sim {
    pub fn new(config: SandboxConfig) -> Self {
        Self {
            config,
            apps: HashMap::new(),
            tokens: HashMap::new(),
            latest: HashMap::new(),
            stats: SandboxStats::default(),
            faults: HashMap::new(),
            log: VecDeque::new(),
            oauth_codes: HashMap::new(),
            qr_tickets: HashMap::new(),
            verify_tickets: HashMap::new(),
            auth_codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            media: HashMap::new(),
            menus: HashMap::new(),
            tags: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Whether one more entry fits in a map of `len` entries.
    pub fn room(&self, len: usize) -> Result<(), WxErr> {
        if len >= self.config.entries_max {
            Err(TOO_MANY)
        } else {
            Ok(())
        }
    }

    pub fn check_secret(&self, appid: &str, secret: &str) -> Result<(), WxErr> {
        match self.apps.get(appid) {
            None => Err(INVALID_APPID),
            Some(s) if s == secret => Ok(()),
            Some(_) => Err(INVALID_SECRET),
        }
    }

    /// Issues a new token; the previous one of the same kind and appid keeps
    /// working for the grace period only.
    pub fn issue(&mut self, kind: Kind, appid: &str) -> Result<(String, i64), WxErr> {
        let now = Instant::now();
        if self.tokens.len() >= self.config.entries_max {
            self.tokens.retain(|_, t| t.expires_at > now);
        }
        self.room(self.tokens.len())?;
        let token = random_token();
        let expires_in = self.config.token_expires_in_secs.max(0);
        let expires_at = now + Duration::from_secs(u64::try_from(expires_in).unwrap_or(0));
        if let Some(previous) = self.latest.insert((kind, appid.to_owned()), token.clone()) {
            let grace_end = now + Duration::from_secs(self.config.token_grace_secs);
            if let Some(old) = self.tokens.get_mut(&previous) {
                old.expires_at = old.expires_at.min(grace_end);
            }
        }
        self.tokens.insert(token.clone(), Issued { appid: appid.to_owned(), kind, expires_at });
        let counter = match kind {
            Kind::Access => &mut self.stats.token_issuances,
            Kind::Authorizer => &mut self.stats.authorizer_token_issuances,
            Kind::Component => &mut self.stats.component_token_issuances,
            Kind::Jsapi => &mut self.stats.jsapi_ticket_issuances,
        };
        bump(counter, appid);
        Ok((token, expires_in))
    }

    /// The appid a token belongs to, if it is one of `kinds` and still valid.
    pub fn check_token(&self, token: Option<&String>, kinds: &[Kind]) -> Result<String, WxErr> {
        let token = token.ok_or(MISSING_PARAM)?;
        let issued = self.tokens.get(token).filter(|t| kinds.contains(&t.kind)).ok_or(INVALID_CREDENTIAL)?;
        if issued.expires_at <= Instant::now() {
            return Err(EXPIRED);
        }
        Ok(issued.appid.clone())
    }

    pub fn record(&mut self, request: LoggedRequest) {
        while self.log.len() >= self.config.requests_logged_max.max(1) {
            self.log.pop_front();
        }
        self.log.push_back(request);
    }

    /// Takes one injected fault for `path`, if any is left.
    pub fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let fault = self.faults.get_mut(path)?;
        if fault.count == 0 {
            return None;
        }
        fault.count -= 1;
        let taken = fault.clone();
        if fault.count == 0 {
            self.faults.remove(path);
        }
        Some(taken)
    }
}
