//! Typed inbound callback messages, read from a parsed [`XmlDoc`].
//!
//! Unknown message types and events are kept (`Other`) rather than refused:
//! WeChat adds types over time and an error would make it retry. Fields the
//! system relies on are required and bounded; `MsgType` and `Event` compare
//! case-insensitively (WeChat sends `subscribe` but `SCAN`, `LOCATION`, ...).

use serde::Serialize;

use super::xml::{XmlDoc, XmlItem};

/// Longest openid or original id (`gh_...`) accepted.
pub const OPENID_CHARS_MAX: usize = 64;
/// Longest `MsgType`, `Event` or `InfoType` accepted.
pub const TYPE_CHARS_MAX: usize = 64;
/// Longest `EventKey`, `Ticket`, media id, appid or picture MD5 accepted.
pub const KEY_CHARS_MAX: usize = 512;
/// Longest URL accepted (`PicUrl`, `Url`, VIEW event targets).
pub const URL_CHARS_MAX: usize = 2048;
/// Longest free text (`Content`, `Title`, `Description`, `Label`, `Poiname`,
/// `Recognition`, `ScanResult`) accepted; the XML reader's per-field limit
/// applies too.
pub const TEXT_CHARS_MAX: usize = 8 * 1024;

/// Prefix of a subscribe `EventKey` that came from a scene QR code.
const SCENE_PREFIX: &str = "qrscene_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("required field {0} is missing")]
    Missing(&'static str),
    #[error("field {field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("field {0} is not a valid integer")]
    NotInteger(&'static str),
    #[error("field {0} is not 0 or 1")]
    NotFlag(&'static str),
    #[error("field {0} is empty")]
    Empty(&'static str),
    #[error("root element must be xml")]
    Root,
}

/// The fields every callback message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The account's original id (`gh_...`).
    pub to_user_name: String,
    /// The member's openid.
    pub from_user_name: String,
    /// Seconds since the epoch, as WeChat sent it.
    pub create_time: i64,
    /// `MsgType` as sent (compare case-insensitively).
    pub msg_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub header: Header,
    pub body: Inbound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Text {
        content: String,
        msg_id: u64,
    },
    Image {
        pic_url: String,
        media_id: String,
        msg_id: u64,
    },
    Voice {
        media_id: String,
        format: String,
        recognition: Option<String>,
        msg_id: u64,
    },
    /// `video` and `shortvideo` (`short` tells which).
    Video {
        media_id: String,
        thumb_media_id: String,
        short: bool,
        msg_id: u64,
    },
    /// Coordinates and scale as sent (decimal strings; never floats here).
    Location {
        location_x: String,
        location_y: String,
        scale: String,
        label: String,
        msg_id: u64,
    },
    Link {
        title: String,
        description: String,
        url: String,
        msg_id: u64,
    },
    Event(Event),
    /// A message type this code does not know; kept, not an error.
    Other {
        msg_type: String,
        msg_id: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `event_key` is `qrscene_<scene>` for a scene QR code, absent for a plain follow.
    Subscribe {
        event_key: Option<String>,
        ticket: Option<String>,
    },
    Unsubscribe,
    /// A follower scanned a scene QR code; `event_key` is the scene, without prefix.
    Scan {
        event_key: String,
        ticket: Option<String>,
    },
    /// Reported location, decimal strings as sent.
    Location {
        latitude: String,
        longitude: String,
        precision: String,
    },
    Click {
        key: String,
    },
    View {
        url: String,
    },
    /// A `scancode_push` or `scancode_waitmsg` menu event (`wait_msg` tells which).
    ScanCode {
        wait_msg: bool,
        event_key: String,
        scan_type: String,
        scan_result: String,
    },
    /// A picture menu event (`pic_sysphoto`, `pic_photo_or_album`, `pic_weixin`):
    /// the pictures the member is sending, by MD5, in the order sent.
    PicsSent {
        source: PicSource,
        event_key: String,
        /// `Count` as sent.
        count: u32,
        pic_md5_sums: Vec<String>,
    },
    /// A `location_select` menu event; coordinates and scale as sent.
    LocationSelected {
        event_key: String,
        location_x: String,
        location_y: String,
        scale: String,
        label: String,
        poiname: Option<String>,
    },
    TemplateSendJobFinish {
        msg_id: u64,
        status: String,
    },
    MassSendJobFinish {
        msg_id: u64,
        status: String,
        total_count: u64,
        filter_count: u64,
        sent_count: u64,
        error_count: u64,
        /// `CopyrightCheckResult`, sent for news messages that went through the
        /// original-content check.
        copyright_check: Option<CopyrightCheck>,
        /// `ArticleUrlResult/ResultList`: the published URL of each article.
        article_urls: Vec<ArticleUrl>,
    },
    Other {
        event: String,
    },
}

/// Where the pictures of a picture menu event come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PicSource {
    /// `pic_sysphoto`: the phone's camera.
    SysPhoto,
    /// `pic_photo_or_album`: the camera or the phone's album.
    PhotoOrAlbum,
    /// `pic_weixin`: WeChat's album.
    Weixin,
}

impl PicSource {
    pub fn event_name(self) -> &'static str {
        match self {
            PicSource::SysPhoto => "pic_sysphoto",
            PicSource::PhotoOrAlbum => "pic_photo_or_album",
            PicSource::Weixin => "pic_weixin",
        }
    }
}

/// `CopyrightCheckResult` of a `MASSSENDJOBFINISH`. Codes are kept as sent:
/// WeChat documents their meaning but not a closed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyrightCheck {
    /// `Count` as sent.
    pub count: u32,
    /// 1: not judged a reprint, sent; 2: judged a reprint, sent; 3: judged a reprint, not sent.
    pub check_state: u32,
    pub results: Vec<CopyrightCheckItem>,
}

/// One article's copyright check (`CopyrightCheckResult/ResultList/item`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyrightCheckItem {
    /// The article's position in the news message, from 1.
    pub article_idx: u32,
    pub user_declare_state: u32,
    pub audit_state: u32,
    /// The original the article was found similar to.
    pub original_article_url: Option<String>,
    pub original_article_type: u32,
    pub can_reprint: bool,
    pub need_replace_content: bool,
    pub need_show_reprint_source: bool,
}

/// One article's published URL (`ArticleUrlResult/ResultList/item`); empty
/// (`None`) for an article that was not published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArticleUrl {
    pub article_idx: u32,
    pub article_url: Option<String>,
}

