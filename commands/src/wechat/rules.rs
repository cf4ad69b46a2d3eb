//! Auto-reply rules: the subscribe (welcome) reply, keyword rules and the
//! default reply. Keyword rules are tried in order and the first that matches
//! wins; matching is case-insensitive on trimmed text.

use serde::{Deserialize, Serialize};

pub const KEYWORD_RULES_MAX: usize = 200;
pub const KEYWORDS_PER_RULE_MAX: usize = 10;
/// WeChat's own keyword limit in the MP console.
pub const KEYWORD_LEN_MAX: usize = 30;
/// A passive text reply may carry at most 2048 bytes of content.
pub const REPLY_TEXT_BYTES_MAX: usize = 2048;
/// WeChat shows at most 8 articles in a news reply.
pub const NEWS_ARTICLES_MAX: usize = 8;
pub const ARTICLE_FIELD_LEN_MAX: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// The whole message equals the keyword (WeChat's 全匹配).
    Exact,
    /// The message contains the keyword (半匹配).
    Contains,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewsArticle {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub pic_url: String,
    #[serde(default)]
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyContent {
    Text { content: String },
    News { articles: Vec<NewsArticle> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordRule {
    pub keywords: Vec<String>,
    #[serde(rename = "match")]
    pub mode: MatchMode,
    pub reply: ReplyContent,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRules {
    #[serde(default)]
    pub subscribe: Option<ReplyContent>,
    #[serde(default)]
    pub default: Option<ReplyContent>,
    #[serde(default)]
    pub keywords: Vec<KeywordRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("at most {KEYWORD_RULES_MAX} keyword rules")]
    TooManyRules,
    #[error("keyword rule {0}: 1..={KEYWORDS_PER_RULE_MAX} keywords required")]
    KeywordCount(usize),
    #[error("keyword rule {0}: keywords must be 1..={KEYWORD_LEN_MAX} characters without control characters")]
    BadKeyword(usize),
    #[error("{0}: text replies must be 1..={REPLY_TEXT_BYTES_MAX} bytes")]
    BadText(String),
    #[error("{0}: news replies need 1..={NEWS_ARTICLES_MAX} articles with a title and fields of at most {ARTICLE_FIELD_LEN_MAX} characters")]
    BadNews(String),
}

impl ReplyContent {
    fn validate(&self, at: &str) -> Result<(), RulesError> {
        match self {
            ReplyContent::Text { content } => {
                // NUL: PostgreSQL's jsonb cannot hold it, and no WeChat client shows it.
                if content.trim().is_empty() || content.len() > REPLY_TEXT_BYTES_MAX || content.contains('\0') {
                    return Err(RulesError::BadText(at.to_owned()));
                }
            }
            ReplyContent::News { articles } => {
                let field_ok = |s: &str| s.chars().count() <= ARTICLE_FIELD_LEN_MAX && !s.contains('\0');
                let ok = (1..=NEWS_ARTICLES_MAX).contains(&articles.len())
                    && articles.iter().all(|a| {
                        !a.title.trim().is_empty()
                            && field_ok(&a.title)
                            && field_ok(&a.description)
                            && field_ok(&a.pic_url)
                            && field_ok(&a.url)
                    });
                if !ok {
                    return Err(RulesError::BadNews(at.to_owned()));
                }
            }
        }
        Ok(())
    }
}

fn normalize(text: &str) -> String {
    text.trim().to_lowercase()
}

impl ReplyRules {
    pub fn validate(&self) -> Result<(), RulesError> {
        if self.keywords.len() > KEYWORD_RULES_MAX {
            return Err(RulesError::TooManyRules);
        }
        if let Some(r) = &self.subscribe {
            r.validate("subscribe")?;
        }
        if let Some(r) = &self.default {
            r.validate("default")?;
        }
        for (i, rule) in self.keywords.iter().enumerate() {
            if rule.keywords.is_empty() || rule.keywords.len() > KEYWORDS_PER_RULE_MAX {
                return Err(RulesError::KeywordCount(i));
            }
            for k in &rule.keywords {
                let len = k.trim().chars().count();
                if len == 0 || k.chars().count() > KEYWORD_LEN_MAX || k.chars().any(char::is_control) {
                    return Err(RulesError::BadKeyword(i));
                }
            }
            rule.reply.validate(&format!("keyword rule {i}"))?;
        }
        Ok(())
    }

    /// The first keyword rule that matches `text`, if any.
    pub fn keyword_reply(&self, text: &str) -> Option<&ReplyContent> {
        let text = normalize(text);
        if text.is_empty() {
            return None;
        }
        self.keywords
            .iter()
            .find(|rule| {
                rule.keywords.iter().any(|k| {
                    let k = normalize(k);
                    match rule.mode {
                        MatchMode::Exact => text == k,
                        MatchMode::Contains => text.contains(&k),
                    }
                })
            })
            .map(|rule| &rule.reply)
    }

    /// The keyword reply, else the default reply.
    pub fn reply_to(&self, text: &str) -> Option<&ReplyContent> {
        self.keyword_reply(text).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ReplyContent {
        ReplyContent::Text { content: s.to_owned() }
    }

    fn rules() -> ReplyRules {
        ReplyRules {
            subscribe: Some(text("welcome")),
            default: Some(text("default")),
            keywords: vec![
                KeywordRule { keywords: vec!["Hours".into()], mode: MatchMode::Exact, reply: text("9 to 5") },
                KeywordRule {
                    keywords: vec!["film".into(), "movie".into()],
                    mode: MatchMode::Contains,
                    reply: text("films"),
                },
                KeywordRule { keywords: vec!["hours today".into()], mode: MatchMode::Contains, reply: text("never") },
            ],
        }
    }

    #[test]
    fn exact_rules_match_the_whole_message_case_insensitively() {
        let r = rules();
        assert_eq!(r.keyword_reply("  hOURs "), Some(&text("9 to 5")));
        assert_eq!(r.keyword_reply("opening hours"), None);
    }

    #[test]
    fn contains_rules_match_inside_and_the_first_rule_wins() {
        let r = rules();
        assert_eq!(r.keyword_reply("Which MOVIE tonight?"), Some(&text("films")));
        // "hours today" contains "hours" but the exact rule needs the whole message; the
        // contains rule 3 matches.
        assert_eq!(r.keyword_reply("hours today?"), Some(&text("never")));
        let mut first_wins = rules();
        first_wins
            .keywords
            .insert(0, KeywordRule { keywords: vec!["movie".into()], mode: MatchMode::Contains, reply: text("first") });
        assert_eq!(first_wins.keyword_reply("a movie"), Some(&text("first")));
    }

    #[test]
    fn unmatched_text_gets_the_default_reply() {
        let r = rules();
        assert_eq!(r.reply_to("hello"), Some(&text("default")));
        assert_eq!(ReplyRules::default().reply_to("hello"), None);
        assert_eq!(r.keyword_reply("   "), None);
    }

    #[test]
    fn validation_bounds_every_part() {
        assert_eq!(rules().validate(), Ok(()));
        let mut r = rules();
        r.keywords[0].keywords = vec![];
        assert_eq!(r.validate(), Err(RulesError::KeywordCount(0)));
        let mut r = rules();
        r.keywords[1].keywords.push("x".repeat(KEYWORD_LEN_MAX + 1));
        assert_eq!(r.validate(), Err(RulesError::BadKeyword(1)));
        let mut r = rules();
        r.keywords[1].keywords.push("a\u{0}b".into());
        assert_eq!(r.validate(), Err(RulesError::BadKeyword(1)));
        let mut r = rules();
        r.default = Some(text(""));
        assert!(matches!(r.validate(), Err(RulesError::BadText(_))));
        let mut r = rules();
        r.subscribe = Some(text(&"字".repeat(REPLY_TEXT_BYTES_MAX)));
        assert!(matches!(r.validate(), Err(RulesError::BadText(_))));
        let mut r = rules();
        r.default = Some(ReplyContent::News { articles: vec![] });
        assert!(matches!(r.validate(), Err(RulesError::BadNews(_))));
        let mut r = rules();
        let article =
            NewsArticle { title: "t".into(), description: String::new(), pic_url: String::new(), url: String::new() };
        r.default = Some(ReplyContent::News { articles: vec![article; NEWS_ARTICLES_MAX + 1] });
        assert!(matches!(r.validate(), Err(RulesError::BadNews(_))));
        let mut r = rules();
        r.keywords = vec![r.keywords[0].clone(); KEYWORD_RULES_MAX + 1];
        assert_eq!(r.validate(), Err(RulesError::TooManyRules));
    }

    #[test]
    fn rules_round_trip_as_json() {
        let r = rules();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["keywords"][0]["match"], "exact");
        assert_eq!(json["subscribe"]["type"], "text");
        assert_eq!(serde_json::from_value::<ReplyRules>(json).unwrap(), r);
    }
}
