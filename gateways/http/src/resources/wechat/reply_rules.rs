//! Auto-reply rules: the welcome reply, the default reply and keyword rules
//! (tag `wechat`). Saved as a whole; every save is a new revision.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::wechat::{self as uc, KeywordRule, MatchMode, NewsArticle, ReplyContent, ReplyRules};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleDto {
    /// 1..=512 characters, not only whitespace, no NUL.
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = "^[^\\x00]*[^\\x00\\t\\n\\x0B\\x0C\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00]*$"
    )]
    pub title: String,
    /// At most 512 characters, no NUL.
    #[serde(default)]
    #[schema(max_length = 512, pattern = "^[^\\x00]*$")]
    pub description: String,
    /// At most 512 characters, no NUL.
    #[serde(default)]
    #[schema(max_length = 512, pattern = "^[^\\x00]*$")]
    pub pic_url: String,
    /// At most 512 characters, no NUL.
    #[serde(default)]
    #[schema(max_length = 512, pattern = "^[^\\x00]*$")]
    pub url: String,
}

/// A reply: text (1..=2048 bytes) or news (1..=8 articles).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyDto {
    Text {
        /// Not only whitespace, no NUL, at most 2048 bytes of UTF-8 (2048 ASCII characters, fewer others).
        #[schema(
            min_length = 1,
            max_length = 2048,
            pattern = "^[^\\x00]*[^\\x00\\t\\n\\x0B\\x0C\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00]*$"
        )]
        content: String,
    },
    News {
        #[schema(min_items = 1, max_items = 8)]
        articles: Vec<ArticleDto>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchDto {
    /// The whole message equals a keyword (case-insensitive, trimmed).
    Exact,
    /// The message contains a keyword.
    Contains,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeywordRuleDto {
    /// 1..=10 keywords of 1..=30 characters (no control characters, not only whitespace).
    #[schema(min_items = 1, max_items = 10, value_type = Vec<crate::doc::Keyword>)]
    pub keywords: Vec<String>,
    #[serde(rename = "match")]
    pub mode: MatchDto,
    pub reply: ReplyDto,
}

/// The whole rule set: the welcome reply, the default reply, keyword rules
/// tried in order (the first match wins; at most 200).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRulesBody {
    #[serde(default)]
    pub subscribe: Option<ReplyDto>,
    #[serde(default)]
    pub default: Option<ReplyDto>,
    #[serde(default)]
    #[schema(max_items = 200)]
    pub keywords: Vec<KeywordRuleDto>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplyRulesDto {
    pub rules: ReplyRulesBody,
    /// Increases with every save; 0 before the first.
    pub revision: i64,
}

impl From<ReplyDto> for ReplyContent {
    fn from(r: ReplyDto) -> Self {
        match r {
            ReplyDto::Text { content } => ReplyContent::Text { content },
            ReplyDto::News { articles } => ReplyContent::News {
                articles: articles
                    .into_iter()
                    .map(|a| NewsArticle { title: a.title, description: a.description, pic_url: a.pic_url, url: a.url })
                    .collect(),
            },
        }
    }
}

impl From<ReplyContent> for ReplyDto {
    fn from(r: ReplyContent) -> Self {
        match r {
            ReplyContent::Text { content } => ReplyDto::Text { content },
            ReplyContent::News { articles } => ReplyDto::News {
                articles: articles
                    .into_iter()
                    .map(|a| ArticleDto { title: a.title, description: a.description, pic_url: a.pic_url, url: a.url })
                    .collect(),
            },
        }
    }
}

impl ReplyRulesBody {
    /// The rules, checked (`invalid_reply_rules` with the rule that fails).
    pub fn validate(self) -> Result<ReplyRules, ApiError> {
        let rules = ReplyRules {
            subscribe: self.subscribe.map(Into::into),
            default: self.default.map(Into::into),
            keywords: self
                .keywords
                .into_iter()
                .map(|k| KeywordRule {
                    keywords: k.keywords,
                    mode: match k.mode {
                        MatchDto::Exact => MatchMode::Exact,
                        MatchDto::Contains => MatchMode::Contains,
                    },
                    reply: k.reply.into(),
                })
                .collect(),
        };
        rules.validate().map_err(|e| ApiError::invalid("invalid_reply_rules", e.to_string()))?;
        Ok(rules)
    }
}

impl From<ReplyRules> for ReplyRulesBody {
    fn from(r: ReplyRules) -> Self {
        Self {
            subscribe: r.subscribe.map(Into::into),
            default: r.default.map(Into::into),
            keywords: r
                .keywords
                .into_iter()
                .map(|k| KeywordRuleDto {
                    keywords: k.keywords,
                    mode: match k.mode {
                        MatchMode::Exact => MatchDto::Exact,
                        MatchMode::Contains => MatchDto::Contains,
                    },
                    reply: k.reply.into(),
                })
                .collect(),
        }
    }
}

/// The auto-reply rules (empty with revision 0 before the first save).
#[utoipa::path(get, path = "/admin/api/v1/wechat/reply-rules", tag = "wechat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rules and their revision", body = ReplyRulesDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_reply_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
) -> Result<Json<ReplyRulesDto>, ApiError> {
    let (rules, revision) = uc::reply_rules(&state.app, &auth.session.tenant_id).await?;
    Ok(Json(ReplyRulesDto { rules: rules.into(), revision }))
}

/// Replaces the whole rule set; answers with the new revision.
#[utoipa::path(put, path = "/admin/api/v1/wechat/reply-rules", tag = "wechat",
    security(("bearer" = [])),
    request_body = ReplyRulesBody,
    responses(
        (status = 200, description = "Saved", body = ReplyRulesDto),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_reply_rules`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn put_reply_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    body: ApiJson<ReplyRulesBody>,
) -> Result<Json<ReplyRulesDto>, ApiError> {
    let rules = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let revision = uc::save_reply_rules(&state.app, tenant, &rules, &auth.actor().label()).await?;
    tracing::info!(revision, keyword_rules = rules.keywords.len(), "reply rules saved");
    Ok(Json(ReplyRulesDto { rules: rules.into(), revision }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reply_rules_round_trip_and_are_validated() {
        let body: ReplyRulesBody = serde_json::from_value(json!({
            "subscribe": {"type": "text", "content": "welcome"},
            "keywords": [{"keywords": ["points"], "match": "contains", "reply": {"type": "text", "content": "100"}}]
        }))
        .unwrap();
        let rules = body.validate().unwrap();
        assert_eq!(rules.keywords.len(), 1);
        let back = serde_json::to_value(ReplyRulesBody::from(rules)).unwrap();
        assert_eq!(back["keywords"][0]["match"], "contains");
        let empty_text: ReplyRulesBody =
            serde_json::from_value(json!({"default": {"type": "text", "content": ""}})).unwrap();
        assert_eq!(empty_text.validate().err().unwrap().code(), "invalid_reply_rules");
    }
}
