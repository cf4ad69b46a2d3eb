//! Who may do what: one table, [`allowed`], tested whole.
//!
//! Handlers name the permission they need in their signature
//! (`Authorized<perm::CashCharge>`), so a route cannot run without its check.

use wxcm_commands::ports::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Look a member up (by id, card number or openid).
    MemberRead,
    /// Register a member by hand.
    MemberRegister,
    PointsGrant,
    PointsDeduct,
    CashDeposit,
    CashCharge,
    CashRefund,
    CardLevelSet,
    /// Read a member's ledger.
    LedgerRead,
    /// Read the tenant's settings (without secrets).
    TenantRead,
    /// Change the tenant's settings (official accounts and their secrets).
    TenantSettings,
    /// Read reports (daily operations).
    ReportRead,
    /// Read the WeChat settings: reply rules, points rules, scene QR codes, menus, referral links.
    WechatRead,
    /// Change the WeChat settings (reply rules, points rules, QR codes, menus).
    WechatSettings,
    /// Read payment orders and their notifications.
    PaymentRead,
    /// Read coupon templates and issued coupons.
    CouponRead,
    /// Create and change coupon templates.
    CouponSettings,
    /// Give a member a coupon.
    CouponGrant,
    /// Write a coupon off at the counter.
    CouponRedeem,
    /// Void an issued coupon.
    CouponVoid,
    /// Manage the tenant's admin users (list, create, role, disable, password reset).
    AdminUsers,
    /// Read the operation log (every admin and staff write).
    OperationLogRead,
    /// Read mall products and orders.
    MallRead,
    /// Create and change mall products (listing, price, stock, limit, on/off sale).
    MallSettings,
    /// Hand a paid mall order over at the counter.
    MallDeliver,
    /// Refund a paid mall order.
    MallRefund,
    /// Read campaigns (terms, odds, counts, commitments).
    CampaignRead,
    /// Create, edit, schedule, start and end campaigns.
    CampaignManage,
    /// Hand a won physical prize over at the store (once).
    CampaignHandOver,
    /// Change the card level catalog (levels, thresholds, downgrade policy).
    CardLevelSettings,
    /// Read distribution settings, distributors, the audit queue, bindings and subordinates.
    DistributionRead,
    /// Change distribution settings; approve, reject, designate, suspend, reinstate distributors.
    DistributionManage,
}

impl Permission {
    pub const ALL: [Permission; 32] = [
        Permission::MemberRead,
        Permission::MemberRegister,
        Permission::PointsGrant,
        Permission::PointsDeduct,
        Permission::CashDeposit,
        Permission::CashCharge,
        Permission::CashRefund,
        Permission::CardLevelSet,
        Permission::LedgerRead,
        Permission::TenantRead,
        Permission::TenantSettings,
        Permission::ReportRead,
        Permission::WechatRead,
        Permission::WechatSettings,
        Permission::PaymentRead,
        Permission::CouponRead,
        Permission::CouponSettings,
        Permission::CouponGrant,
        Permission::CouponRedeem,
        Permission::CouponVoid,
        Permission::AdminUsers,
        Permission::OperationLogRead,
        Permission::MallRead,
        Permission::MallSettings,
        Permission::MallDeliver,
        Permission::MallRefund,
        Permission::CampaignRead,
        Permission::CampaignManage,
        Permission::CampaignHandOver,
        Permission::CardLevelSettings,
        Permission::DistributionRead,
        Permission::DistributionManage,
    ];

