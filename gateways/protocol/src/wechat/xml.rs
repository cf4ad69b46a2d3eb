//! A bounded, entity-free XML reader for WeChat callback bodies.
//!
//! WeChat bodies are one root (`<xml>`) with leaf fields, a few containers
//! (`<ScanCodeInfo><ScanType>..`) and lists of `<item>`s inside a container
//! (`<SendPicsInfo><PicList><item><PicMd5Sum>..`). Anything richer is refused:
//! DOCTYPE and ENTITY declarations (XXE, billion laughs), entity references
//! other than the five predefined ones and numeric character references,
//! processing instructions other than the XML declaration, and documents over
//! the [`XmlLimits`].

use xml::reader::{ErrorKind, ParserConfig, XmlEvent};

/// Default largest body accepted (64 KiB).
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default deepest element nesting, the root counting as 1: WeChat's deepest
/// documented shapes are lists inside a container, `xml/SendPicsInfo/PicList/item/PicMd5Sum`
/// (picture menu events) and `xml/CopyrightCheckResult/ResultList/item/ArticleIdx`
/// and `xml/ArticleUrlResult/ResultList/item/ArticleUrl` (`MASSSENDJOBFINISH`), all 5.
pub const DEPTH_MAX_DEFAULT: usize = 5;
/// Articles in one news message, hence items in each list of a `MASSSENDJOBFINISH`.
pub const NEWS_ARTICLES_MAX: usize = 8;
/// Elements of WeChat's largest documented callback, a `MASSSENDJOBFINISH` for a
/// news message of [`NEWS_ARTICLES_MAX`] articles with both result lists, as it
/// arrives in compatibility mode (plaintext fields beside `Encrypt`):
/// - root and its 11 fields (ToUserName, FromUserName, CreateTime, MsgType,
///   Event, MsgID, Status, TotalCount, FilterCount, SentCount, ErrorCount): 12;
/// - `CopyrightCheckResult` with Count, ResultList and CheckState: 4, plus per
///   article an item of 8 fields (ArticleIdx, UserDeclareState, AuditState,
///   OriginalArticleUrl, OriginalArticleType, CanReprint, NeedReplaceContent,
///   NeedShowReprintSource): 9;
/// - `ArticleUrlResult` with Count and ResultList: 3, plus per article an item
///   of ArticleIdx and ArticleUrl: 3;
/// - `Encrypt`: 1.
///
/// 12 + 4 + 8 × 9 + 3 + 8 × 3 + 1 = 116. The next largest, a picture event of
/// 9 pictures, has 28.
pub const DOCUMENTED_ELEMENTS_MAX: usize = 12 + (4 + NEWS_ARTICLES_MAX * 9) + (3 + NEWS_ARTICLES_MAX * 3) + 1;
/// Default largest number of elements, the root included: the largest
/// documented callback ([`DOCUMENTED_ELEMENTS_MAX`]) rounded up to a power of
/// two, which leaves room for a few fields WeChat adds without notice (128).
pub const ELEMENTS_MAX_DEFAULT: usize = DOCUMENTED_ELEMENTS_MAX.next_power_of_two();
/// Default largest text (text and CDATA together) inside one element (16 KiB).
pub const FIELD_BYTES_MAX_DEFAULT: usize = 16 * 1024;
/// Longest element name accepted.
const NAME_CHARS_MAX: usize = 64;
/// Most attributes on one element (WeChat sends none; they are ignored).
const ATTRIBUTES_MAX: usize = 8;
/// Longest attribute value accepted.
const ATTRIBUTE_BYTES_MAX: usize = 256;
/// Longest parser message kept in [`XmlError::Malformed`].
const MALFORMED_MESSAGE_CHARS_MAX: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    pub body_bytes_max: usize,
    pub depth_max: usize,
    pub elements_max: usize,
    pub field_bytes_max: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            depth_max: DEPTH_MAX_DEFAULT,
            elements_max: ELEMENTS_MAX_DEFAULT,
            field_bytes_max: FIELD_BYTES_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("xml body larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("xml DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("xml entity declarations and non-predefined entity references are not accepted")]
    Entity,
    #[error("xml processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("xml nesting deeper than {max}")]
    TooDeep { max: usize },
    #[error("xml has more than {max} elements")]
    TooManyElements { max: usize },
    #[error("xml element text longer than {max} bytes")]
    FieldTooLong { max: usize },
    #[error("xml names or attributes exceed the reader's limits")]
    LimitExceeded,
    #[error("xml has no root element")]
    Empty,
    #[error("malformed xml: {0}")]
    Malformed(String),
}

