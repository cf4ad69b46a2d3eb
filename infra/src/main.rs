//! The `wxcm` binary: one CLI for every role and operator task.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use wxcm_commands::auth;
use wxcm_commands::ports::Role as AdminRole;
use wxcm_domain::{Actor, MemberId, TenantId};
use wxcm_infra::app::{install_crypto_provider, Application, BuildOptions, Role};
use wxcm_infra::config::{LogFormat, Settings};

#[derive(Parser)]
#[command(name = "wxcm", version, about = "WeChat membership and marketing backend")]
struct Cli {
    /// TOML settings file (WXCM_* environment variables override it).
    #[arg(long, global = true, env = "WXCM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create missing shard databases and apply migrations on every shard.
    Migrate,
    /// Run the server roles.
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
        /// Overrides http.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Apply migrations before starting.
        #[arg(long)]
        migrate: bool,
    },
    /// Tenants (merchants).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Admin users.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Replay and verify the event log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Read models: lag and dead letters, rebuilds from the event store.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Run the WeChat API simulator (tokens, faults, request log) for development and tests.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
        /// `expires_in` of the tokens it issues.
        #[arg(long, default_value_t = 7200)]
        token_expires_in_secs: i64,
        /// How long a token keeps working after a newer one was issued.
        #[arg(long, default_value_t = 300)]
        token_grace_secs: u64,
    },
    /// WeChat Pay operations.
    Pay {
        #[command(subcommand)]
        command: PayCommand,
    },
    /// Benchmarks that print figures (and a final JSON line).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant on the shard the shard map assigns it.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
    },
    /// List the tenants of every shard.
    List,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin user; the password comes from WXCM_ADMIN_PASSWORD or stdin.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["owner", "manager", "staff", "auditor"])]
        role: String,
    },
}

