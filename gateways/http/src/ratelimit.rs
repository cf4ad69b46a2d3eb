//! Login rate limiting: one keyed GCRA limiter per client address and one
//! per (tenant, username). Memory is bounded: stale keys are dropped every
//! [`HOUSEKEEPING_EVERY_CHECKS`] checks, and when [`RATE_LIMIT_KEYS_MAX`]
//! keys are live anyway new attempts are refused (fail closed: under a flood
//! from that many addresses, logins wait rather than passwords get guessed).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Live keys per limiter, beyond which new attempts are refused.
pub const RATE_LIMIT_KEYS_MAX: usize = 100_000;
/// Stale keys are swept once every this many checks.
pub const HOUSEKEEPING_EVERY_CHECKS: u64 = 1024;
/// Wait announced when the limiter is full (one quota period).
pub const FULL_RETRY_AFTER_SECS: u64 = 60;
/// IPv6 clients are keyed by their /64: one host usually owns a whole /64.
const IPV6_PREFIX_BITS: u32 = 64;

/// A keyed limiter with bounded memory.
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<C::Instant>>,
    checks: AtomicU64,
    keys_max: usize,
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimiter<K, C> {
    pub fn with_clock(attempts: NonZeroU32, keys_max: usize, clock: C) -> Self {
        let limiter = RateLimiter::new(Quota::per_minute(attempts), DashMapStateStore::default(), clock);
        Self { limiter, checks: AtomicU64::new(0), keys_max }
    }

    /// Counts one attempt; `Err(wait)` when the key is over its quota.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        if n % HOUSEKEEPING_EVERY_CHECKS == HOUSEKEEPING_EVERY_CHECKS - 1 {
            self.housekeeping();
        }
        if self.limiter.len() >= self.keys_max {
            return Err(Duration::from_secs(FULL_RETRY_AFTER_SECS));
        }
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Drops keys whose state is indistinguishable from a fresh one.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// The client address a limiter keys on (`None`: no address known, one bucket).
pub fn client_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX << (128 - IPV6_PREFIX_BITS);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    })
}

pub struct LoginLimiter<C: Clock = DefaultClock> {
    by_client: KeyedLimiter<Option<IpAddr>, C>,
    by_user: KeyedLimiter<(String, String), C>,
}

impl LoginLimiter {
    pub fn new(attempts_per_minute: NonZeroU32) -> Self {
        Self::with_clock(attempts_per_minute, RATE_LIMIT_KEYS_MAX, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LoginLimiter<C> {
    pub fn with_clock(attempts_per_minute: NonZeroU32, keys_max: usize, clock: C) -> Self {
        Self {
            by_client: KeyedLimiter::with_clock(attempts_per_minute, keys_max, clock.clone()),
            by_user: KeyedLimiter::with_clock(attempts_per_minute, keys_max, clock),
        }
    }
}

impl<C: Clock> LoginLimiter<C> {
    pub fn check_client(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        self.by_client.check(&client_key(ip))
    }

    /// `tenant` and `username` must already be validated (bounded lengths).
    pub fn check_user(&self, tenant: &str, username: &str) -> Result<(), Duration> {
        self.by_user.check(&(tenant.to_owned(), username.to_owned()))
    }
}

/// Whole seconds to announce in `Retry-After` (rounded up, at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn allows_the_quota_then_refuses_until_it_refills() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyedLimiter::with_clock(n(3), 10, clock.clone());
        for _ in 0..3 {
            assert!(limiter.check(&"k").is_ok());
        }
        let wait = limiter.check(&"k").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(limiter.check(&"other").is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(20));
        assert!(limiter.check(&"k").is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let clock = FakeRelativeClock::default();
        let keys_max = 3;
        let limiter = KeyedLimiter::with_clock(n(2), keys_max, clock.clone());
        for k in 0..keys_max {
            assert!(limiter.check(&k).is_ok());
        }
        assert_eq!(limiter.len(), keys_max);
        // Full: a new key is refused rather than stored.
        assert_eq!(limiter.check(&99), Err(Duration::from_secs(FULL_RETRY_AFTER_SECS)));
        assert_eq!(limiter.len(), keys_max);
        // Once the old keys are stale, housekeeping frees them.
        clock.advance(Duration::from_secs(61));
        limiter.housekeeping();
        assert_eq!(limiter.len(), 0);
        assert!(limiter.check(&99).is_ok());
    }

    #[test]
    fn housekeeping_runs_periodically() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyedLimiter::with_clock(n(1), usize::MAX, clock.clone());
        assert!(limiter.check(&0u64).is_ok());
        clock.advance(Duration::from_secs(180));
        for k in 1..HOUSEKEEPING_EVERY_CHECKS {
            let _ = limiter.check(&k);
        }
        // The sweep ran on the last check: key 0 (stale) is gone, the fresh ones stay.
        assert!(limiter.len() < HOUSEKEEPING_EVERY_CHECKS as usize);
    }

    #[test]
    fn login_limits_apply_per_client_and_per_user() {
        let clock = FakeRelativeClock::default();
        let limits = LoginLimiter::with_clock(n(2), 100, clock);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.check_client(Some(a)).is_ok());
        assert!(limits.check_client(Some(a)).is_ok());
        assert!(limits.check_client(Some(a)).is_err());
        assert!(limits.check_client(Some(b)).is_ok());
        assert!(limits.check_user("acme", "alice").is_ok());
        assert!(limits.check_user("acme", "alice").is_ok());
        assert!(limits.check_user("acme", "alice").is_err());
        assert!(limits.check_user("other", "alice").is_ok());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(Some(a)), client_key(Some(b)));
        assert_ne!(client_key(Some(a)), client_key(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(Some(mapped)), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(client_key(None), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(5_001)), 6);
        assert_eq!(retry_after_secs(Duration::from_secs(6)), 6);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
