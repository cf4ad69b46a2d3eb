//! The processes a fault run owns: PostgreSQL servers on temporary data
//! directories, a NATS JetStream cluster, and `wxcm serve` nodes. Each is
//! started on free ports and removed when dropped, so a run disturbs nothing
//! else on the machine (not the shared PostgreSQL on 5432 nor NATS on 4222).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Longest wait for a started process to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);

pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn wait_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + START_DEADLINE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {START_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn scratch_dir(kind: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wxcm-faults-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command.output().with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY-free check: `id -u` avoids a libc dependency for one number.
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// PostgreSQL's binaries: the newest installed major version's `bin`.
fn postgres_bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries (/usr/lib/postgresql) are needed")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no PostgreSQL version with pg_ctl under /usr/lib/postgresql")
}

/// One PostgreSQL server of the run: its own data directory and port, trust
/// authentication, fsync off (a crash of the machine is not a fault we test).
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl PgServer {
    pub async fn start() -> Result<Self> {
        let bin = postgres_bin_dir()?;
        let dir = scratch_dir("pg")?;
        let as_postgres = is_root();
        if as_postgres {
            // initdb refuses to run as root: the server runs as `postgres`.
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir), "chown of the data directory")?;
        }
        let data = dir.join("data");
        let port = free_port()?;
        let server = Self { bin, data, port, as_postgres };
        server
            .pg("initdb", &["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D", &server.data_str()])
            .context("initdb")?;
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n\
             shared_buffers = 64MB\nlog_min_messages = warning\n",
            server.data_str()
        );
        let conf_path = server.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).context("reading postgresql.conf")?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).context("writing postgresql.conf")?;
        server.pg_ctl(&["start", "-w", "-t", "60", "-l", &server.log_str()])?;
        wait_port(port, "postgres").await?;
        Ok(server)
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    fn log_str(&self) -> String {
        self.data.with_file_name("postgres.log").display().to_string()
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        command.args(args).stdin(Stdio::null());
        run(&mut command, tool)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let data = self.data_str();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.pg("pg_ctl", &all)
    }

    /// `postgres://postgres@127.0.0.1:{port}/{database}` (the owner).
    pub fn admin_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The application's role (created by the migrations).
    pub fn app_url(&self, database: &str) -> String {
        format!("postgres://wxcm_app@127.0.0.1:{}/{database}", self.port)
    }

    /// A fast restart: sessions are terminated ("terminating connection due
    /// to administrator command"), the server comes back on the same port.
    pub async fn restart(&self) -> Result<()> {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60", "-l", &self.log_str()])?;
        wait_port(self.port, "postgres").await
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        if let Some(dir) = self.data.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

const NATS_SERVER: &str = "/usr/sbin/nats-server";

struct NatsNode {
    name: String,
    client_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A JetStream cluster of `n` nats-server processes on this machine.
pub struct NatsCluster {
    dir: PathBuf,
    nodes: Vec<NatsNode>,
}

impl NatsCluster {
    pub async fn start(n: usize) -> Result<Self> {
        let dir = scratch_dir("nats")?;
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let routes: Vec<String> = cluster_ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let client_port = free_port()?;
            let store = dir.join(&name);
            std::fs::create_dir_all(&store)?;
            let config = dir.join(format!("{name}.conf"));
            let text = if n == 1 {
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\njetstream {{ store_dir: \"{}\" }}\n",
                    store.display()
                )
            } else {
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\njetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: wxcmfaults, listen: 127.0.0.1:{cluster_port}, routes: [{}] }}\n",
                    store.display(),
                    routes.join(", ")
                )
            };
            std::fs::write(&config, text)?;
            nodes.push(NatsNode { name, client_port, config, child: None });
        }
        let mut cluster = Self { dir, nodes };
        for i in 0..n {
            cluster.start_node(i)?;
        }
        for i in 0..n {
            wait_port(cluster.nodes[i].client_port, "nats-server").await?;
        }
        Ok(cluster)
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = self.dir.join(format!("{}.log", node.name));
        let child = Command::new(NATS_SERVER)
            .arg("-c")
            .arg(&node.config)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {NATS_SERVER}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// The seed list: every node's client URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect::<Vec<_>>().join(",")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// SIGTERM (a clean shutdown, as a service manager stops it), then wait.
    pub fn stop_node(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            run(Command::new("kill").args(["-TERM", &child.id().to_string()]), "kill -TERM nats-server")?;
            let _ = child.wait();
        }
        Ok(())
    }

    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        self.stop_node(i)?;
        self.start_node(i)?;
        wait_port(self.nodes[i].client_port, "nats-server").await
    }

    pub async fn start_stopped(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.start_node(i)?;
            }
        }
        for i in 0..self.nodes.len() {
            wait_port(self.nodes[i].client_port, "nats-server").await?;
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `wxcm serve` process (every role) on its own port, its log in a file.
pub struct WxcmNode {
    bin: PathBuf,
    config: PathBuf,
    /// `WXCM_SECRET_KEY` of the process.
    secret_key: String,
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl WxcmNode {
    pub async fn start_with_env(bin: &Path, config: &Path, log: PathBuf, secret_key: &str) -> Result<Self> {
        let port = free_port()?;
        let mut node = Self {
            bin: bin.to_owned(),
            config: config.to_owned(),
            secret_key: secret_key.to_owned(),
            port,
            log,
            child: None,
        };
        node.spawn()?;
        wait_port(port, "wxcm serve").await?;
        Ok(node)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("WXCM_SECRET_KEY", &self.secret_key)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, sessions and leases die with the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        wait_port(self.port, "wxcm serve").await
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for WxcmNode {
    fn drop(&mut self) {
        self.kill();
    }
}
