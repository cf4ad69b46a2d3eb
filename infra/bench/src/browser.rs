//! A real headless Chromium over WebDriver (`chromedriver` from Debian's
//! `chromium-driver`; `scripts/browser.sh` installs both): each [`Chromium`]
//! runs its own chromedriver on a free port. Used by `wxcm bench console` and
//! by the console's black-box tests.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to answer.
const DRIVER_START_DEADLINE: Duration = Duration::from_secs(20);

pub struct Chromium {
    pub client: Client,
    driver: Child,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Chromium {
    /// Starts chromedriver and a headless window `width`×`height`; downloads go to `downloads`.
    pub async fn start(width: u32, height: u32, downloads: Option<&Path>) -> Result<Self> {
        ensure!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "Chromium and chromedriver are needed at {CHROMIUM} and {CHROMEDRIVER}: run scripts/browser.sh"
        );
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + DRIVER_START_DEADLINE;
        loop {
            let ready = http.get(format!("{url}/status")).send().await.ok();
            if ready.is_some_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {url} within {DRIVER_START_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut options = json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--lang=en-US", format!("--window-size={width},{height}")],
        });
        if let Some(dir) = downloads {
            options["prefs"] =
                json!({"download.default_directory": dir.to_string_lossy(), "download.prompt_for_download": false});
        }
        let Value::Object(capabilities) = json!({"browserName": "chrome", "goog:chromeOptions": options}) else {
            bail!("capabilities are an object");
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("opening a Chromium session")?;
        Ok(Self { client, driver })
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
