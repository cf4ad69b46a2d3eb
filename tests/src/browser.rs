//! A real headless Chromium for the console tests ([`wxcm_bench::browser`]:
//! its own chromedriver per browser, so tests in parallel never share one),
//! with the waits and helpers the tests use.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::Value;
use wxcm_bench::browser::Chromium;

/// How long [`Browser::wait_for`] and friends wait for the page.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    chromium: Chromium,
    /// Where downloads land (one directory per browser).
    pub downloads: PathBuf,
}

/// Where screenshots are kept: `<target>/test-artifacts/console/`.
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/debug/deps/<test> → <target>/test-artifacts/console
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).expect("target dir").to_path_buf();
    let dir = target.join("test-artifacts").join("console");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

impl Browser {
    /// A headless Chromium window `width`×`height` (scripts/browser.sh installs it; make test does).
    pub async fn start(width: u32, height: u32) -> Self {
        let downloads = std::env::temp_dir().join(format!("wxcm-downloads-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let chromium = Chromium::start(width, height, Some(&downloads)).await.expect("a headless Chromium");
        Self { client: chromium.client.clone(), chromium, downloads }
    }

    /// Sets the viewport's CSS width (the window is resized to match).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.expect("resize");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits until `css` matches an element.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client.wait().at_most(PAGE_DEADLINE).for_element(Locator::Css(css)).await.unwrap_or_else(|e| {
            panic!("no element {css} within {PAGE_DEADLINE:?}: {e}");
        })
    }

    /// Waits until a script (the body of a function returning a value) returns something truthy; returns it.
    pub async fn wait_until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let value = self.client.execute(script, vec![]).await.unwrap_or(Value::Null);
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if Instant::now() >= deadline {
                let shot =
                    self.screenshot(&format!("failed-{}", what.replace(|c: char| !c.is_alphanumeric(), "-"))).await;
                let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                panic!(
                    "{what}: not within {PAGE_DEADLINE:?} at {url}; page text:\n{}\n(screenshot {shot:?})",
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clicks the button whose text is exactly `text`.
    pub async fn click_button(&self, text: &str) {
        let xpath = format!("//button[normalize-space(.)='{text}']");
        let button =
            self.client.wait().at_most(PAGE_DEADLINE).for_element(Locator::XPath(&xpath)).await.unwrap_or_else(|e| {
                panic!("no button {text:?}: {e}");
            });
        button.click().await.unwrap_or_else(|e| panic!("click {text:?}: {e}"));
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.eval("return document.body.innerText").await.as_str().unwrap_or_default().to_owned()
    }

    /// Saves a PNG of the viewport as `<artifacts>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Waits for one finished download (no `.crdownload` left) and returns its path.
    pub async fn downloaded(&self) -> PathBuf {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let files: Vec<PathBuf> = std::fs::read_dir(&self.downloads)
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            if let [file] = files.as_slice() {
                if file.extension().is_none_or(|e| e != "crdownload") {
                    return file.clone();
                }
            }
            assert!(Instant::now() < deadline, "no download within {PAGE_DEADLINE:?}: {files:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn close(self) {
        self.chromium.close().await;
        let _ = std::fs::remove_dir_all(&self.downloads);
    }
}