    /// The permission's name in the API (`GET /session`), snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::MemberRead => "member_read",
            Permission::MemberRegister => "member_register",
            Permission::PointsGrant => "points_grant",
            Permission::PointsDeduct => "points_deduct",
            Permission::CashDeposit => "cash_deposit",
            Permission::CashCharge => "cash_charge",
            Permission::CashRefund => "cash_refund",
            Permission::CardLevelSet => "card_level_set",
            Permission::LedgerRead => "ledger_read",
            Permission::TenantRead => "tenant_read",
            Permission::TenantSettings => "tenant_settings",
            Permission::ReportRead => "report_read",
            Permission::WechatRead => "wechat_read",
            Permission::WechatSettings => "wechat_settings",
            Permission::PaymentRead => "payment_read",
            Permission::CouponRead => "coupon_read",
            Permission::CouponSettings => "coupon_settings",
            Permission::CouponGrant => "coupon_grant",
            Permission::CouponRedeem => "coupon_redeem",
            Permission::CouponVoid => "coupon_void",
            Permission::AdminUsers => "admin_users",
            Permission::OperationLogRead => "operation_log_read",
            Permission::MallRead => "mall_read",
            Permission::MallSettings => "mall_settings",
            Permission::MallDeliver => "mall_deliver",
            Permission::MallRefund => "mall_refund",
            Permission::CampaignRead => "campaign_read",
            Permission::CampaignManage => "campaign_manage",
            Permission::CampaignHandOver => "campaign_hand_over",
            Permission::CardLevelSettings => "card_level_settings",
            Permission::DistributionRead => "distribution_read",
            Permission::DistributionManage => "distribution_manage",
        }
    }

    /// What the permission lets one do, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::MemberRead => "look up members",
            Permission::MemberRegister => "register members",
            Permission::PointsGrant => "grant points",
            Permission::PointsDeduct => "deduct points",
            Permission::CashDeposit => "deposit cash",
            Permission::CashCharge => "charge cash",
            Permission::CashRefund => "refund charges",
            Permission::CardLevelSet => "change card levels",
            Permission::LedgerRead => "read ledgers",
            Permission::TenantRead => "read tenant settings",
            Permission::TenantSettings => "change tenant settings",
            Permission::ReportRead => "read reports",
            Permission::WechatRead => "read WeChat settings",
            Permission::WechatSettings => "change WeChat settings",
            Permission::PaymentRead => "read payment orders",
            Permission::CouponRead => "read coupons",
            Permission::CouponSettings => "change coupon templates",
            Permission::CouponGrant => "give coupons",
            Permission::CouponRedeem => "write coupons off",
            Permission::CouponVoid => "void coupons",
            Permission::AdminUsers => "manage admin users",
            Permission::OperationLogRead => "read the operation log",
            Permission::MallRead => "read mall products and orders",
            Permission::MallSettings => "change mall products",
            Permission::MallDeliver => "deliver mall orders",
            Permission::MallRefund => "refund mall orders",
            Permission::CampaignRead => "read campaigns",
            Permission::CampaignManage => "manage campaigns",
            Permission::CampaignHandOver => "hand campaign prizes over",
            Permission::CardLevelSettings => "change the card level catalog",
            Permission::DistributionRead => "read distribution",
            Permission::DistributionManage => "manage distribution",
        }
    }
}

/// owner: everything; manager: everything but tenant settings and admin users; staff: the
/// counter (lookup, register, deposit, charge, ledger; no reports); auditor: read-only.
pub fn allowed(role: Role, permission: Permission) -> bool {
    use Permission as P;
    match role {
        Role::Owner => true,
        // The log is for the owner and the auditor: those it records do not read it.
        Role::Manager => !matches!(permission, P::TenantSettings | P::AdminUsers | P::OperationLogRead),
        Role::Staff => {
            matches!(
                permission,
                P::MemberRead
                    | P::MemberRegister
                    | P::CashDeposit
                    | P::CashCharge
                    | P::LedgerRead
                    | P::CouponRead
                    | P::CouponRedeem
                    | P::MallRead
                    | P::MallDeliver
                    | P::CampaignRead
                    | P::CampaignHandOver
            )
        }
        Role::Auditor => {
            matches!(
                permission,
                P::MemberRead
                    | P::LedgerRead
                    | P::TenantRead
                    | P::ReportRead
                    | P::WechatRead
                    | P::PaymentRead
                    | P::CouponRead
                    | P::OperationLogRead
                    | P::MallRead
                    | P::CampaignRead
                    | P::DistributionRead
            )
        }
    }
}

/// A permission as a type, for `Authorized<P>`; `None` means any live session.
pub trait Requires: Send + Sync + 'static {
    const PERMISSION: Option<Permission>;
}

/// Marker types, one per [`Permission`], named like its variants, plus
/// [`perm::AnyRole`] for routes every signed-in user may call (logout, own password).
pub mod perm {
    use super::{Permission, Requires};

