//! The admin API's routes as one table: every route is registered through
//! [`AdminRoutes`], which records (method, path, access) beside the handler,
//! so the router and the table cannot differ. Every route but the public ones
//! (login) sits behind [`crate::middleware::require_session`]: a handler added
//! without its `Authorized<P>` extractor is still not public. The router tests
//! walk this table (checked equal to the OpenAPI document) for every role.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::permissions::Permission;
use crate::resources::wechat::{authorization, menus, points_rules, qr_codes, reply_rules};
use crate::resources::{
    admin_users, campaigns, card_levels, commissions, coupons, distribution, ledger, mall, members, operation_log,
    payments, referral, reports, session, tenant,
};
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No session needed (login).
    Public,
    /// Any live session of any role (logout, own password).
    AnySession,
    /// A live session whose role has the permission.
    Needs(Permission),
}

/// One admin route as registered; `path` is relative to [`crate::ADMIN_API_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// Idempotent by key through [`crate::middleware::replay_by_key`] (writes
    /// that are not events); event writes are idempotent in their use cases.
    pub keyed_by_layer: bool,
}

/// Builds the admin router and its table together.
pub(crate) struct AdminRoutes {
    protected: Router<AppState>,
    public: Router<AppState>,
    #[cfg_attr(not(test), allow(dead_code))]
    table: Vec<AdminRoute>,
}

impl AdminRoutes {
    fn new() -> Self {
        Self { protected: Router::new(), public: Router::new(), table: Vec::new() }
    }

    fn add<H, T>(mut self, method: Method, filter: MethodFilter, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let route = on(filter, handler);
        match access {
            Access::Public => self.public = self.public.route(path, route),
            Access::AnySession | Access::Needs(_) => self.protected = self.protected.route(path, route),
        }
        self.table.push(AdminRoute { method, path, access, keyed_by_layer: false });
        self
    }

    /// Makes the route just added idempotent by key in the replay layer.
    fn keyed(mut self) -> Self {
        if let Some(route) = self.table.last_mut() {
            route.keyed_by_layer = true;
        }
        self
    }

    fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, access: Access, handler: H) -> Self {
        self.add(Method::GET, MethodFilter::GET, path, access, handler)
    }

    fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, access: Access, handler: H) -> Self {
        self.add(Method::POST, MethodFilter::POST, path, access, handler)
    }

    /// A POST whose body may be larger than the configured limit, up to `bytes_max`: a body
    /// whose every part is bounded by its own rule (the dispatch's 10,000 member ids).
    fn post_large<H: Handler<T, AppState>, T: 'static>(
        mut self,
        path: &'static str,
        access: Access,
        bytes_max: usize,
        handler: H,
    ) -> Self {
        let route = on(MethodFilter::POST, handler).layer(axum::extract::DefaultBodyLimit::max(bytes_max));
        match access {
            Access::Public => self.public = self.public.route(path, route),
            Access::AnySession | Access::Needs(_) => self.protected = self.protected.route(path, route),
        }
        self.table.push(AdminRoute { method: Method::POST, path, access, keyed_by_layer: false });
        self
    }

    fn put<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, access: Access, handler: H) -> Self {
        self.add(Method::PUT, MethodFilter::PUT, path, access, handler)
    }

    /// The router: protected routes behind the session layer, public ones beside them.
    pub(crate) fn into_router(self, state: AppState) -> Router<AppState> {
        let keyed: std::collections::HashMap<(Method, String), Option<Permission>> = self
            .table
            .iter()
            .filter(|r| r.keyed_by_layer)
            .map(|r| {
                let permission = match r.access {
                    Access::Needs(p) => Some(p),
                    Access::Public | Access::AnySession => None,
                };
                ((r.method.clone(), format!("{}{}", crate::ADMIN_API_PREFIX, r.path)), permission)
            })
            .collect();
        let replay = axum::middleware::from_fn_with_state(
            (state.clone(), std::sync::Arc::new(keyed)),
            crate::middleware::replay_by_key,
        );
        let session = axum::middleware::from_fn_with_state(state, crate::middleware::require_session);
        // `route_layer`: only matched routes are guarded, so an unknown path is still 404.
        // The last layer added runs first: the session (401) before the key (400).
        self.protected.route_layer(replay).route_layer(session).merge(self.public)
    }

    #[cfg(test)]
    pub(crate) fn table(&self) -> &[AdminRoute] {
        &self.table
    }
}

