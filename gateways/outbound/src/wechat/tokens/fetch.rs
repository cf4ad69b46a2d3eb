//! The WeChat calls that mint tokens, over [`WechatHttp`].

use async_trait::async_trait;
use serde_json::json;

use crate::wechat::error::WechatError;
use crate::wechat::http::{i64_field, str_field, Request, WechatHttp};

use super::*;

fn fetched(value: &serde_json::Value, token_field: &str) -> Result<Fetched, WechatError> {
    Ok(Fetched { value: str_field(value, token_field)?, expires_in_secs: i64_field(value, "expires_in")? })
}

#[async_trait]
impl TokenFetcher for WechatHttp {
    async fn access_token(&self, appid: &str, secret: &str) -> Result<Fetched, WechatError> {
        let req = Request::get("/cgi-bin/token")
            .query("grant_type", "client_credential")
            .query("appid", appid)
            .query("secret", secret);
        fetched(&self.call_json(appid, &req).await?, "access_token")
    }

    async fn component_token(&self, component_appid: &str, secret: &str, ticket: &str) -> Result<Fetched, WechatError> {
        let req = Request::post(
            "/cgi-bin/component/api_component_token",
            json!({"component_appid": component_appid, "component_appsecret": secret, "component_verify_ticket": ticket}),
        );
        fetched(&self.call_json(component_appid, &req).await?, "component_access_token")
    }

    async fn authorizer_token(
        &self,
        component_token: &str,
        component_appid: &str,
        authorizer_appid: &str,
        refresh_token: &str,
    ) -> Result<(Fetched, String), WechatError> {
        let req = Request::post(
            "/cgi-bin/component/api_authorizer_token",
            json!({"component_appid": component_appid, "authorizer_appid": authorizer_appid,
                   "authorizer_refresh_token": refresh_token}),
        )
        .query("component_access_token", component_token);
        let v = self.call_json(authorizer_appid, &req).await?;
        Ok((fetched(&v, "authorizer_access_token")?, str_field(&v, "authorizer_refresh_token")?))
    }

    async fn jsapi_ticket(&self, appid: &str, access_token: &str) -> Result<Fetched, WechatError> {
        let req = Request::get("/cgi-bin/ticket/getticket").query("access_token", access_token).query("type", "jsapi");
        fetched(&self.call_json(appid, &req).await?, "ticket")
    }

    async fn query_auth(
        &self,
        component_token: &str,
        component_appid: &str,
        authorization_code: &str,
    ) -> Result<Authorization, WechatError> {
        let req = Request::post(
            "/cgi-bin/component/api_query_auth",
            json!({"component_appid": component_appid, "authorization_code": authorization_code}),
        )
        .query("component_access_token", component_token);
        let v = self.call_json(component_appid, &req).await?;
        let info =
            v.get("authorization_info").ok_or_else(|| WechatError::Decode("missing authorization_info".into()))?;
        Ok(Authorization {
            authorizer_appid: str_field(info, "authorizer_appid")?,
            access_token: fetched(info, "authorizer_access_token")?,
            refresh_token: str_field(info, "authorizer_refresh_token")?,
        })
    }
}
