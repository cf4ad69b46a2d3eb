//! Database creation and schema migrations (`schemas/migrations`).
//!
//! Both functions take an administrator URL: migrations create the `wxcm_app` role,
//! grant it privileges and install triggers, which the application role cannot do.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

/// Embedded at compile time from `schemas/migrations`.
static MIGRATOR: Migrator = sqlx::migrate!("../../schemas/migrations");

/// Every Postgres server has it; used to create the target database.
const MAINTENANCE_DATABASE: &str = "postgres";

/// Postgres silently truncates longer identifiers, so the created database would not
/// be the one we then connect to.
const DATABASE_NAME_BYTES_MAX: usize = 63;

/// The migrator uses a single connection (it holds an advisory lock on it).
const MIGRATION_POOL_CONNECTIONS_MAX: u32 = 2;

/// SQLSTATEs of a `CREATE DATABASE` that lost a race with a concurrent one: the name
/// exists (`duplicate_database`), or the catalog's unique index fired first.
const SQLSTATE_DUPLICATE_DATABASE: &str = "42P04";
const SQLSTATE_UNIQUE_VIOLATION: &str = "23505";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("invalid database url")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("the database url names no database")]
    NoDatabaseName,
    #[error("database name {0:?} is longer than {DATABASE_NAME_BYTES_MAX} bytes")]
    DatabaseNameTooLong(String),
    #[error("could not query the maintenance database `{MAINTENANCE_DATABASE}`")]
    Maintenance(#[source] sqlx::Error),
    #[error("could not create database {database:?}")]
    CreateDatabase {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not connect to database {database:?}")]
    Connect {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed on database {database:?}")]
    Migrate {
        database: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Creates the database named by `admin_url` on the same server if it does not exist.
/// A concurrent creation of the same database is not an error.
#[tracing::instrument(skip_all)]
pub async fn ensure_database(admin_url: &str) -> Result<(), MigrateError> {
    let (options, database) = parse_url(admin_url)?;
    let mut connection = options.database(MAINTENANCE_DATABASE).connect().await.map_err(MigrateError::Maintenance)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&mut connection)
        .await
        .map_err(MigrateError::Maintenance)?;
    if !exists {
        let statement = format!("CREATE DATABASE {}", quote_identifier(&database));
        match connection.execute(statement.as_str()).await {
            Ok(_) => tracing::info!(database = %database, "created database"),
            Err(error) if is_concurrent_create(&error) => {
                tracing::info!(database = %database, "database created concurrently");
            }
            Err(source) => return Err(MigrateError::CreateDatabase { database, source }),
        }
    }
    // The work is done; a failed goodbye to the server must not turn it into an error.
    if let Err(error) = connection.close().await {
        tracing::warn!(error = %error, "closing the maintenance connection failed");
    }
    Ok(())
}

/// [`ensure_database`], then applies every pending migration of `schemas/migrations`.
/// Safe to run concurrently: sqlx serializes migrators with an advisory lock.
#[tracing::instrument(skip_all)]
pub async fn run_migrations(admin_url: &str) -> Result<(), MigrateError> {
    ensure_database(admin_url).await?;
    let (options, database) = parse_url(admin_url)?;
    let pool = PgPoolOptions::new()
        .max_connections(MIGRATION_POOL_CONNECTIONS_MAX)
        .connect_with(options)
        .await
        .map_err(|source| MigrateError::Connect { database: database.clone(), source })?;
    let outcome = MIGRATOR.run(&pool).await;
    pool.close().await;
    outcome.map_err(|source| MigrateError::Migrate { database: database.clone(), source })?;
    tracing::info!(database = %database, "migrations applied");
    Ok(())
}

fn parse_url(admin_url: &str) -> Result<(PgConnectOptions, String), MigrateError> {
    let options = PgConnectOptions::from_str(admin_url).map_err(MigrateError::InvalidUrl)?;
    let database = match options.get_database() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(MigrateError::NoDatabaseName),
    };
    if database.len() > DATABASE_NAME_BYTES_MAX {
        return Err(MigrateError::DatabaseNameTooLong(database));
    }
    Ok((options, database))
}

/// `name` as a double-quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn is_concurrent_create(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == SQLSTATE_DUPLICATE_DATABASE || code == SQLSTATE_UNIQUE_VIOLATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("wxcm"), "\"wxcm\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn url_must_name_a_database_of_at_most_63_bytes() {
        let at_limit = "d".repeat(DATABASE_NAME_BYTES_MAX);
        let (_, name) = parse_url(&format!("postgres://u@localhost/{at_limit}")).unwrap();
        assert_eq!(name, at_limit);
        let past_limit = "d".repeat(DATABASE_NAME_BYTES_MAX + 1);
        assert!(matches!(
            parse_url(&format!("postgres://u@localhost/{past_limit}")),
            Err(MigrateError::DatabaseNameTooLong(_))
        ));
        assert!(matches!(parse_url("not a url"), Err(MigrateError::InvalidUrl(_))));
    }
}