/// Every admin route, with the access its handler's `Authorized<P>` demands.
pub(crate) fn admin_routes() -> AdminRoutes {
    use Access::{AnySession, Needs, Public};
    use Permission as P;
    AdminRoutes::new()
        .post("/login", Public, session::login)
        .post("/logout", AnySession, session::logout)
        .get("/session", AnySession, session::current_session)
        .put("/me/password", AnySession, admin_users::change_own_password)
        .get("/admin-users", Needs(P::AdminUsers), admin_users::list_admin_users)
        .post("/admin-users", Needs(P::AdminUsers), admin_users::create_admin_user)
        .put("/admin-users/{username}/role", Needs(P::AdminUsers), admin_users::set_admin_user_role)
        .post("/admin-users/{username}/disable", Needs(P::AdminUsers), admin_users::disable_admin_user)
        .post("/admin-users/{username}/enable", Needs(P::AdminUsers), admin_users::enable_admin_user)
        .post("/admin-users/{username}/password-reset", Needs(P::AdminUsers), admin_users::reset_admin_user_password)
        .get("/members", Needs(P::MemberRead), members::list_members)
        .post("/members", Needs(P::MemberRegister), members::register_member)
        .get("/members/{member_id}", Needs(P::MemberRead), members::get_member)
        .get("/members/{member_id}/audit", Needs(P::LedgerRead), members::audit_member)
        .get("/members/by-card/{card_no}", Needs(P::MemberRead), members::get_member_by_card)
        .get("/members/by-openid/{openid}", Needs(P::MemberRead), members::get_member_by_openid)
        .post("/members/card-code-lookups", Needs(P::MemberRead), members::lookup_card_code)
        .post("/members/{member_id}/points/grants", Needs(P::PointsGrant), ledger::grant_points)
        .post("/members/{member_id}/points/deductions", Needs(P::PointsDeduct), ledger::deduct_points)
        .post("/members/{member_id}/cash/deposits", Needs(P::CashDeposit), ledger::deposit_cash)
        .post("/members/{member_id}/cash/charges", Needs(P::CashCharge), ledger::charge_cash)
        .post("/members/{member_id}/cash/refunds", Needs(P::CashRefund), ledger::refund_charge)
        .put("/members/{member_id}/card-level", Needs(P::CardLevelSet), ledger::set_card_level)
        .get("/members/{member_id}/ledger", Needs(P::LedgerRead), ledger::ledger)
        .get("/members/{member_id}/referral-link", Needs(P::WechatRead), referral::referral_link)
        .get("/members/{member_id}/coupons", Needs(P::CouponRead), coupons::member_coupons)
        .get("/card-levels", Needs(P::MemberRead), card_levels::get_card_levels)
        .put("/card-levels", Needs(P::CardLevelSettings), card_levels::put_card_levels)
        .get("/reports/daily-ops", Needs(P::ReportRead), reports::daily_ops)
        .get("/operation-log", Needs(P::OperationLogRead), operation_log::list_operations)
        .get("/payments", Needs(P::PaymentRead), payments::list_payments)
        .get("/payments/{order_id}", Needs(P::PaymentRead), payments::get_payment)
        .get("/tenant", Needs(P::TenantRead), tenant::get_tenant)
        .put("/tenant/official-accounts/{appid}", Needs(P::TenantSettings), tenant::bind_official_account)
        .get("/tenant/points-rules", Needs(P::WechatRead), points_rules::get_points_rules)
        .put("/tenant/points-rules", Needs(P::WechatSettings), points_rules::put_points_rules)
        .get("/wechat/reply-rules", Needs(P::WechatRead), reply_rules::get_reply_rules)
        .put("/wechat/reply-rules", Needs(P::WechatSettings), reply_rules::put_reply_rules)
        .keyed()
        .get("/wechat/qrcodes", Needs(P::WechatRead), qr_codes::list_qr_codes)
        .post("/wechat/qrcodes", Needs(P::WechatSettings), qr_codes::create_qr_code)
        .keyed()
        .get("/wechat/menus/{appid}", Needs(P::WechatRead), menus::get_menu)
        .put("/wechat/menus/{appid}", Needs(P::WechatSettings), menus::put_menu)
        .keyed()
        .post("/wechat/menus/{appid}/publish", Needs(P::WechatSettings), menus::publish_menu)
        .keyed()
        .post("/wechat/component/authorizations", Needs(P::TenantSettings), authorization::start_authorization)
        .keyed()
        .get("/coupon-templates", Needs(P::CouponRead), coupons::list_templates)
        .post("/coupon-templates", Needs(P::CouponSettings), coupons::create_template)
        .get("/coupon-templates/{template_id}", Needs(P::CouponRead), coupons::get_template)
        .get("/coupon-templates/{template_id}/coupons", Needs(P::CouponRead), coupons::template_coupons)
        .put("/coupon-templates/{template_id}/terms", Needs(P::CouponSettings), coupons::put_terms)
        .put("/coupon-templates/{template_id}/stock", Needs(P::CouponSettings), coupons::put_stock)
        .put("/coupon-templates/{template_id}/enabled", Needs(P::CouponSettings), coupons::put_enabled)
        .put("/coupon-templates/{template_id}/welcome", Needs(P::CouponSettings), coupons::put_welcome)
        .post("/coupon-templates/{template_id}/grants", Needs(P::CouponGrant), coupons::grant)
        .post_large(
            "/coupon-templates/{template_id}/dispatches",
            Needs(P::CouponGrant),
            coupons::DISPATCH_BODY_BYTES_MAX,
            coupons::start_dispatch,
        )
        .get("/coupon-dispatches/{job_id}", Needs(P::CouponRead), coupons::get_dispatch)
        .post("/coupons/redemptions", Needs(P::CouponRedeem), coupons::redeem)
        .get("/coupons/{coupon_id}", Needs(P::CouponRead), coupons::get_coupon)
        .post("/coupons/{coupon_id}/void", Needs(P::CouponVoid), coupons::void_coupon)
        .get("/mall/products", Needs(P::MallRead), mall::list_products)
        .post("/mall/products", Needs(P::MallSettings), mall::create_product)
        .get("/mall/products/{product_id}", Needs(P::MallRead), mall::get_product)
        .put("/mall/products/{product_id}/listing", Needs(P::MallSettings), mall::put_listing)
        .put("/mall/products/{product_id}/price", Needs(P::MallSettings), mall::put_price)
        .put("/mall/products/{product_id}/stock", Needs(P::MallSettings), mall::put_stock)
        .put("/mall/products/{product_id}/member-limit", Needs(P::MallSettings), mall::put_member_limit)
        .put("/mall/products/{product_id}/gift-coupon", Needs(P::MallSettings), mall::put_gift_coupon)
        .put("/mall/products/{product_id}/commission", Needs(P::MallSettings), mall::put_commission)
        .put("/mall/products/{product_id}/on-sale", Needs(P::MallSettings), mall::put_on_sale)
        .get("/mall/orders", Needs(P::MallRead), mall::list_orders)
        .get("/mall/orders/{mall_order_id}", Needs(P::MallRead), mall::get_order)
        .post("/mall/orders/{mall_order_id}/refund", Needs(P::MallRefund), mall::refund_order)
        .post("/mall/orders/{mall_order_id}/refund-request/approve", Needs(P::MallRefund), mall::approve_refund_request)
        .post("/mall/orders/{mall_order_id}/refund-request/reject", Needs(P::MallRefund), mall::reject_refund_request)
        .post("/mall/orders/{mall_order_id}/price", Needs(P::MallRefund), mall::change_order_price)
        .get("/mall/orders/{mall_order_id}/commissions", Needs(P::DistributionRead), commissions::order_commissions)
        .post("/mall/deliveries", Needs(P::MallDeliver), mall::deliver)
        .get("/campaigns", Needs(P::CampaignRead), campaigns::list_campaigns)
        .post("/campaigns", Needs(P::CampaignManage), campaigns::create_campaign)
        .post("/periodic-campaigns", Needs(P::CampaignManage), campaigns::create_periodic_campaign)
        .post("/popularity-campaigns", Needs(P::CampaignManage), campaigns::create_popularity_campaign)
        .post("/snatch-campaigns", Needs(P::CampaignManage), campaigns::create_snatch_campaign)
        .get("/campaigns/{campaign_id}", Needs(P::CampaignRead), campaigns::get_campaign)
        .get("/campaigns/{campaign_id}/report", Needs(P::CampaignRead), campaigns::campaign_report)
        .get("/campaigns/{campaign_id}/draw-audit", Needs(P::CampaignRead), campaigns::draw_audit)
        .put("/campaigns/{campaign_id}/terms", Needs(P::CampaignManage), campaigns::put_terms)
        .post("/campaigns/{campaign_id}/schedule", Needs(P::CampaignManage), campaigns::schedule_campaign)
        .post("/campaigns/{campaign_id}/start", Needs(P::CampaignManage), campaigns::start_campaign)
        .post("/campaigns/{campaign_id}/end", Needs(P::CampaignManage), campaigns::end_campaign)
        .post("/campaigns/{campaign_id}/periods/{period_no}/cancel", Needs(P::CampaignManage), campaigns::cancel_period)
        .post("/campaigns/{campaign_id}/periods", Needs(P::CampaignManage), campaigns::open_period)
        .put(
            "/campaigns/{campaign_id}/periods/{period_no}/beacon-value",
            Needs(P::CampaignManage),
            campaigns::put_beacon_value,
        )
        .keyed()
        .post("/campaigns/{campaign_id}/hand-overs", Needs(P::CampaignHandOver), campaigns::hand_over)
        .get("/members/{member_id}/campaign-prizes", Needs(P::CampaignRead), campaigns::member_campaign_prizes)
        .post("/voting-campaigns", Needs(P::CampaignManage), campaigns::create_voting_campaign)
        .put("/campaigns/{campaign_id}/voting-terms", Needs(P::CampaignManage), campaigns::put_voting_terms)
        .get("/campaigns/{campaign_id}/vote-items", Needs(P::CampaignRead), campaigns::admin_vote_items)
        .post("/campaigns/{campaign_id}/vote-items", Needs(P::CampaignManage), campaigns::admin_submit_item)
        .post(
            "/campaigns/{campaign_id}/vote-items/{item_id}/approve",
            Needs(P::CampaignManage),
            campaigns::approve_item,
        )
        .post("/campaigns/{campaign_id}/vote-items/{item_id}/reject", Needs(P::CampaignManage), campaigns::reject_item)
        .get("/distribution/settings", Needs(P::DistributionRead), distribution::get_settings)
        .put("/distribution/settings", Needs(P::DistributionManage), distribution::put_settings)
        .keyed()
        .get("/distributors", Needs(P::DistributionRead), distribution::list_distributors)
        .get("/distributor-applications", Needs(P::DistributionRead), distribution::list_applications)
        .get("/distributors/{member_id}", Needs(P::DistributionRead), distribution::get_distributor)
        .post("/distributors/{member_id}/approve", Needs(P::DistributionManage), distribution::approve)
        .post("/distributors/{member_id}/reject", Needs(P::DistributionManage), distribution::reject)
        .post("/distributors/{member_id}/designate", Needs(P::DistributionManage), distribution::designate)
        .post("/distributors/{member_id}/suspend", Needs(P::DistributionManage), distribution::suspend)
        .post("/distributors/{member_id}/reinstate", Needs(P::DistributionManage), distribution::reinstate)
        .put("/distributors/{member_id}/level", Needs(P::DistributionManage), distribution::put_level)
        .get("/distributors/{member_id}/subordinates", Needs(P::DistributionRead), distribution::admin_subordinates)
        .get("/members/{member_id}/distribution-binding", Needs(P::DistributionRead), distribution::member_binding)
        .get("/distribution/commission-settings", Needs(P::DistributionRead), commissions::get_settings)
        .put("/distribution/commission-settings", Needs(P::DistributionManage), commissions::put_settings)
        .keyed()
        .get("/distributors/{member_id}/commissions", Needs(P::DistributionRead), commissions::admin_commissions)
        .get("/commission-withdrawals", Needs(P::DistributionRead), commissions::admin_withdrawals)
        .get("/distribution/ranks", Needs(P::DistributionRead), distribution::ranks)
        .post("/commission-withdrawals/{withdrawal_id}/approve", Needs(P::DistributionManage), commissions::approve)
        .post("/commission-withdrawals/{withdrawal_id}/reject", Needs(P::DistributionManage), commissions::reject)
        .post("/commission-withdrawals/{withdrawal_id}/retry", Needs(P::DistributionManage), commissions::retry)
        .post("/commission-withdrawals/{withdrawal_id}/return", Needs(P::DistributionManage), commissions::give_back)
}
