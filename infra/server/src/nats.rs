//! Connections to NATS: every one goes through here, so every one takes the
//! configured list of seed servers (a node started while one server of a
//! cluster is down connects to another), and the node's long-lived
//! connection logs its disconnections.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tracing::{info, warn};

use crate::config::{ConfigError, NatsConfig};

/// Longest wait of one connection attempt to one server.
pub const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Client pings; a server gone silent is noticed within about two of these.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Pause between reconnection attempts grows by this per attempt…
const RECONNECT_STEP: Duration = Duration::from_millis(100);
/// …up to this: a restarted cluster is found within a second of coming back
/// (the client's default waits up to several seconds).
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to NATS ({servers}): {source}")]
    Connect {
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("no NATS server of {servers} answered within {timeout:?}")]
    Timeout { servers: String, timeout: Duration },
}

fn options(name: &str) -> ConnectOptions {
    let name_for_events = name.to_owned();
    ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_ATTEMPT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        // Reconnects forever: the node waits out any outage.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            RECONNECT_STEP.saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX)).min(RECONNECT_PAUSE_MAX)
        })
        .event_callback(move |event| {
            let name = name_for_events.clone();
            async move {
                match event {
                    Event::Connected => info!(connection = %name, "nats connected"),
                    Event::Disconnected => warn!(connection = %name, "nats disconnected; reconnecting"),
                    other => info!(connection = %name, event = %other, "nats event"),
                }
            }
        })
}

/// The node's long-lived connection: returns at once and connects (and
/// reconnects) in the background, to whichever seed server answers.
pub async fn connect_long_lived(config: &NatsConfig, name: &str) -> Result<Client, NatsConnectError> {
    let servers = config.servers()?;
    options(name)
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .map_err(|source| NatsConnectError::Connect { servers: config.servers_for_display(), source })
}

/// A connection for a one-off reading (status, a scrape without the node's
/// connection), given up after `timeout`.
pub async fn connect_bounded(config: &NatsConfig, name: &str, timeout: Duration) -> Result<Client, NatsConnectError> {
    let servers = config.servers()?;
    match tokio::time::timeout(timeout, options(name).connect(servers)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(NatsConnectError::Connect { servers: config.servers_for_display(), source }),
        Err(_) => Err(NatsConnectError::Timeout { servers: config.servers_for_display(), timeout }),
    }
}
