//! Typed inbound callback messages, read from a parsed [`XmlDoc`].
//!
//! Unknown message types and events are kept (`Other`) rather than refused:
//! WeChat adds types over time and an error would make it retry. Fields the
//! system relies on are required and bounded; `MsgType` and `Event` compare
//! case-insensitively (WeChat sends `subscribe` but `SCAN`, `LOCATION`, ...).

use super::xml::XmlDoc;

/// Longest openid or original id (`gh_...`) accepted.
pub const OPENID_CHARS_MAX: usize = 64;
/// Longest `MsgType`, `Event` or `InfoType` accepted.
pub const TYPE_CHARS_MAX: usize = 64;
/// Longest `EventKey`, `Ticket`, media id or appid accepted.
pub const KEY_CHARS_MAX: usize = 512;
/// Longest URL accepted (`PicUrl`, `Url`, VIEW event targets).
pub const URL_CHARS_MAX: usize = 2048;
/// Longest free text (`Content`, `Title`, `Description`, `Label`, `Recognition`)
/// accepted; the XML reader's per-field limit applies too.
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
    },
    Other {
        event: String,
    },
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
        Event::MassSendJobFinish {
            msg_id: job_msg_id(doc)?,
            status: required(doc, "Status", KEY_CHARS_MAX)?,
            total_count: integer(doc, "TotalCount")?,
            filter_count: integer(doc, "FilterCount")?,
            sent_count: integer(doc, "SentCount")?,
            error_count: integer(doc, "ErrorCount")?,
        }
    } else {
        Event::Other { event }
    };
    Ok(parsed)
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

/// A field that may be absent or empty (both read as `None`).
fn optional(doc: &XmlDoc, field: &'static str, max: usize) -> Result<Option<String>, MessageError> {
    match doc.get(field) {
        None | Some("") => Ok(None),
        Some(value) => bounded(field, value, max).map(Some),
    }
}

/// A field that may be absent or empty (both read as "").
fn text(doc: &XmlDoc, field: &'static str, max: usize) -> Result<String, MessageError> {
    Ok(optional(doc, field, max)?.unwrap_or_default())
}

/// A field that must be present and non-empty.
fn required(doc: &XmlDoc, field: &'static str, max: usize) -> Result<String, MessageError> {
    let value = doc.get(field).ok_or(MessageError::Missing(field))?;
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

fn integer<T: std::str::FromStr>(doc: &XmlDoc, field: &'static str) -> Result<T, MessageError> {
    let value = doc.get(field).ok_or(MessageError::Missing(field))?;
    value.trim().parse().map_err(|_| MessageError::NotInteger(field))
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
    use crate::wechat::xml::{parse, XmlLimits};

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
                error_count: 5
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
}