impl Event {
    /// The canonical (lowercase) event name.
    pub fn name(&self) -> &str {
        match self {
            Event::Subscribe { .. } => "subscribe",
            Event::Unsubscribe => "unsubscribe",
            Event::Scan { .. } => "scan",
            Event::Location { .. } => "location",
            Event::Click { .. } => "click",
            Event::View { .. } => "view",
            Event::ScanCode { wait_msg: false, .. } => "scancode_push",
            Event::ScanCode { wait_msg: true, .. } => "scancode_waitmsg",
            Event::PicsSent { source, .. } => source.event_name(),
            Event::LocationSelected { .. } => "location_select",
            Event::TemplateSendJobFinish { .. } => "templatesendjobfinish",
            Event::MassSendJobFinish { .. } => "masssendjobfinish",
            Event::Other { event } => event,
        }
    }

    /// The `EventKey` as sent, when the event has one.
    pub fn event_key(&self) -> Option<&str> {
        match self {
            Event::Subscribe { event_key, .. } => event_key.as_deref(),
            Event::Scan { event_key, .. } => Some(event_key),
            Event::Click { key } => Some(key),
            Event::View { url } => Some(url),
            Event::ScanCode { event_key, .. }
            | Event::PicsSent { event_key, .. }
            | Event::LocationSelected { event_key, .. } => Some(event_key),
            _ => None,
        }
    }
}

/// The scene of a subscribe `EventKey` (`qrscene_<scene>` → `<scene>`).
pub fn scene_of_subscribe(event_key: &str) -> Option<&str> {
    event_key.strip_prefix(SCENE_PREFIX).filter(|scene| !scene.is_empty())
}

impl InboundMessage {
    /// Key under which WeChat's retries of this callback collapse: the MsgId
    /// for messages; sender, time, event and key for events. It is unique per
    /// account only: store it scoped by the account (tenant, appid).
    pub fn dedup_key(&self) -> String {
        let header = &self.header;
        match &self.body {
            Inbound::Text { msg_id, .. }
            | Inbound::Image { msg_id, .. }
            | Inbound::Voice { msg_id, .. }
            | Inbound::Video { msg_id, .. }
            | Inbound::Location { msg_id, .. }
            | Inbound::Link { msg_id, .. }
            | Inbound::Other { msg_id: Some(msg_id), .. } => format!("msg:{msg_id}"),
            Inbound::Other { msg_type, msg_id: None } => {
                format!("other:{}:{}:{}", header.from_user_name, header.create_time, msg_type.to_ascii_lowercase())
            }
            Inbound::Event(event) => format!(
                "event:{}:{}:{}:{}",
                header.from_user_name,
                header.create_time,
                event.name().to_ascii_lowercase(),
                event.event_key().unwrap_or("")
            ),
        }
    }
}

/// Reads a plaintext callback message.
pub fn parse_inbound(doc: &XmlDoc) -> Result<InboundMessage, MessageError> {
    if doc.root != "xml" {
        return Err(MessageError::Root);
    }
    let header = Header {
        to_user_name: required(doc, "ToUserName", OPENID_CHARS_MAX)?,
        from_user_name: required(doc, "FromUserName", OPENID_CHARS_MAX)?,
        create_time: integer(doc, "CreateTime")?,
        msg_type: required(doc, "MsgType", TYPE_CHARS_MAX)?,
    };
    let body = parse_body(doc, &header.msg_type)?;
    Ok(InboundMessage { header, body })
}

fn parse_body(doc: &XmlDoc, msg_type: &str) -> Result<Inbound, MessageError> {
    let is = |name: &str| msg_type.eq_ignore_ascii_case(name);
    let body = if is("event") {
        Inbound::Event(parse_event(doc)?)
    } else if is("text") {
        Inbound::Text { content: text(doc, "Content", TEXT_CHARS_MAX)?, msg_id: msg_id(doc)? }
    } else if is("image") {
        Inbound::Image {
            pic_url: required(doc, "PicUrl", URL_CHARS_MAX)?,
            media_id: required(doc, "MediaId", KEY_CHARS_MAX)?,
            msg_id: msg_id(doc)?,
        }
    } else if is("voice") {
        Inbound::Voice {
            media_id: required(doc, "MediaId", KEY_CHARS_MAX)?,
            format: text(doc, "Format", TYPE_CHARS_MAX)?,
            recognition: optional(doc, "Recognition", TEXT_CHARS_MAX)?,
            msg_id: msg_id(doc)?,
        }
    } else if is("video") || is("shortvideo") {
        Inbound::Video {
            media_id: required(doc, "MediaId", KEY_CHARS_MAX)?,
            thumb_media_id: text(doc, "ThumbMediaId", KEY_CHARS_MAX)?,
            short: is("shortvideo"),
            msg_id: msg_id(doc)?,
        }
    } else if is("location") {
        Inbound::Location {
            location_x: required(doc, "Location_X", TYPE_CHARS_MAX)?,
            location_y: required(doc, "Location_Y", TYPE_CHARS_MAX)?,
            scale: text(doc, "Scale", TYPE_CHARS_MAX)?,
            label: text(doc, "Label", TEXT_CHARS_MAX)?,
            msg_id: msg_id(doc)?,
        }
    } else if is("link") {
        Inbound::Link {
            title: text(doc, "Title", TEXT_CHARS_MAX)?,
            description: text(doc, "Description", TEXT_CHARS_MAX)?,
            url: required(doc, "Url", URL_CHARS_MAX)?,
            msg_id: msg_id(doc)?,
        }
    } else {
        let msg_id = match doc.get("MsgId") {
            Some(_) => Some(msg_id(doc)?),
            None => None,
        };
        Inbound::Other { msg_type: msg_type.to_string(), msg_id }
    };
    Ok(body)
}

fn parse_event(doc: &XmlDoc) -> Result<Event, MessageError> {
    let event = required(doc, "Event", TYPE_CHARS_MAX)?;
    let is = |name: &str| event.eq_ignore_ascii_case(name);
    let parsed = if is("subscribe") {
        Event::Subscribe {
            event_key: optional(doc, "EventKey", KEY_CHARS_MAX)?,
            ticket: optional(doc, "Ticket", KEY_CHARS_MAX)?,
        }
    } else if is("unsubscribe") {
        Event::Unsubscribe
    } else if is("scan") {
        Event::Scan {
            event_key: required(doc, "EventKey", KEY_CHARS_MAX)?,
            ticket: optional(doc, "Ticket", KEY_CHARS_MAX)?,
        }
    } else if is("location") {
        Event::Location {
            latitude: required(doc, "Latitude", TYPE_CHARS_MAX)?,
            longitude: required(doc, "Longitude", TYPE_CHARS_MAX)?,
            precision: text(doc, "Precision", TYPE_CHARS_MAX)?,
        }
    } else if is("click") {
        Event::Click { key: required(doc, "EventKey", KEY_CHARS_MAX)? }
    } else if is("view") {
        Event::View { url: required(doc, "EventKey", URL_CHARS_MAX)? }
    } else if is("templatesendjobfinish") {
        Event::TemplateSendJobFinish { msg_id: job_msg_id(doc)?, status: required(doc, "Status", KEY_CHARS_MAX)? }
    } else if is("masssendjobfinish") {
        mass_send_job_finish(doc)?
    } else if let Some(menu) = menu_event(doc, &event)? {
        menu
    } else {
        Event::Other { event }
    };
    Ok(parsed)
}

