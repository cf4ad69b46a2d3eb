//! Passive replies to a callback, plain and encrypted.
//!
//! WeChat shows the member "this account cannot provide service" for
//! anything but a well-formed reply, `success` or an empty body, so every
//! value goes into CDATA (split safely by [`write_cdata`]) and "no reply" is
//! [`NO_REPLY`], never encrypted.

use super::crypto::{msg_signature, CryptoError, MsgCrypt};
use super::xml::{write_cdata, write_text};

/// The body meaning "no reply"; sent as is, also in safe mode.
pub const NO_REPLY: &str = "success";
/// Most articles a news reply may carry.
pub const NEWS_ARTICLES_MAX: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("a news reply carries 1..={max} articles, not {count}")]
    ArticleCount { count: usize, max: usize },
}

/// One article of a news reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub description: String,
    pub pic_url: String,
    pub url: String,
}

/// A text reply. `to_user` is the member's openid, `from_user` the account's
/// original id: the inbound header with the two swapped.
pub fn text_reply(to_user: &str, from_user: &str, create_time: i64, content: &str) -> String {
    let mut out = reply_head(to_user, from_user, create_time, "text");
    out.push_str("<Content>");
    write_cdata(&mut out, content);
    out.push_str("</Content></xml>");
    out
}

/// A news (articles) reply with 1..=8 articles.
pub fn news_reply(
    to_user: &str,
    from_user: &str,
    create_time: i64,
    articles: &[Article],
) -> Result<String, ReplyError> {
    if articles.is_empty() || articles.len() > NEWS_ARTICLES_MAX {
        return Err(ReplyError::ArticleCount { count: articles.len(), max: NEWS_ARTICLES_MAX });
    }
    let mut out = reply_head(to_user, from_user, create_time, "news");
    out.push_str(&format!("<ArticleCount>{}</ArticleCount><Articles>", articles.len()));
    for article in articles {
        out.push_str("<item><Title>");
        write_cdata(&mut out, &article.title);
        out.push_str("</Title><Description>");
        write_cdata(&mut out, &article.description);
        out.push_str("</Description><PicUrl>");
        write_cdata(&mut out, &article.pic_url);
        out.push_str("</PicUrl><Url>");
        write_cdata(&mut out, &article.url);
        out.push_str("</Url></item>");
    }
    out.push_str("</Articles></xml>");
    Ok(out)
}

fn reply_head(to_user: &str, from_user: &str, create_time: i64, msg_type: &str) -> String {
    let mut out = String::from("<xml><ToUserName>");
    write_cdata(&mut out, to_user);
    out.push_str("</ToUserName><FromUserName>");
    write_cdata(&mut out, from_user);
    out.push_str(&format!("</FromUserName><CreateTime>{create_time}</CreateTime><MsgType>"));
    write_cdata(&mut out, msg_type);
    out.push_str("</MsgType>");
    out
}

/// The safe-mode envelope around a reply: `Encrypt`, `MsgSignature` over
/// (token, timestamp, nonce, Encrypt), `TimeStamp`, `Nonce`. `random16` is
/// the crypt's random prefix (fresh in production, fixed in tests).
pub fn encrypted_reply(
    crypt: &MsgCrypt,
    token: &str,
    timestamp: &str,
    nonce: &str,
    reply_xml: &str,
    random16: [u8; 16],
) -> Result<String, CryptoError> {
    let encrypt = crypt.encrypt(reply_xml, random16)?;
    Ok(envelope(&encrypt, &msg_signature(token, timestamp, nonce, &encrypt), timestamp, nonce))
}

/// [`encrypted_reply`] with fresh random bytes.
pub fn encrypted_reply_random(
    crypt: &MsgCrypt,
    token: &str,
    timestamp: &str,
    nonce: &str,
    reply_xml: &str,
) -> Result<String, CryptoError> {
    encrypted_reply(crypt, token, timestamp, nonce, reply_xml, rand::random())
}

