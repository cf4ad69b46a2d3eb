//! A tenant's settings kept as one JSON row per tenant (not events): the
//! distribution and commission settings tables share this shape
//! (`tenant_id` primary key, `settings`, `updated_at`, `updated_by`).

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgPool;
use wxcm_commands::ports::PortError;
use wxcm_domain::TenantId;

/// The tables of this shape; a table name is never taken from input.
#[derive(Debug, Clone, Copy)]
pub enum SettingsTable {
    Distribution,
    Commission,
}

impl SettingsTable {
    fn name(self) -> &'static str {
        match self {
            SettingsTable::Distribution => "distribution_settings",
            SettingsTable::Commission => "commission_settings",
        }
    }
}

pub async fn load<T: DeserializeOwned>(
    pool: &PgPool,
    table: SettingsTable,
    tenant: &TenantId,
) -> Result<Option<T>, PortError> {
    let row: Option<serde_json::Value> =
        sqlx::query_scalar(&format!("SELECT settings FROM {} WHERE tenant_id = $1", table.name()))
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await
            .map_err(PortError::new)?;
    row.map(|v| serde_json::from_value(v).map_err(PortError::new)).transpose()
}

pub async fn save<T: Serialize>(
    pool: &PgPool,
    table: SettingsTable,
    tenant: &TenantId,
    settings: &T,
    at: DateTime<Utc>,
    by: &str,
) -> Result<(), PortError> {
    let json = serde_json::to_value(settings).map_err(PortError::new)?;
    sqlx::query(&format!(
        "INSERT INTO {} (tenant_id, settings, updated_at, updated_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE
            SET settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        table.name()
    ))
    .bind(tenant.as_str())
    .bind(json)
    .bind(at)
    .bind(by)
    .execute(pool)
    .await
    .map_err(PortError::new)?;
    Ok(())
}
