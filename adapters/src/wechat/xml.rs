//! The small, flat XML WeChat speaks: `<xml><Field>value</Field>...</xml>`.
//!
//! Only what WeChat sends is accepted: one `<xml>` root whose children are text (or CDATA)
//! fields, with bounded size, depth and field count. A DOCTYPE is refused outright, so no
//! entity can be declared (no "billion laughs", no external entities); references other than
//! the five predefined ones and character references are errors. Deeper elements that some
//! events carry (`ScanCodeInfo`, `SendPicsInfo`) are tolerated and skipped.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// Largest XML document accepted (WeChat messages are a few kilobytes at most).
pub const MAX_XML_BYTES: usize = 64 * 1024;
const MAX_FIELDS: usize = 64;
const MAX_DEPTH: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the XML body is larger than {MAX_XML_BYTES} bytes")]
    TooLarge,
    #[error("the XML body is not UTF-8")]
    Utf8,
    #[error("DOCTYPE and entity declarations are not accepted")]
    Doctype,
    #[error("the XML root element must be <xml>, found <{0}>")]
    Root(String),
    #[error("the XML body has no <xml> root element")]
    NoRoot,
    #[error("field <{0}> appears twice")]
    Duplicate(String),
    #[error("the XML body has too many fields or is nested too deeply")]
    TooComplex,
    #[error("malformed XML: {0}")]
    Syntax(String),
}

/// The child fields of the `<xml>` root, by element name.
pub type Fields = BTreeMap<String, String>;

/// Parse a WeChat XML body into its fields.
pub fn parse(input: &[u8]) -> Result<Fields, XmlError> {
    if input.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLarge);
    }
    let text = std::str::from_utf8(input).map_err(|_| XmlError::Utf8)?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut fields = Fields::new();
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut closed_root = false;
    let mut current: Option<(String, String)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Syntax(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::TooComplex);
                }
                if depth == 1 {
                    if closed_root || seen_root {
                        return Err(XmlError::Syntax("more than one root element".into()));
                    }
                    if name != "xml" {
                        return Err(XmlError::Root(name));
                    }
                    seen_root = true;
                } else if depth == 2 {
                    current = Some((name, String::new()));
                } else if let Some((name, _)) = current.take() {
                    // A structured field: keep its name with no value, skip its children.
                    insert(&mut fields, name, String::new())?;
                }
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match depth {
                    0 => {
                        if name != "xml" {
                            return Err(XmlError::Root(name));
                        }
                        seen_root = true;
                        closed_root = true;
                    }
                    1 => insert(&mut fields, name, String::new())?,
                    _ => {}
                }
            }
            Event::End(_) => {
                if depth == 2
                    && let Some((name, value)) = current.take()
                {
                    insert(&mut fields, name, value)?;
                }
                if depth == 1 {
                    closed_root = true;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                let raw = std::str::from_utf8(t.as_ref()).map_err(|_| XmlError::Utf8)?;
                let value = quick_xml::escape::unescape(raw)
                    .map_err(|e| XmlError::Syntax(e.to_string()))?;
                if depth == 2
                    && let Some((_, v)) = current.as_mut()
                {
                    v.push_str(&value);
                } else if depth == 0 && !value.trim().is_empty() {
                    return Err(XmlError::Syntax("text outside the <xml> root".into()));
                }
            }
            Event::CData(c) => {
                let value = std::str::from_utf8(c.as_ref()).map_err(|_| XmlError::Utf8)?;
                if depth == 2
                    && let Some((_, v)) = current.as_mut()
                {
                    v.push_str(value);
                } else if depth == 0 {
                    return Err(XmlError::Syntax("CDATA outside the <xml> root".into()));
                }
            }
            Event::Eof => break,
        }
    }
    if !seen_root {
        return Err(XmlError::NoRoot);
    }
    if depth != 0 || !closed_root {
        return Err(XmlError::Syntax("the <xml> element is not closed".into()));
    }
    Ok(fields)
}

fn insert(fields: &mut Fields, name: String, value: String) -> Result<(), XmlError> {
    if fields.len() >= MAX_FIELDS {
        return Err(XmlError::TooComplex);
    }
    if fields.contains_key(&name) {
        return Err(XmlError::Duplicate(name));
    }
    fields.insert(name, value.trim().to_owned());
    Ok(())
}

/// `<![CDATA[...]]>` that stays correct when the value itself contains `]]>`.
pub fn cdata(value: &str) -> String {
    format!("<![CDATA[{}]]>", value.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_message_from_the_spec() {
        let f = parse(
            b"<xml><ToUserName><![CDATA[toUser]]></ToUserName>\n\
              <FromUserName><![CDATA[fromUser]]></FromUserName>\n\
              <CreateTime>1348831860</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n\
              <Content><![CDATA[this is a test]]></Content>\n<MsgId>1234567890123456</MsgId>\n</xml>",
        )
        .expect("valid");
        assert_eq!(f["ToUserName"], "toUser");
        assert_eq!(f["CreateTime"], "1348831860");
        assert_eq!(f["Content"], "this is a test");
        assert_eq!(f["MsgId"], "1234567890123456");
    }

    #[test]
    fn escapes_and_nested_event_fields() {
        let f = parse(
            b"<?xml version=\"1.0\"?><xml><A>a &amp; b &#x4E2D;</A><ScanCodeInfo><ScanType>qrcode</ScanType></ScanCodeInfo><E/></xml>",
        )
        .expect("valid");
        assert_eq!(f["A"], "a & b \u{4E2D}");
        assert_eq!(f["ScanCodeInfo"], "");
        assert_eq!(f["E"], "");
    }

    #[test]
    fn hostile_or_broken_documents_are_refused() {
        let bomb = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><xml><Content>&lol2;</Content></xml>";
        assert_eq!(parse(bomb), Err(XmlError::Doctype));
        assert!(matches!(
            parse(b"<xml><Content>&xxe;</Content></xml>"),
            Err(XmlError::Syntax(_))
        ));
        assert!(matches!(parse(b"<xml><A>1</A>"), Err(XmlError::Syntax(_))));
        assert!(matches!(
            parse(b"<xml><A>1</B></xml>"),
            Err(XmlError::Syntax(_))
        ));
        assert_eq!(parse(b"<root/>"), Err(XmlError::Root("root".into())));
        assert_eq!(parse(b""), Err(XmlError::NoRoot));
        assert_eq!(
            parse(b"<xml><A>1</A><A>2</A></xml>"),
            Err(XmlError::Duplicate("A".into()))
        );
        assert_eq!(parse(&[b' '; MAX_XML_BYTES + 1]), Err(XmlError::TooLarge));
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(10), "</a>".repeat(10));
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooComplex));
        assert!(parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn cdata_survives_its_terminator() {
        let s = cdata("a]]>b");
        let f = parse(format!("<xml><C>{s}</C></xml>").as_bytes()).expect("valid");
        assert_eq!(f["C"], "a]]>b");
    }
}