    pub struct AnyRole;
    impl Requires for AnyRole {
        const PERMISSION: Option<Permission> = None;
    }

    macro_rules! markers {
        ($($name:ident),* $(,)?) => {
            $(
                pub struct $name;
                impl Requires for $name {
                    const PERMISSION: Option<Permission> = Some(Permission::$name);
                }
            )*
        };
    }

    markers!(
        MemberRead,
        MemberRegister,
        PointsGrant,
        PointsDeduct,
        CashDeposit,
        CashCharge,
        CashRefund,
        CardLevelSet,
        LedgerRead,
        TenantRead,
        TenantSettings,
        ReportRead,
        WechatRead,
        WechatSettings,
        PaymentRead,
        CouponRead,
        CouponSettings,
        CouponGrant,
        CouponRedeem,
        CouponVoid,
        AdminUsers,
        OperationLogRead,
        MallRead,
        MallSettings,
        MallDeliver,
        MallRefund,
        CampaignRead,
        CampaignManage,
        CampaignHandOver,
        CardLevelSettings,
        DistributionRead,
        DistributionManage,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_matrix() {
        use Permission as P;
        // Columns: owner, manager, staff, auditor.
        let table: [(Permission, [bool; 4]); 32] = [
            (P::MemberRead, [true, true, true, true]),
            (P::MemberRegister, [true, true, true, false]),
            (P::PointsGrant, [true, true, false, false]),
            (P::PointsDeduct, [true, true, false, false]),
            (P::CashDeposit, [true, true, true, false]),
            (P::CashCharge, [true, true, true, false]),
            (P::CashRefund, [true, true, false, false]),
            (P::CardLevelSet, [true, true, false, false]),
            (P::LedgerRead, [true, true, true, true]),
            (P::TenantRead, [true, true, false, true]),
            (P::TenantSettings, [true, false, false, false]),
            (P::ReportRead, [true, true, false, true]),
            (P::WechatRead, [true, true, false, true]),
            (P::WechatSettings, [true, true, false, false]),
            (P::PaymentRead, [true, true, false, true]),
            (P::CouponRead, [true, true, true, true]),
            (P::CouponSettings, [true, true, false, false]),
            (P::CouponGrant, [true, true, false, false]),
            (P::CouponRedeem, [true, true, true, false]),
            (P::CouponVoid, [true, true, false, false]),
            (P::AdminUsers, [true, false, false, false]),
            (P::OperationLogRead, [true, false, false, true]),
            (P::MallRead, [true, true, true, true]),
            (P::MallSettings, [true, true, false, false]),
            (P::MallDeliver, [true, true, true, false]),
            (P::MallRefund, [true, true, false, false]),
            (P::CampaignRead, [true, true, true, true]),
            (P::CampaignManage, [true, true, false, false]),
            (P::CampaignHandOver, [true, true, true, false]),
            (P::CardLevelSettings, [true, true, false, false]),
            (P::DistributionRead, [true, true, false, true]),
            (P::DistributionManage, [true, true, false, false]),
        ];
        let roles = [Role::Owner, Role::Manager, Role::Staff, Role::Auditor];
        for (permission, expected) in table {
            for (role, want) in roles.iter().zip(expected) {
                assert_eq!(allowed(*role, permission), want, "{role:?} {permission:?}");
            }
        }
        // The table covers every permission exactly once.
        let listed: Vec<Permission> = table.iter().map(|(p, _)| *p).collect();
        assert_eq!(listed, Permission::ALL.to_vec());
    }

    #[test]
    fn auditors_never_write() {
        let writes = Permission::ALL.into_iter().filter(|p| {
            !matches!(
                p,
                Permission::MemberRead
                    | Permission::LedgerRead
                    | Permission::TenantRead
                    | Permission::ReportRead
                    | Permission::WechatRead
                    | Permission::PaymentRead
                    | Permission::CouponRead
                    | Permission::OperationLogRead
                    | Permission::MallRead
                    | Permission::CampaignRead
                    | Permission::DistributionRead
            )
        });
        for p in writes {
            assert!(!allowed(Role::Auditor, p), "{p:?}");
        }
    }
}
