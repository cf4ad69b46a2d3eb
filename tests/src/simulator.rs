//! The WeChat and WeChat Pay simulator as the tests meet it: a separate
//! `wxcm-sim` process on a free port, as the real WeChat would be.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::built_bin;

/// How long the simulator may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of `wxcm-sim` the tests change.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// `expires_in` of the tokens it issues.
    pub token_expires_in_secs: i64,
    /// How long a token keeps working after a newer one was issued (WeChat: about 5 minutes).
    pub token_grace_secs: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self { token_expires_in_secs: 7200, token_grace_secs: 300 }
    }
}

/// A running `wxcm-sim`; killed when dropped.
pub struct Simulator {
    /// `http://127.0.0.1:PORT`: every WeChat and Pay base URL points here.
    pub base_url: String,
    child: Child,
}

impl Simulator {
    pub async fn start() -> Self {
        Self::start_with(SimOptions::default()).await
    }

    pub async fn start_with(options: SimOptions) -> Self {
        let mut child = Command::new(built_bin("wxcm-sim", "wxcm-simulator"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--token-expires-in-secs")
            .arg(options.token_expires_in_secs.to_string())
            .arg("--token-grace-secs")
            .arg(options.token_grace_secs.to_string())
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning wxcm-sim");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .expect("wxcm-sim printed its address in time")
            .expect("reading wxcm-sim's output")
            .expect("wxcm-sim exited before it listened");
        let base_url = first.strip_prefix("listening on ").expect("`listening on URL` first").trim().to_owned();
        // Keep draining its output so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { base_url, child }
    }

    /// Kills the simulator and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
