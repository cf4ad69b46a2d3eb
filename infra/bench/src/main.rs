//! `wxcm-bench`: the benchmark drivers, run as `wxcm bench …`. Each prints its
//! figures and ends with one JSON line; a run with errors or skipped
//! operations exits non-zero.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use wxcm_server::app::install_crypto_provider;
use wxcm_server::config::Settings;

#[derive(Parser)]
#[command(
    name = "wxcm bench",
    bin_name = "wxcm bench",
    version,
    about = "wxcm benchmarks (figures, then one JSON line)"
)]
struct Cli {
    /// TOML settings file (WXCM_* environment variables override it).
    #[arg(long, global = true, env = "WXCM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable single-event command throughput of the ledger.
    Ledger(wxcm_bench::ledger::LedgerBenchArgs),
    /// End-to-end lag (commit → read model) at a fixed rate, and rebuild throughput.
    Pipeline(wxcm_bench::pipeline::PipelineBenchArgs),
    /// WeChat subscribe callbacks through the full path at a fixed rate and at saturation, next to `/healthz`.
    Gateway(wxcm_bench::gateway::GatewayBenchArgs),
    /// WeChat Pay paid notifications (v2 or v3) through the full path at a fixed rate; checks every credit.
    Pay(wxcm_bench::pay::PayBenchArgs),
    /// Claims of one hot coupon template through the member API, write-offs, and an exact sell-out.
    Coupons(wxcm_bench::coupons::CouponsBenchArgs),
    /// Shakes of one hot shake lottery through the member API, and an exact sell-out.
    Shake(wxcm_bench::shake::ShakeBenchArgs),
    /// The reporting dashboard of a tenant with 100,000 members and 366 days, in headless Chromium.
    Console(wxcm_bench::console::ConsoleBenchArgs),
    /// Two nodes, two PostgreSQL servers and a 3-node NATS cluster of its own under writes,
    /// with nodes killed, servers restarted, a consumer deleted and a burst; checks every write.
    Faults(wxcm_bench::faults::FaultsBenchArgs),
}

/// Same allocator as the `wxcm` server, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    install_crypto_provider();
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WXCM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match cli.command {
        BenchCommand::Ledger(args) => wxcm_bench::ledger::bench_ledger(&settings, args).await,
        BenchCommand::Console(args) => wxcm_bench::console::bench_console(&settings, args).await,
        BenchCommand::Pipeline(args) => wxcm_bench::pipeline::bench_pipeline(&settings, args).await,
        BenchCommand::Gateway(args) => wxcm_bench::gateway::bench_gateway(&settings, args).await,
        BenchCommand::Pay(args) => wxcm_bench::pay::bench_pay(&settings, args).await,
        BenchCommand::Coupons(args) => wxcm_bench::coupons::bench_coupons(&settings, args).await,
        BenchCommand::Shake(args) => wxcm_bench::shake::bench_shake(&settings, args).await,
        BenchCommand::Faults(args) => wxcm_bench::faults::bench_faults(args).await,
    }
}
