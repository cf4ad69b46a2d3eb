//! The WeChat API simulator (`wxcm sandbox`): an in-memory, bounded imitation
//! of the endpoints wxcm calls, with real token issuance and invalidation,
//! error injection, slow responses and a request log. Tests start it
//! in-process with [`serve`] on port 0; developers run `wxcm sandbox`.
//!
//! Code map:
//! - `state`: the simulated world (apps, tokens, codes, media, faults, log);
//! - `api`: the WeChat endpoints (`/cgi-bin/...`, `/sns/...`), answering
//!   with WeChat's `{errcode, errmsg}` shapes (HTTP 200, as WeChat does);
//! - `control`: `/sandbox/...` (apps, faults, request log, stats, OAuth
//!   codes, component tickets and authorizations) and the middleware that
//!   records requests and injects faults.
//!
//! Later additions go beside them: `callbacks.rs` (pushing signed and
//! encrypted callbacks to a gateway) and `pay.rs` (WeChat Pay).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod api;
pub mod callbacks;
mod control;
mod state;

pub use state::SandboxStats;

/// Largest request body (media uploads).
pub const SANDBOX_BODY_BYTES_MAX: usize = 12 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// `expires_in` of access, authorizer and component tokens and tickets.
    pub token_expires_in_secs: i64,
    /// How long the previous token keeps working after a new `/cgi-bin/token`
    /// (WeChat: about 5 minutes; tests set 0).
    pub token_grace_secs: u64,
    /// Requests kept in the log (oldest dropped first).
    pub requests_logged_max: usize,
    /// Bytes of each request body kept in the log.
    pub body_logged_bytes_max: usize,
    /// Live tokens, codes, media items, apps... each map is capped at this.
    pub entries_max: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            token_expires_in_secs: 7200,
            token_grace_secs: 300,
            requests_logged_max: 10_000,
            body_logged_bytes_max: 4096,
            entries_max: 100_000,
        }
    }
}

pub(crate) type Shared = Arc<Mutex<state::Sim>>;

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, state::Sim> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The simulator's routes, for embedding or for [`serve`].
pub fn router(config: SandboxConfig) -> Router {
    let shared: Shared = Arc::new(Mutex::new(state::Sim::new(config)));
    Router::new()
        .route("/cgi-bin/token", get(api::token))
        .route("/cgi-bin/menu/create", post(api::menu_create))
        .route("/cgi-bin/menu/get", get(api::menu_get))
        .route("/cgi-bin/qrcode/create", post(api::qrcode_create))
        .route("/cgi-bin/message/custom/send", post(api::custom_send))
        .route("/cgi-bin/message/template/send", post(api::template_send))
        .route("/cgi-bin/message/mass/sendall", post(api::mass_sendall))
        .route("/cgi-bin/message/mass/send", post(api::mass_send))
        .route("/cgi-bin/media/upload", post(api::media_upload))
        .route("/cgi-bin/media/get", get(api::media_get))
        .route("/cgi-bin/user/info", get(api::user_info))
        .route("/cgi-bin/user/info/batchget", post(api::user_info_batch))
        .route("/cgi-bin/tags/create", post(api::tags_create))
        .route("/cgi-bin/tags/get", get(api::tags_get))
        .route("/cgi-bin/tags/members/batchtagging", post(api::tags_batch_tagging))
        .route("/cgi-bin/ticket/getticket", get(api::getticket))
        .route("/sns/oauth2/access_token", get(api::oauth_access_token))
        .route("/sns/oauth2/component/access_token", get(api::oauth_component_access_token))
        .route("/cgi-bin/component/api_component_token", post(api::component_token))
        .route("/cgi-bin/component/api_create_preauthcode", post(api::create_preauthcode))
        .route("/cgi-bin/component/api_query_auth", post(api::query_auth))
        .route("/cgi-bin/component/api_authorizer_token", post(api::authorizer_token))
        .route("/sandbox/apps", post(control::register_app))
        .route("/sandbox/faults", post(control::add_fault).delete(control::clear_faults))
        .route("/sandbox/requests", get(control::requests))
        .route("/sandbox/stats", get(control::stats))
        .route("/sandbox/oauth/codes", post(control::mint_oauth_code))
        .route("/sandbox/component/ticket", post(control::component_ticket))
        .route("/sandbox/component/authorizations", post(control::mint_authorization))
        .route("/sandbox/qrcodes/{ticket}", get(control::qrcode))
        .route("/sandbox/callbacks/push", post(callbacks::push))
        .route("/sandbox/callbacks/component", post(callbacks::push_component))
        .fallback(api::unknown_api)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), control::record_and_inject))
        .layer(DefaultBodyLimit::max(SANDBOX_BODY_BYTES_MAX))
        .with_state(shared)
}

/// A running simulator.
pub struct SandboxHandle {
    pub addr: SocketAddr,
    /// `http://addr` — the `api_base` (and `open_base`) for the client.
    pub base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SandboxHandle {
    /// Stops accepting, finishes in-flight requests, returns when done.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Returns when the server ends (on its own or through [`Self::stop`]).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Serves the simulator on `listener` until the handle is stopped.
pub async fn serve(listener: TcpListener, config: SandboxConfig) -> std::io::Result<SandboxHandle> {
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let app = router(config);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "sandbox server failed");
        }
    });
    Ok(SandboxHandle { addr, base_url: format!("http://{addr}"), shutdown: Some(tx), task })
}

#[cfg(test)]
mod tests;
