//! WeChat messages as the gateway understands them, from XML fields or mini-program JSON.
//!
//! Both official accounts and mini-programs push the same field names (`ToUserName`,
//! `FromUserName`, `CreateTime`, `MsgType`, ...); mini-programs may send them as JSON instead of
//! XML. Both are read into the same [`Fields`] map and then into an [`Inbound`] message, so the
//! rest of the gateway never looks at the wire format again.

use crate::submission::Submission;
use crate::work_order::{Channel, Citizen, Source};

use super::xml::Fields;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("required field {0} is missing or empty")]
    Missing(&'static str),
    #[error("field {0} has an invalid value")]
    Invalid(&'static str),
    #[error("the JSON body is not an object of WeChat fields: {0}")]
    Json(String),
}

/// One message or event pushed by WeChat.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The account's original id (`gh_...`) or the mini-program's.
    pub to_user: String,
    /// The citizen's openid for this account.
    pub from_user: String,
    pub create_time: i64,
    pub msg_id: Option<String>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Text {
        content: String,
    },
    Voice {
        media_id: String,
        format: String,
        /// WeChat's own speech recognition, when the account enabled it.
        recognition: Option<String>,
    },
    Image {
        pic_url: String,
        media_id: String,
    },
    Location {
        lat: f64,
        lng: f64,
        scale: Option<u32>,
        label: Option<String>,
    },
    Link {
        title: String,
        description: String,
        url: String,
    },
    Event {
        /// As sent: `subscribe`, `unsubscribe`, `CLICK`, `VIEW`, `LOCATION`, ...
        event: String,
        key: Option<String>,
        /// `LOCATION` events: latitude, longitude, precision.
        position: Option<(f64, f64, f64)>,
    },
    /// A type the gateway does not act on (video, file, mini-program page ...).
    Other {
        msg_type: String,
    },
}

fn req<'a>(f: &'a Fields, name: &'static str) -> Result<&'a str, MessageError> {
    f.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(MessageError::Missing(name))
}

fn opt(f: &Fields, name: &str) -> Option<String> {
    f.get(name).filter(|v| !v.is_empty()).cloned()
}

fn num(f: &Fields, name: &'static str) -> Result<f64, MessageError> {
    req(f, name)?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or(MessageError::Invalid(name))
}

impl Inbound {
    /// Read a message from its fields (XML children or JSON members).
    pub fn from_fields(f: &Fields) -> Result<Inbound, MessageError> {
        let to_user = req(f, "ToUserName")?.to_owned();
        let from_user = req(f, "FromUserName")?.to_owned();
        if from_user.len() > 128 || to_user.len() > 128 {
            return Err(MessageError::Invalid("FromUserName"));
        }
        let create_time = req(f, "CreateTime")?
            .parse::<i64>()
            .map_err(|_| MessageError::Invalid("CreateTime"))?;
        let msg_id = opt(f, "MsgId");
        if msg_id.as_ref().is_some_and(|m| m.len() > 64) {
            return Err(MessageError::Invalid("MsgId"));
        }
        let msg_type = req(f, "MsgType")?;
        let body = match msg_type {
            "text" => Body::Text {
                content: req(f, "Content")?.to_owned(),
            },
            "voice" => Body::Voice {
                media_id: opt(f, "MediaId").unwrap_or_default(),
                format: opt(f, "Format").unwrap_or_default(),
                recognition: opt(f, "Recognition"),
            },
            "image" => Body::Image {
                pic_url: req(f, "PicUrl")?.to_owned(),
                media_id: opt(f, "MediaId").unwrap_or_default(),
            },
            "location" => {
                let lat = num(f, "Location_X")?;
                let lng = num(f, "Location_Y")?;
                if !(-90.0..=90.0).contains(&lat) {
                    return Err(MessageError::Invalid("Location_X"));
                }
                if !(-180.0..=180.0).contains(&lng) {
                    return Err(MessageError::Invalid("Location_Y"));
                }
                Body::Location {
                    lat,
                    lng,
                    scale: opt(f, "Scale").and_then(|s| s.parse().ok()),
                    label: opt(f, "Label"),
                }
            }
            "link" => Body::Link {
                title: opt(f, "Title").unwrap_or_default(),
                description: opt(f, "Description").unwrap_or_default(),
                url: opt(f, "Url").unwrap_or_default(),
            },
            "event" => {
                let event = req(f, "Event")?.to_owned();
                let position = if event == "LOCATION" {
                    Some((
                        num(f, "Latitude")?,
                        num(f, "Longitude")?,
                        num(f, "Precision").unwrap_or(0.0),
                    ))
                } else {
                    None
                };
                Body::Event {
                    event,
                    key: opt(f, "EventKey"),
                    position,
                }
            }
            other => Body::Other {
                msg_type: other.chars().take(32).collect(),
            },
        };
        Ok(Inbound {
            to_user,
            from_user,
            create_time,
            msg_id,
            body,
        })
    }

    /// The text that becomes an order: a text message, or a voice message WeChat recognized.
    pub fn order_text(&self) -> Option<&str> {
        match &self.body {
            Body::Text { content } => Some(content.as_str()),
            Body::Voice {
                recognition: Some(r),
                ..
            } => Some(r.as_str()),
            _ => None,
        }
    }