#[derive(Subcommand)]
enum PayCommand {
    /// Ask Pay about every open payment order of a tenant and apply the answers
    /// (paid → credit; not paid after expiry → close at Pay, then here).
    Reconcile {
        #[arg(long)]
        tenant: String,
        /// WeChat Pay's API base URL (the simulator's in development).
        #[arg(long, default_value = wxcm_gateways::pay::client::BASE_URL_DEFAULT)]
        pay_base_url: String,
        #[arg(long)]
        json: bool,
    },
    /// Register WeChat Pay's platform public key of a merchant (named by its serial), with
    /// which v3 notifications are verified. Download it from Pay (or `GET /sandbox/pay/platform`).
    PlatformKey {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        mch_id: String,
        #[arg(long)]
        serial: String,
        /// PEM file of the public key (SubjectPublicKeyInfo).
        #[arg(long)]
        public_key_file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Replay one member's stream: contiguity, hash chain, ledger, balances.
    Member {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        member: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify every stream of a tenant.
    Verify {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Compare the member read models with a fold of the tenant's events; exit 1 on any difference.
    Reconcile {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Per shard and projector: pending and unacked messages, newest applied event, lag, parked events.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Replay the event store into fresh tables and swap them in (or replace one tenant's rows).
    Rebuild {
        /// The read model (`members`: rm_members and rm_member_ledger).
        #[arg(value_parser = ["members"])]
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable single-event command throughput of the ledger.
    Ledger(wxcm_infra::bench::LedgerBenchArgs),
    /// End-to-end lag (commit → read model) at a fixed rate, and rebuild throughput.
    Pipeline(wxcm_infra::bench_pipeline::PipelineBenchArgs),
    /// WeChat subscribe callbacks through the full path at a fixed rate and at saturation, next to `/healthz`.
    Gateway(wxcm_infra::bench_gateway::GatewayBenchArgs),
    /// WeChat Pay paid notifications (v2 or v3) through the full path at a fixed rate; checks every credit.
    Pay(wxcm_infra::bench_pay::PayBenchArgs),
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WXCM_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn read_password() -> Result<String> {
    if let Ok(p) = std::env::var("WXCM_ADMIN_PASSWORD") {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                let _ = tx.send(true);
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    let _ = tx.send(true);
}

async fn migrate_all(settings: &Settings) -> Result<()> {
    for (name, shard) in &settings.shards {
        wxcm_infra::migrate::run_migrations(&shard.admin_url)
            .await
            .with_context(|| format!("migrating shard {name}"))?;
        tracing::info!(shard = %name, "migrated");
    }
    Ok(())
}

/// The callback path allocates and frees many small buffers across threads;
/// glibc's allocator spent a quarter of the process's CPU on it there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    install_crypto_provider();
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    init_tracing(settings.log_format);
    match cli.command {
        Command::Migrate => migrate_all(&settings).await,
        Command::Serve { role, listen, migrate } => {
            let mut settings = settings;
            if let Some(l) = listen {
                settings.http.listen = l;
            }
            if migrate {
                migrate_all(&settings).await?;
            }
            let application = Application::build(settings, role, BuildOptions::default()).await.context("starting")?;
            let (tx, rx) = watch::channel(false);
            tokio::spawn(shutdown_signal(tx));
            application.run(rx).await.context("serving")
        }
        Command::Tenant { command } => tenant(settings, command).await,
        Command::Sandbox { listen, token_expires_in_secs, token_grace_secs } => {
            sandbox(&listen, token_expires_in_secs, token_grace_secs).await
        }
        Command::Admin { command: AdminCommand::Create { tenant, username, role } } => {
            let tenant = TenantId::parse(&tenant)?;
            let role = AdminRole::parse(&role).context("role")?;
            let password = read_password()?;
            let application = Application::build(settings, Role::Scheduler, BuildOptions::default()).await?;
            wxcm_commands::tenants::get(&application.app, &tenant).await.context("tenant must exist first")?;
            auth::create_admin(&application.app, &tenant, &username, &password, role).await?;
            println!("admin {username} ({}) created for tenant {tenant}", role.as_str());
            Ok(())
        }
        Command::Pay { command: PayCommand::PlatformKey { tenant, mch_id, serial, public_key_file } } => {
            let tenant = TenantId::parse(&tenant)?;
            let pem = std::fs::read_to_string(&public_key_file)
                .with_context(|| format!("reading {}", public_key_file.display()))?;
            // Refuse a key that would only fail later, on the first notification.
            wxcm_gateways::pay::v3::load_public_key_pem(&pem).context("not a usable RSA public key PEM")?;
            let application = Application::build(settings, Role::Scheduler, BuildOptions::default()).await?;
            wxcm_commands::pay_flows::put_platform_key(&application.app, &tenant, &mch_id, &serial, &pem).await?;
            println!("platform key {serial} registered for merchant {mch_id} of tenant {tenant}");
            Ok(())
        }
        Command::Pay { command: PayCommand::Reconcile { tenant, pay_base_url, json } } => {
            use wxcm_gateways::pay::client::{PayClientSettings, WechatPayClient};
            let tenant = TenantId::parse(&tenant)?;
            let client = WechatPayClient::new(PayClientSettings { base_url: pay_base_url, ..Default::default() })?;
            let application = Application::build(settings, Role::Scheduler, BuildOptions::default()).await?;
            let report = wxcm_commands::pay_flows::reconcile_tenant(&application.app, &client, &tenant).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "tenant {tenant}: {} open orders looked at, {} paid, {} closed, {} still open, {} failed",
                    report.orders, report.paid, report.closed, report.open, report.failed
                );
            }
            if report.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit { command } => {
            let ok = match command {
                AuditCommand::Member { tenant, member, json } => {
                    let tenant = TenantId::parse(&tenant)?;
                    let member = MemberId::parse(&member)?;
                    wxcm_infra::audit::audit_member(&settings, &tenant, &member, json).await?
                }
                AuditCommand::Verify { tenant, json } => {
                    let tenant = TenantId::parse(&tenant)?;
                    wxcm_infra::audit::audit_verify(&settings, &tenant, json).await?
                }
                AuditCommand::Reconcile { tenant, json } => {
                    let tenant = TenantId::parse(&tenant)?;
                    wxcm_infra::reconcile::audit_reconcile(&settings, &tenant, json).await?
                }
            };
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Projections { command: ProjectionsCommand::Status { json } } => {
            wxcm_infra::projection_ops::print_status(&settings, json).await
        }
        Command::Projections { command: ProjectionsCommand::Rebuild { name, tenant } } => {
            let tenant = tenant.map(|t| TenantId::parse(&t)).transpose()?;
            wxcm_infra::projection_ops::rebuild(&settings, &name, tenant.as_ref()).await.map(|_| ())
        }
        Command::Bench { command: BenchCommand::Ledger(args) } => {
            wxcm_infra::bench::bench_ledger(&settings, args).await
        }
        Command::Bench { command: BenchCommand::Pipeline(args) } => {
            wxcm_infra::bench_pipeline::bench_pipeline(&settings, args).await
        }
        Command::Bench { command: BenchCommand::Gateway(args) } => {
            wxcm_infra::bench_gateway::bench_gateway(&settings, args).await
        }
        Command::Bench { command: BenchCommand::Pay(args) } => wxcm_infra::bench_pay::bench_pay(&settings, args).await,
    }
}

async fn sandbox(listen: &str, token_expires_in_secs: i64, token_grace_secs: u64) -> Result<()> {
    use wxcm_gateways::pay::sandbox::PaySandbox;
    use wxcm_gateways::sandbox::SandboxConfig;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let config = SandboxConfig { token_expires_in_secs, token_grace_secs, ..SandboxConfig::default() };
    let pay = PaySandbox::new().context("starting the WeChat Pay simulator")?;
    println!("WeChat Pay simulator platform key serial: {}", pay.platform_serial());
    // One listener for both: WeChat's API (with its own fallback) and WeChat Pay's.
    let router = wxcm_gateways::pay::sandbox::router(pay).merge(wxcm_gateways::sandbox::router(config));
    tracing::info!(%base_url, "wechat sandbox listening");
    println!("wechat and wechat pay sandbox on {base_url} (point wechat.api_base and the pay base URL at it)");
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(tx));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = rx.changed().await;
        })
        .await
        .context("sandbox server")?;
    Ok(())
}

async fn tenant(settings: Settings, command: TenantCommand) -> Result<()> {
    let application = Application::build(settings, Role::Scheduler, BuildOptions::default()).await?;
    let app = &application.app;
    match command {
        TenantCommand::Create { id, name } => {
            let tenant = TenantId::parse(&id)?;
            let key = wxcm_commands::members::system_key(&["tenant-create", tenant.as_str(), &name])?;
            let ctx = wxcm_commands::CommandContext::new(tenant.clone(), key, "cli".into());
            let actor = Actor::Admin { username: "cli".into() };
            let view = wxcm_commands::tenants::create(app, &tenant, &name, actor, &ctx).await?;
            let shard = application.settings.shard_of(tenant.as_str());
            println!("tenant {} ({}) on shard {shard}", view.tenant_id, view.name);
        }
        TenantCommand::List => {
            let tenants = wxcm_commands::tenants::list(app).await?;
            if tenants.is_empty() {
                eprintln!("no tenants yet: create one with `wxcm tenant create --id ID --name NAME`");
            }
            println!("{:<12} {:<24} {:<32} ACCOUNTS", "SHARD", "TENANT", "NAME");
            for (shard, t) in tenants {
                println!("{:<12} {:<24} {:<32} {}", shard, t.tenant_id, t.name, t.official_accounts.len());
            }
        }
    }
    Ok(())
}
