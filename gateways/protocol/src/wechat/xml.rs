//! A bounded, entity-free XML reader for WeChat callback bodies.
//!
//! WeChat bodies are one root (`<xml>`) with leaf fields and at most one level
//! of containers (`<ScanCodeInfo><ScanType>..`). Anything richer is refused:
//! DOCTYPE and ENTITY declarations (XXE, billion laughs), entity references
//! other than the five predefined ones and numeric character references,
//! processing instructions other than the XML declaration, and documents over
//! the [`XmlLimits`].

use xml::reader::{ErrorKind, ParserConfig, XmlEvent};

/// Default largest body accepted (64 KiB).
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default deepest element nesting, the root counting as 1.
pub const DEPTH_MAX_DEFAULT: usize = 4;
/// Default largest number of elements, the root included.
pub const ELEMENTS_MAX_DEFAULT: usize = 64;
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
    /// named by their path from the root (`ScanCodeInfo/ScanType`). Text and
    /// CDATA of one element are concatenated, whitespace kept.
    pub fields: Vec<(String, String)>,
}

impl XmlDoc {
    /// The first field with this path.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(path, _)| path == name).map(|(_, text)| text.as_str())
    }
}

/// One open element while reading.
struct Frame {
    name: String,
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
                stack.push(Frame { name: name.local_name, text: String::new(), has_children: false });
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
                if stack.is_empty() {
                    root = Some(frame.name);
                } else if !frame.has_children {
                    fields.push((path_of(&stack, &frame.name), frame.text));
                }
            }
        }
    }
    let root = root.ok_or(XmlError::Empty)?;
    Ok(XmlDoc { root, fields })
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
        let limits = XmlLimits::default();
        assert!(parse_default("<xml><a><b><c>x</c></b></a></xml>").is_ok());
        assert_eq!(
            parse_default("<xml><a><b><c><d>x</d></c></b></a></xml>"),
            Err(XmlError::TooDeep { max: limits.depth_max })
        );
    }

    #[test]
    fn element_limit_at_and_past() {
        let body = |n: usize| format!("<xml>{}</xml>", "<a>1</a>".repeat(n));
        assert!(parse_default(&body(ELEMENTS_MAX_DEFAULT - 1)).is_ok());
        assert_eq!(
            parse_default(&body(ELEMENTS_MAX_DEFAULT)),
            Err(XmlError::TooManyElements { max: ELEMENTS_MAX_DEFAULT })
        );
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
