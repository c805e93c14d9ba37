//! Token buckets per client IP and per API key or user: a request takes a token; an empty bucket answers
//! 429 with `Retry-After`. Buckets refill continuously at `rate` per second up to `rate + burst`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets of one kind (per IP, or per key), sharded to keep lock contention low.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    capacity: f64,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

const SHARDS: usize = 16;
/// Buckets idle this long are dropped when a shard grows large.
const IDLE: Duration = Duration::from_secs(300);

impl RateLimiter {
    /// `rate` per second (0: unlimited), bursting `burst` above it.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate as f64,
            capacity: rate as f64 + burst as f64,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes a token for `key` at `now`: `Ok` or `Err(seconds to wait)`.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let shard = {
            use std::hash::Hasher;
            let mut fixed = std::hash::DefaultHasher::new();
            fixed.write(key.as_bytes());
            fixed.finish() as usize % SHARDS
        };
        let mut buckets = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < IDLE);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }

    /// Takes a token for `key` now.
    ///
    /// # Errors
    /// The seconds to wait.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_then_refills() {
        let limiter = RateLimiter::new(2, 1);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        assert_eq!(limiter.check_at("a", t0), Err(1));
        assert!(limiter.check_at("b", t0).is_ok(), "buckets are per key");
        assert!(limiter
            .check_at("a", t0 + Duration::from_millis(500))
            .is_ok());
        assert!(RateLimiter::new(0, 0).check_at("a", t0).is_ok());
    }
}