fn envelope(encrypt: &str, signature: &str, timestamp: &str, nonce: &str) -> String {
    let mut out = String::from("<xml><Encrypt>");
    write_cdata(&mut out, encrypt);
    out.push_str("</Encrypt><MsgSignature>");
    write_cdata(&mut out, signature);
    out.push_str("</MsgSignature><TimeStamp>");
    write_text(&mut out, timestamp);
    out.push_str("</TimeStamp><Nonce>");
    write_cdata(&mut out, nonce);
    out.push_str("</Nonce></xml>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::crypto::{verify_hex, AesKey};
    use crate::wechat::message::encrypted_payload;
    use crate::wechat::xml::{parse, XmlLimits};

    fn doc(body: &str) -> crate::wechat::xml::XmlDoc {
        parse(body.as_bytes(), &XmlLimits::default()).unwrap()
    }

    #[test]
    fn text_reply_parses_back() {
        let reply = text_reply("o_member", "gh_account", 1_700_000_000, "points: 10 ]]> <b>&");
        let parsed = doc(&reply);
        assert_eq!(parsed.get("ToUserName"), Some("o_member"));
        assert_eq!(parsed.get("FromUserName"), Some("gh_account"));
        assert_eq!(parsed.get("CreateTime"), Some("1700000000"));
        assert_eq!(parsed.get("MsgType"), Some("text"));
        assert_eq!(parsed.get("Content"), Some("points: 10 ]]> <b>&"));
    }

    #[test]
    fn news_reply_carries_one_to_eight_articles() {
        let article = |i: usize| Article {
            title: format!("title {i}"),
            description: "d".into(),
            pic_url: "https://example.com/p.png".into(),
            url: "https://example.com/a?x=1&y=2".into(),
        };
        let articles: Vec<Article> = (0..NEWS_ARTICLES_MAX + 1).map(article).collect();
        let reply = news_reply("o", "gh", 1, &articles[..NEWS_ARTICLES_MAX]).unwrap();
        // Eight items plus the header: within the reader's default limits.
        let parsed = doc(&reply);
        assert_eq!(parsed.get("ArticleCount"), Some("8"));
        assert_eq!(parsed.get("Articles/item/Title"), Some("title 0"));
        assert_eq!(parsed.get("Articles/item/Url"), Some("https://example.com/a?x=1&y=2"));
        assert_eq!(parsed.fields.iter().filter(|(path, _)| path == "Articles/item/Title").count(), 8);
        assert_eq!(
            news_reply("o", "gh", 1, &articles),
            Err(ReplyError::ArticleCount { count: NEWS_ARTICLES_MAX + 1, max: NEWS_ARTICLES_MAX })
        );
        assert_eq!(news_reply("o", "gh", 1, &[]), Err(ReplyError::ArticleCount { count: 0, max: NEWS_ARTICLES_MAX }));
    }

    #[test]
    fn encrypted_reply_verifies_and_decrypts() {
        let key = AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        let crypt = MsgCrypt::new(key, "wxb11529c136998cb6").unwrap();
        let inner = text_reply("o_member", "gh_account", 1, "hi");
        let reply = encrypted_reply(&crypt, "pamtest", "1458300676", "260774613", &inner, [3; 16]).unwrap();
        let parsed = doc(&reply);
        let encrypt = encrypted_payload(&parsed).unwrap();
        assert_eq!(parsed.get("TimeStamp"), Some("1458300676"));
        assert_eq!(parsed.get("Nonce"), Some("260774613"));
        let expected = msg_signature("pamtest", "1458300676", "260774613", encrypt);
        assert!(verify_hex(&expected, parsed.get("MsgSignature").unwrap()));
        assert_eq!(crypt.decrypt(encrypt).unwrap(), inner);
        let random = encrypted_reply_random(&crypt, "pamtest", "1", "n", &inner).unwrap();
        assert_eq!(crypt.decrypt(encrypted_payload(&doc(&random)).unwrap()).unwrap(), inner);
    }

    #[test]
    fn no_reply_is_success() {
        assert_eq!(NO_REPLY, "success");
    }
}
