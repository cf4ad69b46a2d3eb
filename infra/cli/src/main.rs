//! The `wxcm` binary: one CLI for every role and operator task.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use wxcm_commands::auth;
use wxcm_commands::ports::Role as AdminRole;
use wxcm_domain::{Actor, MemberId, TenantId};
use wxcm_server::app::{install_crypto_provider, Application, BuildOptions, Role};
use wxcm_server::config::{LogFormat, Settings};

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
    /// WeChat Pay operations.
    Pay {
        #[command(subcommand)]
        command: PayCommand,
    },
    /// Benchmarks that print figures and end with one JSON line (`wxcm bench --help`).
    /// Runs the `wxcm-bench` binary found beside this one, which the server never links.
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Demo data through the real paths of a running wxcm (`wxcm demo seed --help`).
    /// Runs the `wxcm-demo` binary found beside this one, which the server never links.
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
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
        #[arg(long, default_value = wxcm_outbound::pay::BASE_URL_DEFAULT)]
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
    /// Explain a distributor's commission account from its events; exit 1 on any violation.
    Commissions {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        distributor: String,
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
    /// Recompute every draw of a campaign from its events and revealed seed; exit 1 on any difference.
    Draw {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        campaign: String,
        /// Only this period's draw (a periodic lottery).
        #[arg(long)]
        period: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Compare the member, coupon, mall, campaign and distribution read models with a fold of the
    /// tenant's events; exit 1 on any difference.
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
        /// The read model (`members`: rm_members and rm_member_ledger; `coupons`: rm_coupons and
        /// the coupon counters of rm_daily_ops; `mall`: rm_mall_orders and the mall counters;
        /// `campaigns`: rm_campaigns and the per-campaign counters;
        /// `votes`: rm_vote_items, the voting campaigns' ranking; `distribution`: the commission,
        /// withdrawal and new-distributor counters).
        #[arg(value_parser = ["members", "coupons", "mall", "campaigns", "votes", "distribution"])]
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
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
        wxcm_store::migrate::run_migrations(&shard.admin_url)
            .await
            .with_context(|| format!("migrating shard {name}"))?;
        tracing::info!(shard = %name, "migrated");
    }
    Ok(())
}

/// Build options for commands that never seal or open a tenant secret: they
/// run without `WXCM_SECRET_KEY` (a secret touched anyway is a clear error).
fn no_secret_options(settings: &Settings) -> Result<BuildOptions> {
    let sealer = wxcm_server::sealer::sealer_or_missing(&settings.secret_key_env).context("secret key")?;
    Ok(BuildOptions { sealer: Some(sealer), ..BuildOptions::default() })
}

/// The dev-only binaries `wxcm` runs for a subcommand (separate so that the
/// server never links them).
#[derive(Clone, Copy)]
enum DevTool {
    /// `wxcm bench …`: the benchmark drivers.
    Bench,
    /// `wxcm demo …`: demo data through a running server.
    Demo,
}

/// Replaces this process with the dev tool's binary beside this one, passing the arguments on.
fn run_dev_tool(tool: DevTool, config: Option<&std::path::Path>, args: Vec<std::ffi::OsString>) -> Result<()> {
    let (name, build) = match tool {
        DevTool::Bench => ("wxcm-bench", "cargo build --release -p wxcm-bench` (make bench does)"),
        DevTool::Demo => ("wxcm-demo", "cargo build -p wxcm-demo` (make run does)"),
    };
    let exe = std::env::current_exe().context("locating the wxcm binary")?;
    let bench = exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bench.is_file() {
        anyhow::bail!("{} not found: build it with `{build}", bench.display());
    }
    let mut command = std::process::Command::new(&bench);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        Err(error).with_context(|| format!("running {}", bench.display()))
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(|| format!("running {}", bench.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// The callback path allocates and frees many small buffers across threads;
/// glibc's allocator spent a quarter of the process's CPU on it there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    install_crypto_provider();
    let cli = Cli::parse();
    match &cli.command {
        Command::Bench { args } => return run_dev_tool(DevTool::Bench, cli.config.as_deref(), args.clone()),
        Command::Demo { args } => return run_dev_tool(DevTool::Demo, None, args.clone()),
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    init_tracing(settings.log_format);
    match cli.command {
        // Taken before the settings load, above; kept so the match stays exhaustive.
        Command::Bench { args } => run_dev_tool(DevTool::Bench, cli.config.as_deref(), args),
        Command::Demo { args } => run_dev_tool(DevTool::Demo, None, args),
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
        Command::Admin { command: AdminCommand::Create { tenant, username, role } } => {
            let tenant = TenantId::parse(&tenant)?;
            let role = AdminRole::parse(&role).context("role")?;
            let password = read_password()?;
            let options = no_secret_options(&settings)?;
            let application = Application::build(settings, Role::Scheduler, options).await?;
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
            wxcm_protocol::pay::v3::load_public_key_pem(&pem).context("not a usable RSA public key PEM")?;
            let options = no_secret_options(&settings)?;
            let application = Application::build(settings, Role::Scheduler, options).await?;
            wxcm_commands::pay_flows::put_platform_key(&application.app, &tenant, &mch_id, &serial, &pem).await?;
            println!("platform key {serial} registered for merchant {mch_id} of tenant {tenant}");
            Ok(())
        }
        Command::Pay { command: PayCommand::Reconcile { tenant, pay_base_url, json } } => {
            use wxcm_outbound::pay::{PayClientSettings, WechatPayClient};
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
                    wxcm_ops::audit::audit_member(&settings, &tenant, &member, json).await?
                }
                AuditCommand::Commissions { tenant, distributor, json } => {
                    let tenant = TenantId::parse(&tenant)?;
                    let distributor = MemberId::parse(&distributor)?;
                    wxcm_ops::audit::audit_commissions(&settings, &tenant, distributor, json).await?
                }
                AuditCommand::Verify { tenant, json } => {
                    let tenant = TenantId::parse(&tenant)?;
                    wxcm_ops::audit::audit_verify(&settings, &tenant, json).await?
                }
                AuditCommand::Draw { tenant, campaign, period, json } => {
                    let tenant = TenantId::parse(&tenant)?;
                    let campaign = wxcm_domain::campaign::CampaignId::parse(&campaign)?;
                    wxcm_ops::draw_audit::audit_draw(&settings, &tenant, campaign, period, json).await?
                }
                AuditCommand::Reconcile { tenant, json } => {
                    let tenant = TenantId::parse(&tenant)?;
                    wxcm_ops::reconcile::audit_reconcile(&settings, &tenant, json).await?
                }
            };
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Projections { command: ProjectionsCommand::Status { json } } => {
            wxcm_server::projection_ops::print_status(&settings, json).await
        }
        Command::Projections { command: ProjectionsCommand::Rebuild { name, tenant } } => {
            let tenant = tenant.map(|t| TenantId::parse(&t)).transpose()?;
            wxcm_server::projection_ops::rebuild(&settings, &name, tenant.as_ref()).await.map(|_| ())
        }
    }
}

async fn tenant(settings: Settings, command: TenantCommand) -> Result<()> {
    let options = no_secret_options(&settings)?;
    let application = Application::build(settings, Role::Scheduler, options).await?;
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
