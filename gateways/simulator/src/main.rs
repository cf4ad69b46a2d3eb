//! `wxcm-sim`: the WeChat and WeChat Pay simulator as a process.
//!
//! Prints `listening on http://ADDR` on its first line of standard output, so
//! a parent that passed port 0 learns the address.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use wxcm_simulator::pay::PaySandbox;
use wxcm_simulator::wechat::SandboxConfig;

#[derive(Parser)]
#[command(name = "wxcm-sim", version, about = "WeChat and WeChat Pay simulator for development and tests")]
struct Cli {
    /// Address to listen on (port 0: any free port, printed on start).
    #[arg(long, env = "WXCM_SIM_LISTEN", default_value = "127.0.0.1:9100")]
    listen: String,
    /// `expires_in` of the tokens it issues.
    #[arg(long, default_value_t = 7200)]
    token_expires_in_secs: i64,
    /// How long a token keeps working after a newer one was issued.
    #[arg(long, default_value_t = 300)]
    token_grace_secs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("WXCM_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let listener =
        tokio::net::TcpListener::bind(&cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let config = SandboxConfig {
        token_expires_in_secs: cli.token_expires_in_secs,
        token_grace_secs: cli.token_grace_secs,
        ..SandboxConfig::default()
    };
    let pay = PaySandbox::new().context("starting the WeChat Pay simulator")?;
    let serial = pay.platform_serial().to_owned();
    let router = wxcm_simulator::router(config, pay);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {base_url}")?;
        writeln!(out, "wechat pay platform key serial: {serial}")?;
        out.flush()?;
    }
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await.context("simulator server")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