/// A parsed body: the root's name and its leaf elements in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlDoc {
    pub root: String,
    /// `(path, text)` for each leaf element below the root; nested leaves are
    /// named by their path from the root (`ScanCodeInfo/ScanType`), so the
    /// leaves of list items share a path (`SendPicsInfo/PicList/item/PicMd5Sum`;
    /// [`XmlDoc::items`] tells the items apart). Text and CDATA of one element
    /// are concatenated, whitespace kept.
    pub fields: Vec<(String, String)>,
    /// For each of `fields`, the number (in document order, the root being 0)
    /// of the element that contains it: leaves of one list item share it.
    parents: Vec<usize>,
}

impl XmlDoc {
    /// The first field with this path.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(path, _)| path == name).map(|(_, text)| text.as_str())
    }

    /// The elements at `path` (`SendPicsInfo/PicList/item`) that hold leaves,
    /// in document order, each with its leaves; an empty element
    /// (`<item/>`) is an item without fields. Elements nested inside an item
    /// are not read.
    pub fn items(&self, path: &str) -> Vec<XmlItem<'_>> {
        let mut items: Vec<(Option<usize>, XmlItem<'_>)> = Vec::new();
        for ((field, text), parent) in self.fields.iter().zip(&self.parents) {
            if field == path {
                items.push((None, XmlItem { fields: Vec::new() }));
                continue;
            }
            let Some(name) = field.strip_prefix(path).and_then(|rest| rest.strip_prefix('/')) else { continue };
            if name.contains('/') {
                continue;
            }
            match items.last_mut() {
                Some((Some(current), item)) if current == parent => item.fields.push((name, text)),
                _ => items.push((Some(*parent), XmlItem { fields: vec![(name, text)] })),
            }
        }
        items.into_iter().map(|(_, item)| item).collect()
    }
}

/// One element of a list ([`XmlDoc::items`]): its leaves, named relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlItem<'a> {
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> XmlItem<'a> {
    /// The first leaf of this item with this name.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields.iter().find(|(field, _)| *field == name).map(|(_, text)| *text)
    }
}

/// One open element while reading.
struct Frame {
    name: String,
    /// Its number in document order, the root being 0.
    number: usize,
    text: String,
    has_children: bool,
}

