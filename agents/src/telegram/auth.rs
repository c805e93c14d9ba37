//! Who may do what: the allowlist with roles, and the per-user rate limit (by the messages' own times).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use jarvis_domain::chat::Trust;

use super::commands::Role;

/// How far the conversation trusts a user of `role` (none: not on the allowlist).
pub fn trust_of(role: Option<Role>) -> Trust {
    match role {
        Some(Role::Admin | Role::Operator) => Trust::Owner,
        Some(Role::Viewer) => Trust::Allowlisted,
        None => Trust::Public,
    }
}

/// At most `per_minute` messages of one user within any 60 seconds, counted by the messages' times.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    seen: Mutex<HashMap<i64, VecDeque<DateTime<Utc>>>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` messages per user per minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a message of `user` at `at`; false when it is over the limit (and then it is not counted, so a
    /// flood does not lock the user out for longer than a minute).
    pub fn allow(&self, user: i64, at: DateTime<Utc>) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let times = seen.entry(user).or_default();
        while times
            .front()
            .is_some_and(|t| *t <= at - Duration::seconds(60))
        {
            times.pop_front();
        }
        if times.len() >= self.per_minute as usize {
            return false;
        }
        times.push_back(at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_per_user_within_a_minute_of_message_time() {
        let t0: DateTime<Utc> = "2026-11-21T08:00:00Z".parse().unwrap();
        let limiter = RateLimiter::new(3);
        for s in 0..3 {
            assert!(limiter.allow(1, t0 + Duration::seconds(s)));
        }
        assert!(!limiter.allow(1, t0 + Duration::seconds(10)));
        assert!(limiter.allow(2, t0 + Duration::seconds(10)), "another user");
        assert!(
            limiter.allow(1, t0 + Duration::seconds(61)),
            "a minute later"
        );
        assert!(RateLimiter::new(0).allow(1, t0));
    }

    #[test]
    fn roles_map_onto_trust() {
        assert_eq!(trust_of(Some(Role::Operator)), Trust::Owner);
        assert_eq!(trust_of(Some(Role::Viewer)), Trust::Allowlisted);
        assert_eq!(trust_of(None), Trust::Public);
    }
}