    /// The key that identifies a retried delivery of this message: the MsgId, or for events
    /// (which have none) the sender and creation time, as WeChat's documentation advises.
    pub fn dedup_key(&self) -> String {
        match &self.msg_id {
            Some(id) => id.clone(),
            None => format!("{}@{}", self.from_user, self.create_time),
        }
    }

    /// A submission for the order text, if this message carries one.
    pub fn submission(&self) -> Option<Submission> {
        let text = self.order_text()?.trim();
        if text.is_empty() {
            return None;
        }
        Some(Submission::text_message(
            Channel::Wechat,
            Citizen {
                channel_user: Some(self.from_user.clone()),
                ..Citizen::default()
            },
            text,
            Source {
                wechat_msg_id: Some(self.dedup_key()),
                ..Source::default()
            },
        ))
    }
}

/// Read a mini-program JSON push (or its decrypted payload) into fields. Scalars become
/// strings; nested values are kept as empty fields, like nested XML elements.
pub fn json_fields(body: &[u8]) -> Result<Fields, MessageError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| MessageError::Json(e.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(MessageError::Json("not an object".into()));
    };
    if map.len() > 64 {
        return Err(MessageError::Json("too many members".into()));
    }
    let mut fields = Fields::new();
    for (k, v) in map {
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => String::new(),
        };
        fields.insert(k, s.trim().to_owned());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::xml;

    fn msg(x: &str) -> Inbound {
        Inbound::from_fields(&xml::parse(x.as_bytes()).expect("xml")).expect("message")
    }

    const HEAD: &str = "<ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1348831860</CreateTime>";

    #[test]
    fn every_spec_message_type_is_read() {
        let t = msg(&format!(
            "<xml>{HEAD}<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[路灯坏了]]></Content><MsgId>1234567890123456</MsgId></xml>"
        ));
        assert_eq!(t.order_text(), Some("路灯坏了"));
        let s = t.submission().expect("submission");
        assert_eq!(s.citizen.channel_user.as_deref(), Some("oUser"));
        assert_eq!(s.source.wechat_msg_id.as_deref(), Some("1234567890123456"));
        assert_eq!(s.channel, Channel::Wechat);

        let v = msg(&format!(
            "<xml>{HEAD}<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[噪音扰民]]></Recognition><MsgId>2</MsgId></xml>"
        ));
        assert_eq!(v.order_text(), Some("噪音扰民"));
        let v = msg(&format!(
            "<xml>{HEAD}<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>2</MsgId></xml>"
        ));
        assert_eq!(v.order_text(), None);

        let i = msg(&format!(
            "<xml>{HEAD}<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://mmbiz.example/p.jpg]]></PicUrl><MediaId><![CDATA[m]]></MediaId><MsgId>3</MsgId></xml>"
        ));
        assert!(matches!(i.body, Body::Image { .. }));

        let l = msg(&format!(
            "<xml>{HEAD}<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[位置信息]]></Label><MsgId>4</MsgId></xml>"
        ));
        assert_eq!(
            l.body,
            Body::Location {
                lat: 23.134521,
                lng: 113.358803,
                scale: Some(20),
                label: Some("位置信息".into())
            }
        );

        let e = msg(&format!(
            "<xml>{HEAD}<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[LOCATION]]></Event><Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision></xml>"
        ));
        assert!(matches!(
            e.body,
            Body::Event {
                position: Some(_),
                ..
            }
        ));
        assert_eq!(e.dedup_key(), "oUser@1348831860");

        let k = msg(&format!(
            "<xml>{HEAD}<MsgType><![CDATA[link]]></MsgType><Title>t</Title><Description>d</Description><Url>u</Url><MsgId>5</MsgId></xml>"
        ));
        assert!(matches!(k.body, Body::Link { .. }));
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let f = xml::parse(b"<xml><ToUserName>a</ToUserName><MsgType>text</MsgType></xml>")
            .expect("xml");
        assert_eq!(
            Inbound::from_fields(&f),
            Err(MessageError::Missing("FromUserName"))
        );
        let f = xml::parse(format!("<xml>{HEAD}<MsgType>location</MsgType><Location_X>99</Location_X><Location_Y>1</Location_Y></xml>").as_bytes()).expect("xml");
        assert_eq!(
            Inbound::from_fields(&f),
            Err(MessageError::Invalid("Location_X"))
        );
    }

    #[test]
    fn mini_program_json() {
        let f = json_fields(
            br#"{"ToUserName":"gh_mp","FromUserName":"oMp","CreateTime":1482048670,"MsgType":"text","Content":"this is a test","MsgId":1234567890123456}"#,
        )
        .expect("json");
        let m = Inbound::from_fields(&f).expect("message");
        assert_eq!(m.msg_id.as_deref(), Some("1234567890123456"));
        assert_eq!(m.order_text(), Some("this is a test"));
        assert!(json_fields(b"[1]").is_err());
        assert!(json_fields(b"{").is_err());
    }
}
