use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wxcm_commands::ports::SecretSealer;

use super::*;

/// Counts fetches; each one mints `t<n>` after a short pause (so concurrent
/// callers really overlap).
#[derive(Default)]
struct CountingFetcher {
    fetches: AtomicU32,
}

impl CountingFetcher {
    async fn mint(&self) -> Result<Fetched, WechatError> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(Fetched { value: format!("t{n}"), expires_in_secs: 7200 })
    }
}

#[async_trait]
impl TokenFetcher for CountingFetcher {
    async fn access_token(&self, _: &str, _: &str) -> Result<Fetched, WechatError> {
        self.mint().await
    }
    async fn component_token(&self, _: &str, _: &str, _: &str) -> Result<Fetched, WechatError> {
        self.mint().await
    }
    async fn authorizer_token(&self, _: &str, _: &str, _: &str, r: &str) -> Result<(Fetched, String), WechatError> {
        Ok((self.mint().await?, r.to_owned()))
    }
    async fn jsapi_ticket(&self, _: &str, _: &str) -> Result<Fetched, WechatError> {
        self.mint().await
    }
    async fn query_auth(&self, _: &str, _: &str, _: &str) -> Result<Authorization, WechatError> {
        Err(WechatError::InvalidInput("not used".into()))
    }
}

struct NoSealer;
impl SecretSealer for NoSealer {
    fn seal(&self, _: &str) -> Result<SealedSecret, wxcm_commands::ports::PortError> {
        Err(wxcm_commands::ports::PortError::msg("unused"))
    }
    fn open(&self, _: &SealedSecret) -> Result<String, wxcm_commands::ports::PortError> {
        Err(wxcm_commands::ports::PortError::msg("unused"))
    }
}

fn center(store: Arc<MemoryTokenStore>, fetcher: Arc<CountingFetcher>, owner: &str) -> Arc<TokenCenter> {
    let sources = StaticTokenSources { app_secrets: [("wxapp".into(), "s".into())].into(), ..Default::default() };
    let config = TokenCenterConfig { owner: owner.into(), poll_ms: 5, wait_ms_max: 2_000, ..Default::default() };
    Arc::new(TokenCenter::new(store, Arc::new(sources), fetcher, Arc::new(NoSealer), config))
}

fn key() -> TokenKey {
    TokenKey::access_token("wxapp").unwrap()
}

#[tokio::test]
async fn invalidate_refreshes_only_while_the_failed_token_is_current() {
    let fetcher = Arc::new(CountingFetcher::default());
    let tc = center(Arc::new(MemoryTokenStore::default()), fetcher.clone(), "a");
    let t1 = tc.get(&key()).await.unwrap();
    assert_eq!((t1.value.as_str(), t1.generation), ("t1", 1));
    let t2 = tc.invalidate(&key(), "t1").await.unwrap();
    assert_eq!((t2.value.as_str(), t2.generation), ("t2", 2));
    // A late caller that saw t1 fail gets t2 without another refresh.
    assert_eq!(tc.invalidate(&key(), "t1").await.unwrap().value, "t2");
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_invalidations_on_two_nodes_fetch_once() {
    let fetcher = Arc::new(CountingFetcher::default());
    let store = Arc::new(MemoryTokenStore::default());
    let (a, b) = (center(store.clone(), fetcher.clone(), "a"), center(store, fetcher.clone(), "b"));
    let t1 = a.get(&key()).await.unwrap();
    assert_eq!(b.get(&key()).await.unwrap(), t1);
    let calls = (0..40).map(|i| {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { node.invalidate(&key(), "t1").await.unwrap().value }
    });
    let values = futures::future::join_all(calls).await;
    assert!(values.iter().all(|v| v == "t2"), "{values:?}");
    assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_foreign_lease_blocks_refresh_until_it_expires() {
    let fetcher = Arc::new(CountingFetcher::default());
    let store = Arc::new(MemoryTokenStore::default());
    assert!(store.try_lease(&key(), "other", 100).await.unwrap());
    assert!(!store.try_lease(&key(), "me", 100).await.unwrap());
    let tc = center(store.clone(), fetcher.clone(), "me");
    let started = Instant::now();
    assert_eq!(tc.get(&key()).await.unwrap().value, "t1");
    assert!(started.elapsed() >= Duration::from_millis(90));
    // The other node's stale compare-and-set loses.
    assert_eq!(store.compare_and_set(&key(), "other", 0, "x", Utc::now()).await.unwrap(), None);
}

#[test]
fn token_keys_are_validated_at_the_limit() {
    assert!(TokenKey::access_token(&"a".repeat(APPID_CHARS_MAX)).is_ok());
    assert!(TokenKey::access_token(&"a".repeat(APPID_CHARS_MAX + 1)).is_err());
    assert!(TokenKey::access_token("").is_err());
    assert!(TokenKey::access_token("wx'; drop").is_err());
    assert_eq!(TokenKey::jsapi_ticket("wx1").unwrap().to_string(), "jsapi_ticket:wx1");
    let t = Token { value: "secret-value".into(), generation: 1, expires_at: Utc::now() };
    assert!(!format!("{t:?}").contains("secret-value"));
}