/// The menu events that carry more than a key: scan code, pictures, location.
fn menu_event(doc: &XmlDoc, event: &str) -> Result<Option<Event>, MessageError> {
    let is = |name: &str| event.eq_ignore_ascii_case(name);
    let source = [PicSource::SysPhoto, PicSource::PhotoOrAlbum, PicSource::Weixin]
        .into_iter()
        .find(|source| is(source.event_name()));
    let parsed = if is("scancode_push") || is("scancode_waitmsg") {
        Event::ScanCode {
            wait_msg: is("scancode_waitmsg"),
            event_key: required(doc, "EventKey", KEY_CHARS_MAX)?,
            scan_type: required(doc, "ScanCodeInfo/ScanType", TYPE_CHARS_MAX)?,
            scan_result: text(doc, "ScanCodeInfo/ScanResult", TEXT_CHARS_MAX)?,
        }
    } else if let Some(source) = source {
        let pic_md5_sums = list_items(doc, PIC_ITEM)
            .map(|item| required(&item, "SendPicsInfo/PicList/item/PicMd5Sum", KEY_CHARS_MAX))
            .collect::<Result<_, _>>()?;
        Event::PicsSent {
            source,
            event_key: required(doc, "EventKey", KEY_CHARS_MAX)?,
            count: integer(doc, "SendPicsInfo/Count")?,
            pic_md5_sums,
        }
    } else if is("location_select") {
        Event::LocationSelected {
            event_key: required(doc, "EventKey", KEY_CHARS_MAX)?,
            location_x: required(doc, "SendLocationInfo/Location_X", TYPE_CHARS_MAX)?,
            location_y: required(doc, "SendLocationInfo/Location_Y", TYPE_CHARS_MAX)?,
            scale: text(doc, "SendLocationInfo/Scale", TYPE_CHARS_MAX)?,
            label: text(doc, "SendLocationInfo/Label", TEXT_CHARS_MAX)?,
            poiname: optional(doc, "SendLocationInfo/Poiname", TEXT_CHARS_MAX)?,
        }
    } else {
        return Ok(None);
    };
    Ok(Some(parsed))
}

const PIC_ITEM: &str = "SendPicsInfo/PicList/item";
const COPYRIGHT_CHECK: &str = "CopyrightCheckResult";
const COPYRIGHT_ITEM: &str = "CopyrightCheckResult/ResultList/item";
const ARTICLE_URL_ITEM: &str = "ArticleUrlResult/ResultList/item";

fn mass_send_job_finish(doc: &XmlDoc) -> Result<Event, MessageError> {
    let article_urls = list_items(doc, ARTICLE_URL_ITEM)
        .map(|item| {
            Ok(ArticleUrl {
                article_idx: integer(&item, "ArticleUrlResult/ResultList/item/ArticleIdx")?,
                article_url: optional(&item, "ArticleUrlResult/ResultList/item/ArticleUrl", URL_CHARS_MAX)?,
            })
        })
        .collect::<Result<_, MessageError>>()?;
    Ok(Event::MassSendJobFinish {
        msg_id: job_msg_id(doc)?,
        status: required(doc, "Status", KEY_CHARS_MAX)?,
        total_count: integer(doc, "TotalCount")?,
        filter_count: integer(doc, "FilterCount")?,
        sent_count: integer(doc, "SentCount")?,
        error_count: integer(doc, "ErrorCount")?,
        copyright_check: copyright_check(doc)?,
        article_urls,
    })
}

/// `CopyrightCheckResult`, when it has any field (an empty element is no result).
fn copyright_check(doc: &XmlDoc) -> Result<Option<CopyrightCheck>, MessageError> {
    let present =
        doc.fields.iter().any(|(path, _)| path.strip_prefix(COPYRIGHT_CHECK).is_some_and(|rest| rest.starts_with('/')));
    if !present {
        return Ok(None);
    }
    let results = list_items(doc, COPYRIGHT_ITEM).map(|item| copyright_check_item(&item)).collect::<Result<_, _>>()?;
    Ok(Some(CopyrightCheck {
        count: integer(doc, "CopyrightCheckResult/Count")?,
        check_state: integer(doc, "CopyrightCheckResult/CheckState")?,
        results,
    }))
}

fn copyright_check_item(item: &ListItem<'_>) -> Result<CopyrightCheckItem, MessageError> {
    Ok(CopyrightCheckItem {
        article_idx: integer(item, "CopyrightCheckResult/ResultList/item/ArticleIdx")?,
        user_declare_state: integer(item, "CopyrightCheckResult/ResultList/item/UserDeclareState")?,
        audit_state: integer(item, "CopyrightCheckResult/ResultList/item/AuditState")?,
        original_article_url: optional(item, "CopyrightCheckResult/ResultList/item/OriginalArticleUrl", URL_CHARS_MAX)?,
        original_article_type: integer(item, "CopyrightCheckResult/ResultList/item/OriginalArticleType")?,
        can_reprint: flag(item, "CopyrightCheckResult/ResultList/item/CanReprint")?,
        need_replace_content: flag(item, "CopyrightCheckResult/ResultList/item/NeedReplaceContent")?,
        need_show_reprint_source: flag(item, "CopyrightCheckResult/ResultList/item/NeedShowReprintSource")?,
    })
}

/// A third-party-platform authorization event (root `xml`, `InfoType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentEvent {
    /// Sent every 10 minutes; the latest ticket is needed for the component token.
    VerifyTicket {
        component_appid: String,
        ticket: String,
        create_time: i64,
    },
    Authorized(AuthorizationGrant),
    UpdateAuthorized(AuthorizationGrant),
    Unauthorized {
        authorizer_appid: String,
    },
    Other {
        info_type: String,
    },
}

/// What `authorized` and `updateauthorized` carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationGrant {
    pub authorizer_appid: String,
    pub authorization_code: String,
    /// Seconds since the epoch.
    pub authorization_code_expired_time: i64,
    pub pre_auth_code: Option<String>,
}