/// Parses a callback body within `limits`.
pub fn parse(body: &[u8], limits: &XmlLimits) -> Result<XmlDoc, XmlError> {
    if body.len() > limits.body_bytes_max {
        return Err(XmlError::TooLarge { max: limits.body_bytes_max });
    }
    refuse_declarations(body)?;
    let mut reader = parser_config(limits).create_reader(body);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<String> = None;
    let mut fields = Vec::new();
    let mut parents = Vec::new();
    let mut elements = 0usize;
    loop {
        let event = reader.next().map_err(map_parser_error)?;
        match event {
            XmlEvent::StartDocument { .. } | XmlEvent::Comment(_) => {}
            XmlEvent::EndDocument => break,
            XmlEvent::Doctype { .. } => return Err(XmlError::Doctype),
            XmlEvent::ProcessingInstruction { .. } => return Err(XmlError::ProcessingInstruction),
            XmlEvent::StartElement { name, .. } => {
                elements += 1;
                if elements > limits.elements_max {
                    return Err(XmlError::TooManyElements { max: limits.elements_max });
                }
                if stack.len() + 1 > limits.depth_max {
                    return Err(XmlError::TooDeep { max: limits.depth_max });
                }
                // The reader does not apply its own name limit to elements.
                if name.local_name.len() + name.prefix.as_ref().map_or(0, String::len) > NAME_CHARS_MAX {
                    return Err(XmlError::LimitExceeded);
                }
                if let Some(parent) = stack.last_mut() {
                    parent.has_children = true;
                }
                let number = elements - 1;
                stack.push(Frame { name: name.local_name, number, text: String::new(), has_children: false });
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) | XmlEvent::Whitespace(text) => {
                if let Some(frame) = stack.last_mut() {
                    if frame.text.len() + text.len() > limits.field_bytes_max {
                        return Err(XmlError::FieldTooLong { max: limits.field_bytes_max });
                    }
                    frame.text.push_str(&text);
                }
            }
            XmlEvent::EndElement { .. } => {
                let Some(frame) = stack.pop() else {
                    return Err(XmlError::Malformed("unbalanced end element".into()));
                };
                match stack.last() {
                    None => root = Some(frame.name),
                    Some(parent) if !frame.has_children => {
                        parents.push(parent.number);
                        fields.push((path_of(&stack, &frame.name), frame.text));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let root = root.ok_or(XmlError::Empty)?;
    Ok(XmlDoc { root, fields, parents })
}

fn parser_config(limits: &XmlLimits) -> ParserConfig {
    let mut config = ParserConfig::new()
        .trim_whitespace(false)
        .whitespace_to_characters(true)
        .cdata_to_characters(true)
        .ignore_comments(true)
        .coalesce_characters(true);
    config.allow_multiple_root_elements = false;
    config.max_name_length = NAME_CHARS_MAX;
    config.max_attributes = ATTRIBUTES_MAX;
    config.max_attribute_length = ATTRIBUTE_BYTES_MAX;
    // Text is bounded per element by `parse` (so the error names it); the
    // reader's own cap only has to stop comments and the like, which the body
    // limit already bounds.
    config.max_data_length = limits.body_bytes_max;
    config.max_entity_expansion_depth = 1;
    config.max_entity_expansion_length = 16;
    config
}

fn path_of(stack: &[Frame], leaf: &str) -> String {
    // The root is not part of the path.
    let mut path = String::new();
    for frame in stack.iter().skip(1) {
        path.push_str(&frame.name);
        path.push('/');
    }
    path.push_str(leaf);
    path
}

/// Refuses `<!DOCTYPE` and `<!ENTITY` anywhere outside CDATA sections and
/// comments, before the parser sees the document, so a declared entity is
/// never read, let alone expanded.
fn refuse_declarations(body: &[u8]) -> Result<(), XmlError> {
    let mut i = 0usize;
    while let Some(offset) = find(&body[i..], b"<!") {
        let at = i + offset;
        let rest = &body[at + 2..];
        if rest.starts_with(b"[CDATA[") {
            let Some(end) = find(&rest[7..], b"]]>") else { return Ok(()) };
            i = at + 2 + 7 + end + 3;
        } else if rest.starts_with(b"--") {
            let Some(end) = find(&rest[2..], b"-->") else { return Ok(()) };
            i = at + 2 + 2 + end + 3;
        } else if starts_with_ignore_case(rest, b"DOCTYPE") {
            return Err(XmlError::Doctype);
        } else if starts_with_ignore_case(rest, b"ENTITY") {
            return Err(XmlError::Entity);
        } else {
            i = at + 2;
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn map_parser_error(error: xml::reader::Error) -> XmlError {
    match error.kind() {
        ErrorKind::Syntax(message) if message.contains("entity:") => XmlError::Entity,
        // xml's ExceededConfiguredLimit: names, attributes.
        ErrorKind::Syntax(message) if message.contains("than allowed by the parser") => XmlError::LimitExceeded,
        _ => {
            let mut message = error.to_string();
            if let Some((cut, _)) = message.char_indices().nth(MALFORMED_MESSAGE_CHARS_MAX) {
                message.truncate(cut);
            }
            XmlError::Malformed(message)
        }
    }
}

/// Appends `s` as CDATA. A `]]>` inside `s` is split across two sections
/// (`]]` ends one, `>` starts the next), so any text round-trips.
pub fn write_cdata(out: &mut String, s: &str) {
    out.push_str("<![CDATA[");
    out.push_str(&s.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

/// Appends `s` as escaped character data.
pub fn write_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(body: &str) -> Result<XmlDoc, XmlError> {
        parse(body.as_bytes(), &XmlLimits::default())
    }

    #[test]
    fn reads_leaves_cdata_and_nested_paths() {
        let doc = parse_default(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\n\
             <CreateTime>1348831860</CreateTime><!-- note --><Content>a<![CDATA[ & b]]> &amp; c&#x41;</Content>\
             <ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult>1</ScanResult></ScanCodeInfo>\
             <Empty/></xml>",
        )
        .unwrap();
        assert_eq!(doc.root, "xml");
        assert_eq!(doc.get("ToUserName"), Some("gh_1"));
        assert_eq!(doc.get("CreateTime"), Some("1348831860"));
        assert_eq!(doc.get("Content"), Some("a & b & cA"));
        assert_eq!(doc.get("ScanCodeInfo/ScanType"), Some("qrcode"));
        assert_eq!(doc.get("ScanCodeInfo/ScanResult"), Some("1"));
        assert_eq!(doc.get("ScanCodeInfo"), None);
        assert_eq!(doc.get("Empty"), Some(""));
        assert_eq!(doc.get("Missing"), None);
    }

    #[test]
    fn refuses_doctype_and_external_entities() {
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
                   <xml><Content>&xxe;</Content></xml>";
        assert_eq!(parse_default(xxe), Err(XmlError::Doctype));
        assert_eq!(parse_default("<!doctype xml><xml/>"), Err(XmlError::Doctype));
        assert_eq!(parse_default("<!ENTITY a \"b\"><xml/>"), Err(XmlError::Entity));
    }

    #[test]
    fn refuses_billion_laughs() {
        let mut body = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for i in 1..10 {
            let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
            body.push_str(&format!("<!ENTITY lol{i} \"{}\">", format!("&{prev};").repeat(10)));
        }
        body.push_str("]><xml><Content>&lol9;</Content></xml>");
        assert_eq!(parse_default(&body), Err(XmlError::Doctype));
    }

    #[test]
    fn refuses_undeclared_entity_references() {
        assert_eq!(parse_default("<xml><Content>&nbsp;</Content></xml>"), Err(XmlError::Entity));
        assert_eq!(
            parse_default("<xml><Content>&lt;&gt;&amp;&quot;&apos;&#20320;</Content></xml>").unwrap().get("Content"),
            Some("<>&\"'你")
        );
    }

    #[test]
    fn declaration_words_inside_cdata_and_comments_are_text() {
        let doc = parse_default(
            "<xml><!-- <!DOCTYPE x> --><Content><![CDATA[<!DOCTYPE x> <!ENTITY y> &nbsp;]]></Content></xml>",
        )
        .unwrap();
        assert_eq!(doc.get("Content"), Some("<!DOCTYPE x> <!ENTITY y> &nbsp;"));
    }

    #[test]
    fn refuses_processing_instructions_other_than_the_declaration() {
        assert_eq!(parse_default("<?xml-stylesheet href=\"a\"?><xml/>"), Err(XmlError::ProcessingInstruction));
        assert_eq!(parse_default("<xml><?php x?></xml>"), Err(XmlError::ProcessingInstruction));
    }

    #[test]
    fn body_limit_at_and_past() {
        let limits = XmlLimits { body_bytes_max: 20, ..XmlLimits::default() };
        let exact = "<xml><A>12345</A></xml>";
        assert_eq!(exact.len(), 23);
        let limits_exact = XmlLimits { body_bytes_max: exact.len(), ..limits };
        assert!(parse(exact.as_bytes(), &limits_exact).is_ok());
        let limits_past = XmlLimits { body_bytes_max: exact.len() - 1, ..limits };
        assert_eq!(parse(exact.as_bytes(), &limits_past), Err(XmlError::TooLarge { max: exact.len() - 1 }));
    }

    #[test]
    fn depth_limit_at_and_past() {
        assert_eq!(DEPTH_MAX_DEFAULT, 5);
        let nested = |depth: usize| {
            let names: Vec<String> = (1..depth).map(|level| format!("l{level}")).collect();
            let open: String = names.iter().map(|name| format!("<{name}>")).collect();
            let close: String = names.iter().rev().map(|name| format!("</{name}>")).collect();
            format!("<xml>{open}x{close}</xml>")
        };
        let at = parse_default(&nested(DEPTH_MAX_DEFAULT)).unwrap();
        assert_eq!(at.get("l1/l2/l3/l4"), Some("x"));
        assert_eq!(parse_default(&nested(DEPTH_MAX_DEFAULT + 1)), Err(XmlError::TooDeep { max: DEPTH_MAX_DEFAULT }));
        let limits = XmlLimits { depth_max: 3, ..XmlLimits::default() };
        assert!(parse(nested(3).as_bytes(), &limits).is_ok());
        assert_eq!(parse(nested(4).as_bytes(), &limits), Err(XmlError::TooDeep { max: 3 }));
    }

    #[test]
    fn element_limit_at_and_past() {
        assert_eq!(DOCUMENTED_ELEMENTS_MAX, 116);
        assert_eq!(ELEMENTS_MAX_DEFAULT, 128);
        // The root counts: `n` children make `n + 1` elements.
        let body = |n: usize| format!("<xml>{}</xml>", "<a>1</a>".repeat(n));
        assert_eq!(parse_default(&body(ELEMENTS_MAX_DEFAULT - 1)).unwrap().fields.len(), ELEMENTS_MAX_DEFAULT - 1);
        assert_eq!(
            parse_default(&body(ELEMENTS_MAX_DEFAULT)),
            Err(XmlError::TooManyElements { max: ELEMENTS_MAX_DEFAULT })
        );
        // Containers count like leaves.
        let items = |n: usize| format!("<xml><List>{}</List></xml>", "<item><a>1</a></item>".repeat(n));
        let at = (ELEMENTS_MAX_DEFAULT - 2) / 2;
        assert_eq!(parse_default(&items(at)).unwrap().items("List/item").len(), at);
        assert_eq!(parse_default(&items(at + 1)), Err(XmlError::TooManyElements { max: ELEMENTS_MAX_DEFAULT }));
    }

    #[test]
    fn items_are_told_apart_even_with_missing_fields() {
        let doc = parse_default(
            "<xml><Count>4</Count><List><Count>9</Count>\
             <item><Idx>1</Idx><Url><![CDATA[u1]]></Url></item>\
             <item><Idx>2</Idx></item>\
             <item/>\
             <item><Url>u4</Url><Idx>4</Idx><Deeper><Idx>x</Idx></Deeper></item>\
             </List><item><Idx>elsewhere</Idx></item></xml>",
        )
        .unwrap();
        let items = doc.items("List/item");
        let read = |name: &str| items.iter().map(|item| item.get(name)).collect::<Vec<_>>();
        assert_eq!(items.len(), 4);
        assert_eq!(read("Idx"), [Some("1"), Some("2"), None, Some("4")]);
        assert_eq!(read("Url"), [Some("u1"), None, None, Some("u4")]);
        assert_eq!(doc.get("List/item/Idx"), Some("1"));
        assert_eq!(doc.get("List/Count"), Some("9"));
        assert_eq!(doc.items("item").len(), 1);
        assert!(doc.items("Missing/item").is_empty());
        assert!(doc.items("List/ite").is_empty());
        // Adjacent items are split by their element, not by repeated names.
        let doc = parse_default("<xml><L><item><a>1</a><a>2</a></item><item><a>3</a></item></L></xml>").unwrap();
        let items = doc.items("L/item");
        assert_eq!(items.iter().map(|item| item.get("a")).collect::<Vec<_>>(), [Some("1"), Some("3")]);
    }

    #[test]
    fn field_limit_at_and_past() {
        let limits = XmlLimits { field_bytes_max: 10, ..XmlLimits::default() };
        let ok = "<xml><a>12345<![CDATA[67890]]></a></xml>";
        assert_eq!(parse(ok.as_bytes(), &limits).unwrap().get("a"), Some("1234567890"));
        let past = "<xml><a>12345<![CDATA[678901]]></a></xml>";
        assert_eq!(parse(past.as_bytes(), &limits), Err(XmlError::FieldTooLong { max: 10 }));
        for past_text in ["<xml><a>12345678901</a></xml>", "<xml><a>123456789012345678901234567890</a></xml>"] {
            assert_eq!(parse(past_text.as_bytes(), &limits), Err(XmlError::FieldTooLong { max: 10 }));
        }
        let at_text = "<xml><a>1234567890</a></xml>";
        assert_eq!(parse(at_text.as_bytes(), &limits).unwrap().get("a"), Some("1234567890"));
    }

    #[test]
    fn overlong_names_and_attributes_are_refused() {
        let long_name = format!("<xml><{0}>1</{0}></xml>", "a".repeat(NAME_CHARS_MAX + 1));
        assert_eq!(parse_default(&long_name), Err(XmlError::LimitExceeded));
        let ok_name = format!("<xml><{0}>1</{0}></xml>", "a".repeat(NAME_CHARS_MAX));
        assert!(parse_default(&ok_name).is_ok());
        let many_attributes =
            format!("<xml {}/>", (0..20).map(|i| format!("a{i}=\"1\"")).collect::<Vec<_>>().join(" "));
        assert_eq!(parse_default(&many_attributes), Err(XmlError::LimitExceeded));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for body in ["", "   ", "<xml>", "<xml></yml>", "<xml/><xml/>", "<xml><a></xml>", "not xml", "<xml>\u{0}</xml>"]
        {
            assert!(parse_default(body).is_err(), "{body:?} was accepted");
        }
    }

    #[test]
    fn cdata_round_trips_any_text() {
        for text in ["", "plain", "]]>", "a]]>b]]>c", "]]]]>>", "<![CDATA[x]]>", "]", "]]", "中文 & <tags>"] {
            let mut body = String::from("<xml><Content>");
            write_cdata(&mut body, text);
            body.push_str("</Content></xml>");
            assert_eq!(parse_default(&body).unwrap().get("Content"), Some(text), "{body}");
        }
    }

    #[test]
    fn escaped_text_round_trips() {
        let mut body = String::from("<xml><A>");
        write_text(&mut body, "a<b>&c]]>");
        body.push_str("</A></xml>");
        assert_eq!(parse_default(&body).unwrap().get("A"), Some("a<b>&c]]>"));
    }
}