/// Reads a decrypted component authorization event.
pub fn parse_component_event(doc: &XmlDoc) -> Result<ComponentEvent, MessageError> {
    if doc.root != "xml" {
        return Err(MessageError::Root);
    }
    let info_type = required(doc, "InfoType", TYPE_CHARS_MAX)?;
    let is = |name: &str| info_type.eq_ignore_ascii_case(name);
    let event = if is("component_verify_ticket") {
        ComponentEvent::VerifyTicket {
            component_appid: required(doc, "AppId", KEY_CHARS_MAX)?,
            ticket: required(doc, "ComponentVerifyTicket", KEY_CHARS_MAX)?,
            create_time: integer(doc, "CreateTime")?,
        }
    } else if is("authorized") {
        ComponentEvent::Authorized(grant(doc)?)
    } else if is("updateauthorized") {
        ComponentEvent::UpdateAuthorized(grant(doc)?)
    } else if is("unauthorized") {
        ComponentEvent::Unauthorized { authorizer_appid: required(doc, "AuthorizerAppid", KEY_CHARS_MAX)? }
    } else {
        ComponentEvent::Other { info_type }
    };
    Ok(event)
}

fn grant(doc: &XmlDoc) -> Result<AuthorizationGrant, MessageError> {
    Ok(AuthorizationGrant {
        authorizer_appid: required(doc, "AuthorizerAppid", KEY_CHARS_MAX)?,
        authorization_code: required(doc, "AuthorizationCode", KEY_CHARS_MAX)?,
        authorization_code_expired_time: integer(doc, "AuthorizationCodeExpiredTime")?,
        pre_auth_code: optional(doc, "PreAuthCode", KEY_CHARS_MAX)?,
    })
}

/// The `Encrypt` field of a safe-mode envelope, when present and non-empty.
pub fn encrypted_payload(doc: &XmlDoc) -> Option<&str> {
    doc.get("Encrypt").filter(|value| !value.is_empty())
}

/// Where the field readers below read from: the whole document, or one list item.
trait Fields {
    /// The first field with this path from the root.
    fn field(&self, path: &str) -> Option<&str>;
}

impl Fields for XmlDoc {
    fn field(&self, path: &str) -> Option<&str> {
        self.get(path)
    }
}

/// One item of a list, read with the same paths from the root as the document
/// (`SendPicsInfo/PicList/item/PicMd5Sum`), so errors name the full path.
struct ListItem<'a> {
    path: &'static str,
    item: XmlItem<'a>,
}

impl Fields for ListItem<'_> {
    fn field(&self, path: &str) -> Option<&str> {
        let name = path.strip_prefix(self.path)?.strip_prefix('/')?;
        self.item.get(name)
    }
}

/// The items of the list at `path`, in document order.
fn list_items<'a>(doc: &'a XmlDoc, path: &'static str) -> impl Iterator<Item = ListItem<'a>> {
    doc.items(path).into_iter().map(move |item| ListItem { path, item })
}

/// A field that may be absent or empty (both read as `None`).
fn optional(doc: &impl Fields, field: &'static str, max: usize) -> Result<Option<String>, MessageError> {
    match doc.field(field) {
        None | Some("") => Ok(None),
        Some(value) => bounded(field, value, max).map(Some),
    }
}

/// A field that may be absent or empty (both read as "").
fn text(doc: &impl Fields, field: &'static str, max: usize) -> Result<String, MessageError> {
    Ok(optional(doc, field, max)?.unwrap_or_default())
}

/// A field that must be present and non-empty.
fn required(doc: &impl Fields, field: &'static str, max: usize) -> Result<String, MessageError> {
    let value = doc.field(field).ok_or(MessageError::Missing(field))?;
    if value.trim().is_empty() {
        return Err(MessageError::Empty(field));
    }
    bounded(field, value, max)
}

fn bounded(field: &'static str, value: &str, max: usize) -> Result<String, MessageError> {
    if value.chars().nth(max).is_some() {
        return Err(MessageError::TooLong { field, max });
    }
    Ok(value.to_string())
}

fn integer<T: std::str::FromStr>(doc: &impl Fields, field: &'static str) -> Result<T, MessageError> {
    let value = doc.field(field).ok_or(MessageError::Missing(field))?;
    value.trim().parse().map_err(|_| MessageError::NotInteger(field))
}

/// A `0`/`1` field.
fn flag(doc: &impl Fields, field: &'static str) -> Result<bool, MessageError> {
    match doc.field(field).ok_or(MessageError::Missing(field))?.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(MessageError::NotFlag(field)),
    }
}

fn msg_id(doc: &XmlDoc) -> Result<u64, MessageError> {
    integer(doc, "MsgId")
}

/// Job-finish events spell the id `MsgID`; `MsgId` is accepted too.
fn job_msg_id(doc: &XmlDoc) -> Result<u64, MessageError> {
    if doc.get("MsgID").is_some() {
        integer(doc, "MsgID")
    } else {
        integer(doc, "MsgId").map_err(|error| match error {
            MessageError::Missing(_) => MessageError::Missing("MsgID"),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::xml::{
        parse, XmlError, XmlLimits, DEPTH_MAX_DEFAULT, DOCUMENTED_ELEMENTS_MAX, ELEMENTS_MAX_DEFAULT, NEWS_ARTICLES_MAX,
    };

    fn inbound(body: &str) -> Result<InboundMessage, MessageError> {
        parse_inbound(&parse(body.as_bytes(), &XmlLimits::default()).unwrap())
    }

    fn message(fields: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>\
             <FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>\
             <CreateTime>1348831860</CreateTime>{fields}</xml>"
        )
    }

    fn event(fields: &str) -> Event {
        match inbound(&message(&format!("<MsgType><![CDATA[event]]></MsgType>{fields}"))).unwrap().body {
            Inbound::Event(event) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn text_message() {
        let parsed = inbound(&message(
            "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content>\
             <MsgId>1234567890123456</MsgId>",
        ))
        .unwrap();
        assert_eq!(parsed.header.to_user_name, "gh_0123456789ab");
        assert_eq!(parsed.header.from_user_name, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
        assert_eq!(parsed.header.create_time, 1348831860);
        assert_eq!(parsed.body, Inbound::Text { content: "this is a test".into(), msg_id: 1234567890123456 });
        assert_eq!(parsed.dedup_key(), "msg:1234567890123456");
    }

    #[test]
    fn v2_decrypted_plaintext_is_a_text_message() {
        use crate::wechat::crypto::{AesKey, MsgCrypt};
        let crypt = MsgCrypt::new(
            AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap(),
            "wxb11529c136998cb6",
        )
        .unwrap();
        let plain = crypt.decrypt(crate::wechat::crypto::tests::V2_ENCRYPT).unwrap();
        let parsed = inbound(&plain).unwrap();
        assert_eq!(parsed.header.from_user_name, "asdasdasdsadasd");
        assert_eq!(parsed.body, Inbound::Text { content: "hello".into(), msg_id: 12345 });
    }

    #[test]
    fn media_messages() {
        let image = inbound(&message(
            "<MsgType>image</MsgType><PicUrl>http://mmbiz.qpic.cn/x</PicUrl><MediaId>media_1</MediaId><MsgId>1</MsgId>",
        ))
        .unwrap();
        assert_eq!(
            image.body,
            Inbound::Image { pic_url: "http://mmbiz.qpic.cn/x".into(), media_id: "media_1".into(), msg_id: 1 }
        );
        let voice = inbound(&message(
            "<MsgType>voice</MsgType><MediaId>m</MediaId><Format>amr</Format><Recognition>你好</Recognition><MsgId>2</MsgId>",
        ))
        .unwrap();
        assert_eq!(
            voice.body,
            Inbound::Voice {
                media_id: "m".into(), format: "amr".into(), recognition: Some("你好".into()), msg_id: 2
            }
        );
        let video = inbound(&message(
            "<MsgType>video</MsgType><MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId><MsgId>3</MsgId>",
        ))
        .unwrap();
        assert_eq!(
            video.body,
            Inbound::Video { media_id: "m".into(), thumb_media_id: "t".into(), short: false, msg_id: 3 }
        );
        let short = inbound(&message(
            "<MsgType>shortvideo</MsgType><MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId><MsgId>4</MsgId>",
        ))
        .unwrap();
        assert!(matches!(short.body, Inbound::Video { short: true, msg_id: 4, .. }));
    }

    #[test]
    fn location_and_link_messages() {
        let location = inbound(&message(
            "<MsgType>location</MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y>\
             <Scale>20</Scale><Label><![CDATA[位置信息]]></Label><MsgId>5</MsgId>",
        ))
        .unwrap();
        assert_eq!(
            location.body,
            Inbound::Location {
                location_x: "23.134521".into(),
                location_y: "113.358803".into(),
                scale: "20".into(),
                label: "位置信息".into(),
                msg_id: 5
            }
        );
        let link = inbound(&message(
            "<MsgType>link</MsgType><Title>公众平台官网链接</Title><Description>d</Description>\
             <Url>https://mp.weixin.qq.com</Url><MsgId>6</MsgId>",
        ))
        .unwrap();
        assert_eq!(
            link.body,
            Inbound::Link {
                title: "公众平台官网链接".into(),
                description: "d".into(),
                url: "https://mp.weixin.qq.com".into(),
                msg_id: 6
            }
        );
    }

    #[test]
    fn unknown_message_type_is_kept() {
        let parsed = inbound(&message("<MsgType>miniprogrampage</MsgType><MsgId>7</MsgId>")).unwrap();
        assert_eq!(parsed.body, Inbound::Other { msg_type: "miniprogrampage".into(), msg_id: Some(7) });
        assert_eq!(parsed.dedup_key(), "msg:7");
        let no_id = inbound(&message("<MsgType>NewThing</MsgType>")).unwrap();
        assert_eq!(no_id.dedup_key(), "other:oUpF8uMuAJO_M2pxb1Q9zNjWeS6o:1348831860:newthing");
    }

    #[test]
    fn msg_type_is_case_insensitive() {
        let parsed = inbound(&message("<MsgType>TEXT</MsgType><Content>x</Content><MsgId>8</MsgId>")).unwrap();
        assert_eq!(parsed.body, Inbound::Text { content: "x".into(), msg_id: 8 });
    }

    #[test]
    fn subscribe_events() {
        assert_eq!(event("<Event>subscribe</Event>"), Event::Subscribe { event_key: None, ticket: None });
        assert_eq!(
            event("<Event>subscribe</Event><EventKey></EventKey>"),
            Event::Subscribe { event_key: None, ticket: None }
        );
        let scene = event("<Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket>TICKET</Ticket>");
        assert_eq!(scene, Event::Subscribe { event_key: Some("qrscene_123123".into()), ticket: Some("TICKET".into()) });
        assert_eq!(scene_of_subscribe(scene.event_key().unwrap()), Some("123123"));
        assert_eq!(scene_of_subscribe("qrscene_"), None);
        assert_eq!(scene_of_subscribe("123"), None);
        assert_eq!(event("<Event>unsubscribe</Event>"), Event::Unsubscribe);
    }

    #[test]
    fn event_names_are_case_insensitive() {
        assert_eq!(event("<Event>SUBSCRIBE</Event>"), Event::Subscribe { event_key: None, ticket: None });
        assert_eq!(
            event("<Event>SCAN</Event><EventKey>123</EventKey><Ticket>T</Ticket>"),
            Event::Scan { event_key: "123".into(), ticket: Some("T".into()) }
        );
        assert_eq!(
            event("<Event>scan</Event><EventKey>123</EventKey>"),
            Event::Scan { event_key: "123".into(), ticket: None }
        );
        assert_eq!(event("<Event>Click</Event><EventKey>MENU_1</EventKey>"), Event::Click { key: "MENU_1".into() });
    }

    #[test]
    fn location_click_and_view_events() {
        assert_eq!(
            event("<Event>LOCATION</Event><Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision>"),
            Event::Location { latitude: "23.137466".into(), longitude: "113.352425".into(), precision: "119.385040".into() }
        );
        assert_eq!(event("<Event>CLICK</Event><EventKey>EVENTKEY</EventKey>"), Event::Click { key: "EVENTKEY".into() });
        assert_eq!(
            event("<Event>VIEW</Event><EventKey>http://www.qq.com/</EventKey><MenuId>1</MenuId>"),
            Event::View { url: "http://www.qq.com/".into() }
        );
        assert_eq!(event("<Event>user_get_card</Event>"), Event::Other { event: "user_get_card".into() });
    }

    #[test]
    fn job_finish_events_spell_msg_id_msgid() {
        assert_eq!(
            event("<Event>TEMPLATESENDJOBFINISH</Event><MsgID>200163836</MsgID><Status><![CDATA[success]]></Status>"),
            Event::TemplateSendJobFinish { msg_id: 200163836, status: "success".into() }
        );
        assert_eq!(
            event(
                "<Event>MASSSENDJOBFINISH</Event><MsgID>1988</MsgID><Status>sendsuccess</Status><TotalCount>100</TotalCount>\
                 <FilterCount>80</FilterCount><SentCount>75</SentCount><ErrorCount>5</ErrorCount>"
            ),
            Event::MassSendJobFinish {
                msg_id: 1988,
                status: "sendsuccess".into(),
                total_count: 100,
                filter_count: 80,
                sent_count: 75,
                error_count: 5,
                copyright_check: None,
                article_urls: Vec::new(),
            }
        );
        assert_eq!(
            event("<Event>templatesendjobfinish</Event><MsgId>9</MsgId><Status>failed:user block</Status>"),
            Event::TemplateSendJobFinish { msg_id: 9, status: "failed:user block".into() }
        );
        let missing =
            inbound(&message("<MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><Status>s</Status>"));
        assert_eq!(missing, Err(MessageError::Missing("MsgID")));
    }

    #[test]
    fn event_dedup_key_is_sender_time_event_and_key() {
        let parsed = inbound(&message("<MsgType>event</MsgType><Event>SCAN</Event><EventKey>42</EventKey>")).unwrap();
        assert_eq!(parsed.dedup_key(), "event:oUpF8uMuAJO_M2pxb1Q9zNjWeS6o:1348831860:scan:42");
        let parsed = inbound(&message("<MsgType>event</MsgType><Event>unsubscribe</Event>")).unwrap();
        assert_eq!(parsed.dedup_key(), "event:oUpF8uMuAJO_M2pxb1Q9zNjWeS6o:1348831860:unsubscribe:");
        let other = inbound(&message("<MsgType>event</MsgType><Event>Card_Pass</Event>")).unwrap();
        assert_eq!(other.dedup_key(), "event:oUpF8uMuAJO_M2pxb1Q9zNjWeS6o:1348831860:card_pass:");
    }

    #[test]
    fn header_is_required_and_bounded() {
        let no_from = "<xml><ToUserName>gh</ToUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>";
        assert_eq!(inbound(no_from), Err(MessageError::Missing("FromUserName")));
        let long_openid = format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>{}</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>",
            "o".repeat(OPENID_CHARS_MAX + 1)
        );
        assert_eq!(inbound(&long_openid), Err(MessageError::TooLong { field: "FromUserName", max: OPENID_CHARS_MAX }));
        let at_limit = format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>{}</FromUserName><CreateTime>1</CreateTime>\
             <MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>",
            "o".repeat(OPENID_CHARS_MAX)
        );
        assert!(inbound(&at_limit).is_ok());
        let bad_time = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>soon</CreateTime><MsgType>text</MsgType></xml>";
        assert_eq!(inbound(bad_time), Err(MessageError::NotInteger("CreateTime")));
        let bad_id = message("<MsgType>text</MsgType><Content>x</Content><MsgId>-1</MsgId>");
        assert_eq!(inbound(&bad_id), Err(MessageError::NotInteger("MsgId")));
        let wrong_root = "<msg><ToUserName>gh</ToUserName></msg>";
        assert_eq!(inbound(wrong_root), Err(MessageError::Root));
    }

    #[test]
    fn component_events() {
        let parse_component =
            |body: &str| parse_component_event(&parse(body.as_bytes(), &XmlLimits::default()).unwrap());
        assert_eq!(
            parse_component(
                "<xml><AppId>wx_component</AppId><CreateTime>1413192605</CreateTime>\
                 <InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>ticket@@@x</ComponentVerifyTicket></xml>"
            ),
            Ok(ComponentEvent::VerifyTicket {
                component_appid: "wx_component".into(),
                ticket: "ticket@@@x".into(),
                create_time: 1413192605
            })
        );
        let grant = AuthorizationGrant {
            authorizer_appid: "wx_authorizer".into(),
            authorization_code: "queryauthcode@@@x".into(),
            authorization_code_expired_time: 1413196205,
            pre_auth_code: Some("preauthcode@@@x".into()),
        };
        let authorized = |info_type: &str| {
            format!(
                "<xml><AppId>wx_component</AppId><CreateTime>1413192760</CreateTime><InfoType>{info_type}</InfoType>\
                 <AuthorizerAppid>wx_authorizer</AuthorizerAppid><AuthorizationCode>queryauthcode@@@x</AuthorizationCode>\
                 <AuthorizationCodeExpiredTime>1413196205</AuthorizationCodeExpiredTime>\
                 <PreAuthCode>preauthcode@@@x</PreAuthCode></xml>"
            )
        };
        assert_eq!(parse_component(&authorized("authorized")), Ok(ComponentEvent::Authorized(grant.clone())));
        assert_eq!(parse_component(&authorized("updateauthorized")), Ok(ComponentEvent::UpdateAuthorized(grant)));
        assert_eq!(
            parse_component(
                "<xml><AppId>c</AppId><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType>\
                 <AuthorizerAppid>wx_authorizer</AuthorizerAppid></xml>"
            ),
            Ok(ComponentEvent::Unauthorized { authorizer_appid: "wx_authorizer".into() })
        );
        assert_eq!(
            parse_component("<xml><InfoType>notify_third_fasteregister</InfoType></xml>"),
            Ok(ComponentEvent::Other { info_type: "notify_third_fasteregister".into() })
        );
        assert_eq!(parse_component("<xml><AppId>c</AppId></xml>"), Err(MessageError::Missing("InfoType")));
    }

    #[test]
    fn encrypted_envelope_payload() {
        let doc = parse(
            b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>",
            &XmlLimits::default(),
        )
        .unwrap();
        assert_eq!(encrypted_payload(&doc), Some("abc="));
        let empty = parse(b"<xml><Encrypt></Encrypt></xml>", &XmlLimits::default()).unwrap();
        assert_eq!(encrypted_payload(&empty), None);
        let none = parse(b"<xml><ToUserName>gh</ToUserName></xml>", &XmlLimits::default()).unwrap();
        assert_eq!(encrypted_payload(&none), None);
    }

    // WeChat's documented deep event shapes (the official samples, `fixtures/`).
    const PIC_SYSPHOTO: &str = include_str!("fixtures/pic_sysphoto.xml");
    const PIC_PHOTO_OR_ALBUM: &str = include_str!("fixtures/pic_photo_or_album.xml");
    const LOCATION_SELECT: &str = include_str!("fixtures/location_select.xml");
    const SCANCODE_WAITMSG: &str = include_str!("fixtures/scancode_waitmsg.xml");
    const MASS_COPYRIGHT: &str = include_str!("fixtures/masssendjobfinish_copyright.xml");

    fn fixture_event(body: &str) -> Event {
        match inbound(body).unwrap().body {
            Inbound::Event(event) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    /// Elements in a body (start and empty-element tags).
    fn elements(body: &str) -> usize {
        body.match_indices('<').filter(|(at, _)| body[at + 1..].starts_with(|c: char| c.is_ascii_alphabetic())).count()
    }

    #[test]
    fn picture_menu_events() {
        let one = inbound(PIC_SYSPHOTO).unwrap();
        assert_eq!(
            one.body,
            Inbound::Event(Event::PicsSent {
                source: PicSource::SysPhoto,
                event_key: "6".into(),
                count: 1,
                pic_md5_sums: vec!["1b5f7c23b5bf75682a53e7b6d163e185".into()],
            })
        );
        assert_eq!(one.dedup_key(), "event:oMgHVjngRipVsoxg6TuX3vz6glDg:1408090651:pic_sysphoto:6");
        // Album selection: up to 9 pictures.
        let Event::PicsSent { source, count, pic_md5_sums, .. } = fixture_event(PIC_PHOTO_OR_ALBUM) else {
            panic!("not a picture event")
        };
        assert_eq!((source, count), (PicSource::PhotoOrAlbum, 9));
        assert_eq!(pic_md5_sums, (1..=9).map(|i| format!("{i:032x}")).collect::<Vec<_>>());
        let weixin = PIC_SYSPHOTO.replace("pic_sysphoto", "pic_weixin");
        assert!(matches!(fixture_event(&weixin), Event::PicsSent { source: PicSource::Weixin, .. }));
        assert_eq!(fixture_event(&weixin).name(), "pic_weixin");
        // No picture (an empty list) is read as such, not refused.
        let none = PIC_SYSPHOTO
            .replace("<Count>1</Count>", "<Count>0</Count>")
            .replace("<item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum>\n</item>\n", "");
        assert!(
            matches!(fixture_event(&none), Event::PicsSent { count: 0, pic_md5_sums, .. } if pic_md5_sums.is_empty())
        );
    }

    #[test]
    fn picture_events_refuse_bad_fields() {
        let no_md5 = PIC_SYSPHOTO
            .replace("<PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum>", "<Other>x</Other>");
        assert_eq!(inbound(&no_md5), Err(MessageError::Missing("SendPicsInfo/PicList/item/PicMd5Sum")));
        let long_md5 = PIC_SYSPHOTO.replace("1b5f7c23b5bf75682a53e7b6d163e185", &"a".repeat(KEY_CHARS_MAX + 1));
        assert_eq!(
            inbound(&long_md5),
            Err(MessageError::TooLong { field: "SendPicsInfo/PicList/item/PicMd5Sum", max: KEY_CHARS_MAX })
        );
        let bad_count = PIC_SYSPHOTO.replace("<Count>1</Count>", "<Count>one</Count>");
        assert_eq!(inbound(&bad_count), Err(MessageError::NotInteger("SendPicsInfo/Count")));
    }

    #[test]
    fn location_select_event() {
        let parsed = inbound(LOCATION_SELECT).unwrap();
        assert_eq!(
            parsed.body,
            Inbound::Event(Event::LocationSelected {
                event_key: "6".into(),
                location_x: "23".into(),
                location_y: "113".into(),
                scale: "15".into(),
                label: " 广州市海珠区客村艺苑路 106号".into(),
                poiname: None,
            })
        );
        assert_eq!(parsed.dedup_key(), "event:oMgHVjngRipVsoxg6TuX3vz6glDg:1408091189:location_select:6");
        let named = LOCATION_SELECT.replace("<Poiname><![CDATA[]]>", "<Poiname><![CDATA[艺苑]]>");
        assert!(matches!(fixture_event(&named), Event::LocationSelected { poiname: Some(p), .. } if p == "艺苑"));
        let no_x = LOCATION_SELECT.replace("<Location_X><![CDATA[23]]></Location_X>", "");
        assert_eq!(inbound(&no_x), Err(MessageError::Missing("SendLocationInfo/Location_X")));
    }

    #[test]
    fn scancode_events() {
        assert_eq!(
            fixture_event(SCANCODE_WAITMSG),
            Event::ScanCode {
                wait_msg: true,
                event_key: "6".into(),
                scan_type: "qrcode".into(),
                scan_result: "2".into()
            }
        );
        let push = SCANCODE_WAITMSG.replace("scancode_waitmsg", "scancode_push");
        let push = inbound(&push).unwrap();
        assert!(matches!(&push.body, Inbound::Event(Event::ScanCode { wait_msg: false, .. })));
        assert_eq!(push.dedup_key(), "event:oMgHVjngRipVsoxg6TuX3vz6glDg:1408090606:scancode_push:6");
        let no_type = SCANCODE_WAITMSG.replace("<ScanType><![CDATA[qrcode]]></ScanType>", "");
        assert_eq!(inbound(&no_type), Err(MessageError::Missing("ScanCodeInfo/ScanType")));
    }

    fn copyright_item(article_idx: u32, url: &str) -> CopyrightCheckItem {
        CopyrightCheckItem {
            article_idx,
            user_declare_state: 0,
            audit_state: 2,
            original_article_url: Some(url.into()),
            original_article_type: 1,
            can_reprint: true,
            need_replace_content: true,
            need_show_reprint_source: true,
        }
    }

    #[test]
    fn mass_send_job_finish_with_copyright_check_and_article_urls() {
        assert_eq!(
            fixture_event(MASS_COPYRIGHT),
            Event::MassSendJobFinish {
                msg_id: 1000001625,
                status: "err(30003)".into(),
                total_count: 0,
                filter_count: 0,
                sent_count: 0,
                error_count: 0,
                copyright_check: Some(CopyrightCheck {
                    count: 2,
                    check_state: 2,
                    results: vec![copyright_item(1, "Url_1"), copyright_item(2, "Url_2")],
                }),
                article_urls: vec![ArticleUrl { article_idx: 1, article_url: None }],
            }
        );
        // Without the lists (no original-content check): none of them.
        let start = MASS_COPYRIGHT.find("<CopyrightCheckResult>").unwrap();
        let end = MASS_COPYRIGHT.find("</xml>").unwrap();
        let plain = format!("{}{}", &MASS_COPYRIGHT[..start], &MASS_COPYRIGHT[end..]);
        assert!(matches!(
            fixture_event(&plain),
            Event::MassSendJobFinish { copyright_check: None, article_urls, .. } if article_urls.is_empty()
        ));
        let empty = plain.replace("</xml>", "<CopyrightCheckResult/></xml>");
        assert!(matches!(fixture_event(&empty), Event::MassSendJobFinish { copyright_check: None, .. }));
    }

    #[test]
    fn mass_send_job_finish_refuses_bad_list_fields() {
        let cases = [
            (
                "<CanReprint>1</CanReprint>",
                "<CanReprint>2</CanReprint>",
                MessageError::NotFlag("CopyrightCheckResult/ResultList/item/CanReprint"),
            ),
            ("<CheckState>2</CheckState>", "", MessageError::Missing("CopyrightCheckResult/CheckState")),
            (
                "<AuditState>2</AuditState>",
                "<AuditState>-2</AuditState>",
                MessageError::NotInteger("CopyrightCheckResult/ResultList/item/AuditState"),
            ),
            (
                "<ArticleIdx>1</ArticleIdx>\n<ArticleUrl>",
                "<ArticleUrl>",
                MessageError::Missing("ArticleUrlResult/ResultList/item/ArticleIdx"),
            ),
        ];
        for (from, to, error) in cases {
            assert!(MASS_COPYRIGHT.contains(from), "{from}");
            assert_eq!(inbound(&MASS_COPYRIGHT.replacen(from, to, 1)), Err(error));
        }
        let long_url = MASS_COPYRIGHT.replace("Url_1", &"u".repeat(URL_CHARS_MAX + 1));
        assert_eq!(
            inbound(&long_url),
            Err(MessageError::TooLong {
                field: "CopyrightCheckResult/ResultList/item/OriginalArticleUrl",
                max: URL_CHARS_MAX
            })
        );
    }

    /// The largest documented callback: a news message of 8 articles, both
    /// lists full, as it arrives in compatibility mode (with `Encrypt`).
    fn mass_finish_of_8_articles() -> String {
        let copyright: String = (1..=NEWS_ARTICLES_MAX)
            .map(|i| {
                format!(
                    "<item><ArticleIdx>{i}</ArticleIdx><UserDeclareState>0</UserDeclareState><AuditState>2</AuditState>\
                     <OriginalArticleUrl><![CDATA[Url_{i}]]></OriginalArticleUrl><OriginalArticleType>1</OriginalArticleType>\
                     <CanReprint>1</CanReprint><NeedReplaceContent>1</NeedReplaceContent>\
                     <NeedShowReprintSource>1</NeedShowReprintSource></item>"
                )
            })
            .collect();
        let urls: String = (1..=NEWS_ARTICLES_MAX)
            .map(|i| format!("<item><ArticleIdx>{i}</ArticleIdx><ArticleUrl><![CDATA[https://mp.weixin.qq.com/s/{i}]]></ArticleUrl></item>"))
            .collect();
        let start = MASS_COPYRIGHT.find("<CopyrightCheckResult>").unwrap();
        format!(
            "{}<CopyrightCheckResult><Count>8</Count><ResultList>{copyright}</ResultList><CheckState>1</CheckState>\
             </CopyrightCheckResult><ArticleUrlResult><Count>8</Count><ResultList>{urls}</ResultList></ArticleUrlResult>\
             <Encrypt><![CDATA[c2FmZQ==]]></Encrypt></xml>",
            &MASS_COPYRIGHT[..start]
        )
    }

    #[test]
    fn the_largest_documented_callback_is_what_the_element_limit_derives_from() {
        let body = mass_finish_of_8_articles();
        assert_eq!(elements(&body), DOCUMENTED_ELEMENTS_MAX);
        let Event::MassSendJobFinish { copyright_check: Some(check), article_urls, .. } = fixture_event(&body) else {
            panic!("not a mass send result with a copyright check")
        };
        assert_eq!(check.results.iter().map(|r| r.article_idx).collect::<Vec<_>>(), (1..=8).collect::<Vec<u32>>());
        assert_eq!(article_urls.len(), NEWS_ARTICLES_MAX);
        assert_eq!(
            article_urls[7],
            ArticleUrl { article_idx: 8, article_url: Some("https://mp.weixin.qq.com/s/8".into()) }
        );
        // At the derived count and one past it.
        let at = XmlLimits { elements_max: DOCUMENTED_ELEMENTS_MAX, ..XmlLimits::default() };
        assert!(parse(body.as_bytes(), &at).is_ok());
        let below = XmlLimits { elements_max: DOCUMENTED_ELEMENTS_MAX - 1, ..XmlLimits::default() };
        assert_eq!(parse(body.as_bytes(), &below), Err(XmlError::TooManyElements { max: DOCUMENTED_ELEMENTS_MAX - 1 }));
    }

    #[test]
    fn every_documented_shape_fits_the_default_limits_and_one_level_more_does_not() {
        for body in [PIC_SYSPHOTO, PIC_PHOTO_OR_ALBUM, LOCATION_SELECT, SCANCODE_WAITMSG, MASS_COPYRIGHT] {
            let doc = parse(body.as_bytes(), &XmlLimits::default()).unwrap();
            assert!(parse_inbound(&doc).is_ok(), "{body}");
            assert!(elements(body) <= ELEMENTS_MAX_DEFAULT);
        }
        // The deepest shapes use exactly the default depth; one level more is refused.
        let deeper_pic =
            PIC_SYSPHOTO.replace("<PicMd5Sum>", "<Wrap><PicMd5Sum>").replace("</PicMd5Sum>", "</PicMd5Sum></Wrap>");
        assert_eq!(
            parse(deeper_pic.as_bytes(), &XmlLimits::default()),
            Err(XmlError::TooDeep { max: DEPTH_MAX_DEFAULT })
        );
        let deeper_mass = MASS_COPYRIGHT.replace("<ArticleIdx>1</ArticleIdx>", "<ArticleIdx><N>1</N></ArticleIdx>");
        assert_eq!(
            parse(deeper_mass.as_bytes(), &XmlLimits::default()),
            Err(XmlError::TooDeep { max: DEPTH_MAX_DEFAULT })
        );
        let shallower = XmlLimits { depth_max: DEPTH_MAX_DEFAULT - 1, ..XmlLimits::default() };
        for body in [PIC_SYSPHOTO, MASS_COPYRIGHT] {
            assert_eq!(parse(body.as_bytes(), &shallower), Err(XmlError::TooDeep { max: DEPTH_MAX_DEFAULT - 1 }));
        }
    }

    #[test]
    fn other_documented_nested_shapes_fit() {
        // Subscription-message pop-up (depth 4, a list without `item`): kept as an unknown event.
        let popup = message(
            "<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent>\
             <List><TemplateId>VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc</TemplateId>\
             <SubscribeStatusString>accept</SubscribeStatusString><PopupScene>2</PopupScene></List>\
             <List><TemplateId>9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI</TemplateId>\
             <SubscribeStatusString>reject</SubscribeStatusString><PopupScene>2</PopupScene></List>\
             </SubscribeMsgPopupEvent>",
        );
        assert_eq!(fixture_event(&popup), Event::Other { event: "subscribe_msg_popup_event".into() });
        // Component: fast registration result (depth 3).
        let fast_register = "<xml><AppId><![CDATA[wx_component]]></AppId><CreateTime>1535442403</CreateTime>\
             <InfoType><![CDATA[notify_third_fasteregister]]></InfoType><appid>wx_new</appid><status>0</status>\
             <auth_code>auth_code_1</auth_code><msg><![CDATA[OK]]></msg><info><name><![CDATA[企业名称]]></name>\
             <code><![CDATA[企业代码]]></code><code_type>1</code_type><legal_persona_wechat><![CDATA[wxid]]></legal_persona_wechat>\
             <legal_persona_name><![CDATA[法人]]></legal_persona_name><component_phone><![CDATA[1234]]></component_phone>\
             </info></xml>";
        let doc = parse(fast_register.as_bytes(), &XmlLimits::default()).unwrap();
        assert_eq!(doc.get("info/code_type"), Some("1"));
        assert_eq!(
            parse_component_event(&doc),
            Ok(ComponentEvent::Other { info_type: "notify_third_fasteregister".into() })
        );
    }
}
