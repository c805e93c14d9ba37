//! The `LlmLedger` aggregate: every LLM call of one UTC day, and the day's spend against its budgets.
//!
//! One ledger per UTC day (id `llm@YYYY-MM-DD`). Every call goes through it twice: `RequestCall` admits it
//! (or refuses or downgrades it at a budget cap) and reserves its worst-case cost; `CompleteCall` or
//! `FailCall` replaces the reservation with the real cost. Because admissions of one day are commands on
//! one aggregate, concurrent callers in any number of processes are serialized by optimistic concurrency.
//!
//! # The one-call rule
//! A call is admitted when, for the day and for its task, spend + reservations in flight + this call's worst
//! case stays within the cap; or, when it would not, if spend is still below the cap and nothing else of
//! that scope is in flight. So at most one admitted call can take the spend past a cap, however many
//! callers race. A zero-cost call (a local model) spends nothing and is admitted in `downgrade` mode even at
//! the cap; in `refuse` mode nothing is admitted once a cap is reached. A call kept out only by calls in
//! flight (spend still below the cap) may ask to wait (`wait_if_busy`): then nothing is recorded, and its
//! caller asks again once those calls have finished.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::JarvisAggregate;

/// A reservation older than this (by event time) no longer counts against the budget: its caller crashed.
pub const RESERVATION_TTL_SECS: i64 = 15 * 60;

/// The id of the ledger of a UTC day: `llm@YYYY-MM-DD`.
pub fn ledger_id(day: NaiveDate) -> String {
    format!("llm@{}", day.format("%Y-%m-%d"))
}

/// What to do with a call when a budget cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCap {
    /// Refuse the call.
    Refuse,
    /// Route it to the downgrade route (cheaper or local models) when that fits.
    #[default]
    Downgrade,
}

impl fmt::Display for OnCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refuse => "refuse",
            Self::Downgrade => "downgrade",
        })
    }
}

/// The budgets a call is checked against (from configuration, carried by each command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Budget {
    /// Cap on the day's spend, USD; none: no cap.
    pub daily_usd: Option<Decimal>,
    /// Cap on the day's spend of this call's task, USD; none: no cap.
    pub task_usd: Option<Decimal>,
    /// Fraction of a cap at which `BudgetAlert` is raised, e.g. 0.8.
    pub alert_fraction: Decimal,
    /// What happens at a cap.
    pub on_cap: OnCap,
}

/// The cheaper route a call falls back to at a cap in `downgrade` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Downgrade {
    /// Ordered `provider/model` chain.
    pub route: Vec<String>,
    /// Worst-case cost of the call on that route, USD (0 for local models).
    pub worst_case_usd: Decimal,
}

/// Commands the ledger accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum LlmCommand {
    /// Admit a call (reserving its worst-case cost), downgrade it, or refuse it at a cap.
    RequestCall {
        /// The call's id.
        call_id: Uuid,
        /// The task type, e.g. `chat`.
        task: String,
        /// Ordered `provider/model` chain.
        route: Vec<String>,
        /// SHA-256 (hex) of the model input.
        prompt_hash: String,
        /// The prompt, secrets redacted.
        prompt: String,
        /// Worst-case cost on the route, USD.
        worst_case_usd: Decimal,
        /// The budgets.
        budget: Budget,
        /// Where to go at a cap in downgrade mode.
        downgrade: Option<Downgrade>,
        /// When only calls in flight stand in the way (spend is below the cap), record nothing so that the
        /// caller can wait for them and ask again; when false, refuse or downgrade at once.
        wait_if_busy: bool,
        /// When the call was asked for.
        at: DateTime<Utc>,
    },
    /// Record a model's answer and its cost.
    CompleteCall {
        /// The call's id.
        call_id: Uuid,
        /// The provider that answered.
        provider: String,
        /// The model that answered.
        model: String,
        /// Input tokens.
        tokens_in: u64,
        /// Output tokens.
        tokens_out: u64,
        /// Whether the token counts are estimated (the provider sent no usage).
        estimated: bool,
        /// Cost, USD.
        cost: Decimal,
        /// Latency of the answering request, ms.
        latency_ms: u64,
        /// The answer, secrets redacted.
        response: String,
        /// The budgets (for alerts).
        budget: Budget,
        /// When the answer came.
        at: DateTime<Utc>,
    },
    /// Record that every provider of the route failed.
    FailCall {
        /// The call's id.
        call_id: Uuid,
        /// Why, per provider tried.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record a user-supplied input that the prompt guard flagged.
    FlagPrompt {
        /// The call it came with.
        call_id: Uuid,
        /// The task.
        task: String,
        /// SHA-256 (hex) of the input.
        prompt_hash: String,
        /// Names of the patterns that matched.
        patterns: Vec<String>,
        /// The flagged text, secrets redacted, shortened.
        excerpt: String,
        /// `refused` (the task can act) or `quoted` (passed on as quoted data to a model that cannot act).
        action: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of the LLM ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum LlmEvent {
    /// A call was admitted on a route, its worst-case cost reserved.
    LlmCallRequested {
        /// The call's id.
        call_id: Uuid,
        /// The task type.
        task: String,
        /// Ordered `provider/model` chain it will try.
        route: Vec<String>,
        /// SHA-256 (hex) of the model input: the key backtests replay answers by.
        prompt_hash: String,
        /// The prompt, secrets redacted.
        prompt: String,
        /// Worst-case cost reserved, USD.
        worst_case_usd: Decimal,
        /// Whether a budget cap sent it to the downgrade route.
        downgraded: bool,
        /// When it was asked for.
        at: DateTime<Utc>,
    },
    /// A model answered.
    LlmCallCompleted {
        /// The call's id.
        call_id: Uuid,
        /// The task type.
        task: String,
        /// SHA-256 (hex) of the model input.
        prompt_hash: String,
        /// The provider that answered.
        provider: String,
        /// The model that answered.
        model: String,
        /// Input tokens.
        tokens_in: u64,
        /// Output tokens.
        tokens_out: u64,
        /// Whether the token counts are estimated from text length (the provider sent no usage).
        estimated: bool,
        /// Cost, USD.
        cost: Decimal,
        /// Latency of the answering request, ms.
        latency_ms: u64,
        /// The answer, secrets redacted.
        response: String,
        /// When it answered.
        at: DateTime<Utc>,
    },
    /// Every provider of the route failed.
    LlmCallFailed {
        /// The call's id.
        call_id: Uuid,
        /// The task type.
        task: String,
        /// Why, per provider tried.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Spend reached the alert threshold of a cap.
    BudgetAlert {
        /// `day` or `task:<name>`.
        scope: String,
        /// Spend so far, USD.
        spent: Decimal,
        /// The cap, USD.
        cap: Decimal,
        /// The threshold fraction.
        fraction: Decimal,
        /// When.
        at: DateTime<Utc>,
    },
    /// A call met a cap: it was refused or downgraded.
    BudgetExceeded {
        /// The call's id.
        call_id: Uuid,
        /// The task type.
        task: String,
        /// `day` or `task:<name>`.
        scope: String,
        /// Spend so far, USD.
        spent: Decimal,
        /// Reserved by calls in flight, USD.
        reserved: Decimal,
        /// The cap, USD.
        cap: Decimal,
        /// `refused` or `downgraded`.
        action: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The prompt guard flagged a user-supplied input.
    PromptFlagged {
        /// The call it came with.
        call_id: Uuid,
        /// The task.
        task: String,
        /// SHA-256 (hex) of the input.
        prompt_hash: String,
        /// Names of the patterns that matched.
        patterns: Vec<String>,
        /// The flagged text, secrets redacted, shortened.
        excerpt: String,
        /// `refused` or `quoted`.
        action: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl LlmEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[
        ("LlmCallRequested", 1),
        ("LlmCallCompleted", 1),
        ("LlmCallFailed", 1),
        ("BudgetAlert", 1),
        ("BudgetExceeded", 1),
        ("PromptFlagged", 1),
    ];
}

impl DomainEvent for LlmEvent {
    fn event_type(&self) -> String {
        match self {
            Self::LlmCallRequested { .. } => "LlmCallRequested",
            Self::LlmCallCompleted { .. } => "LlmCallCompleted",
            Self::LlmCallFailed { .. } => "LlmCallFailed",
            Self::BudgetAlert { .. } => "BudgetAlert",
            Self::BudgetExceeded { .. } => "BudgetExceeded",
            Self::PromptFlagged { .. } => "PromptFlagged",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why the ledger refused a command (nothing is recorded). A budget refusal is not one of these: it is a
/// normal outcome, recorded as `BudgetExceeded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmLedgerError {
    /// `CompleteCall` or `FailCall` for a call that is not in flight.
    #[error("call {0} is not in flight on this ledger")]
    NotInFlight(Uuid),
    /// A command with an empty route, task or model, or a negative amount.
    #[error("invalid command: {0}")]
    Invalid(String),
}

/// A call admitted and not yet finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// The task.
    pub task: String,
    /// The route it was admitted on.
    pub route: Vec<String>,
    /// Whether it was downgraded at a cap.
    pub downgraded: bool,
    /// Worst-case cost reserved.
    pub worst_case_usd: Decimal,
    /// When it was admitted.
    pub at: DateTime<Utc>,
    /// SHA-256 (hex) of its model input.
    pub prompt_hash: String,
}

/// Spend and token totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Completed calls.
    pub calls: u64,
    /// Cost, USD.
    pub cost: Decimal,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
}

impl Totals {
    fn add(&mut self, cost: Decimal, tokens_in: u64, tokens_out: u64) {
        self.calls += 1;
        self.cost += cost;
        self.tokens_in += tokens_in;
        self.tokens_out += tokens_out;
    }
}

/// The state of one day's ledger.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmLedger {
    total: Totals,
    by_task: BTreeMap<String, Totals>,
    by_provider: BTreeMap<String, Totals>,
    in_flight: BTreeMap<Uuid, InFlight>,
    alerted: BTreeSet<String>,
    failed: u64,
}

/// One budget scope a call is checked against.
struct Scope {
    name: String,
    cap: Decimal,
    spent: Decimal,
    reserved: Decimal,
}

impl LlmLedger {
    /// The day's totals.
    pub fn total(&self) -> &Totals {
        &self.total
    }

    /// Totals per task.
    pub fn by_task(&self) -> &BTreeMap<String, Totals> {
        &self.by_task
    }

    /// Totals per provider.
    pub fn by_provider(&self) -> &BTreeMap<String, Totals> {
        &self.by_provider
    }

    /// The call, if admitted and not finished: its route and whether it was downgraded.
    pub fn in_flight(&self, call_id: Uuid) -> Option<&InFlight> {
        self.in_flight.get(&call_id)
    }

    /// Worst-case cost reserved by calls in flight at `now` (stale reservations left out), USD.
    pub fn reserved_usd(&self, now: DateTime<Utc>) -> Decimal {
        self.reserved(None, now)
    }

    /// Calls that failed on every provider.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    fn reserved(&self, task: Option<&str>, now: DateTime<Utc>) -> Decimal {
        let oldest = now - Duration::seconds(RESERVATION_TTL_SECS);
        self.in_flight
            .values()
            .filter(|c| c.at >= oldest && task.is_none_or(|t| t == c.task))
            .map(|c| c.worst_case_usd)
            .sum()
    }

    fn scopes(&self, task: &str, budget: &Budget, now: DateTime<Utc>) -> Vec<Scope> {
        let mut scopes = Vec::new();
        if let Some(cap) = budget.daily_usd {
            scopes.push(Scope {
                name: "day".into(),
                cap,
                spent: self.total.cost,
                reserved: self.reserved(None, now),
            });
        }
        if let Some(cap) = budget.task_usd {
            scopes.push(Scope {
                name: format!("task:{task}"),
                cap,
                spent: self.by_task.get(task).map_or(Decimal::ZERO, |t| t.cost),
                reserved: self.reserved(Some(task), now),
            });
        }
        scopes
    }

    /// The first scope that does not admit a call of worst case `cost` (see the one-call rule).
    fn blocking(scopes: &[Scope], cost: Decimal) -> Option<&Scope> {
        scopes.iter().find(|s| {
            let fits = s.spent + s.reserved + cost <= s.cap;
            let last_call = s.spent < s.cap && s.reserved.is_zero();
            !(fits || last_call)
        })
    }

    fn request(&self, command: LlmCommand) -> Result<Vec<LlmEvent>, LlmLedgerError> {
        let LlmCommand::RequestCall {
            call_id,
            task,
            route,
            prompt_hash,
            prompt,
            worst_case_usd,
            budget,
            downgrade,
            wait_if_busy,
            at,
        } = command
        else {
            return Ok(vec![]);
        };
        if self.in_flight.contains_key(&call_id) {
            return Ok(vec![]);
        }
        if task.is_empty() || route.is_empty() || worst_case_usd.is_sign_negative() {
            return Err(LlmLedgerError::Invalid(format!(
                "call {call_id}: task {task:?}, route {route:?}, worst case {worst_case_usd}"
            )));
        }
        let scopes = self.scopes(&task, &budget, at);
        let requested = |route: Vec<String>, worst_case_usd: Decimal, downgraded: bool| {
            LlmEvent::LlmCallRequested {
                call_id,
                task: task.clone(),
                route,
                prompt_hash: prompt_hash.clone(),
                prompt: prompt.clone(),
                worst_case_usd,
                downgraded,
                at,
            }
        };
        let Some(blocked) = Self::blocking(&scopes, worst_case_usd) else {
            return Ok(vec![requested(route, worst_case_usd, false)]);
        };
        if wait_if_busy && blocked.spent < blocked.cap {
            return Ok(vec![]);
        }
        let downgrade = downgrade.filter(|d| {
            budget.on_cap == OnCap::Downgrade
                && !d.route.is_empty()
                && (d.worst_case_usd.is_zero()
                    || Self::blocking(&scopes, d.worst_case_usd).is_none())
        });
        let exceeded = |action: &str| LlmEvent::BudgetExceeded {
            call_id,
            task: task.clone(),
            scope: blocked.name.clone(),
            spent: blocked.spent,
            reserved: blocked.reserved,
            cap: blocked.cap,
            action: action.to_string(),
            at,
        };
        Ok(match downgrade {
            Some(d) => vec![
                exceeded("downgraded"),
                requested(d.route, d.worst_case_usd, true),
            ],
            None => vec![exceeded("refused")],
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        call_id: Uuid,
        provider: String,
        model: String,
        tokens_in: u64,
        tokens_out: u64,
        estimated: bool,
        cost: Decimal,
        latency_ms: u64,
        response: String,
        budget: Budget,
        at: DateTime<Utc>,
    ) -> Result<Vec<LlmEvent>, LlmLedgerError> {
        let call = self
            .in_flight
            .get(&call_id)
            .ok_or(LlmLedgerError::NotInFlight(call_id))?;
        if cost.is_sign_negative() || provider.is_empty() || model.is_empty() {
            return Err(LlmLedgerError::Invalid(format!(
                "call {call_id}: provider {provider:?}, model {model:?}, cost {cost}"
            )));
        }
        let prompt_hash = call.prompt_hash.clone();
        let mut events = vec![LlmEvent::LlmCallCompleted {
            call_id,
            task: call.task.clone(),
            prompt_hash,
            provider,
            model,
            tokens_in,
            tokens_out,
            estimated,
            cost,
            latency_ms,
            response,
            at,
        }];
        // Alerts once per scope and day, when this call's cost takes the spend to the threshold.
        let task_spent = self
            .by_task
            .get(&call.task)
            .map_or(Decimal::ZERO, |t| t.cost);
        let scopes = [
            ("day".to_string(), budget.daily_usd, self.total.cost),
            (format!("task:{}", call.task), budget.task_usd, task_spent),
        ];
        for (scope, cap, spent) in scopes {
            let Some(cap) = cap else { continue };
            let spent = spent + cost;
            if spent >= cap * budget.alert_fraction && !self.alerted.contains(&scope) {
                events.push(LlmEvent::BudgetAlert {
                    scope,
                    spent,
                    cap,
                    fraction: budget.alert_fraction,
                    at,
                });
            }
        }
        Ok(events)
    }
}

impl Aggregate for LlmLedger {
    const TYPE: &'static str = "LlmLedger";
    type Command = LlmCommand;
    type Event = LlmEvent;
    type Error = LlmLedgerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            c @ LlmCommand::RequestCall { .. } => self.request(c)?,
            LlmCommand::CompleteCall {
                call_id,
                provider,
                model,
                tokens_in,
                tokens_out,
                estimated,
                cost,
                latency_ms,
                response,
                budget,
                at,
            } => self.complete(
                call_id, provider, model, tokens_in, tokens_out, estimated, cost, latency_ms,
                response, budget, at,
            )?,
            LlmCommand::FailCall {
                call_id,
                reason,
                at,
            } => {
                let call = self
                    .in_flight
                    .get(&call_id)
                    .ok_or(LlmLedgerError::NotInFlight(call_id))?;
                vec![LlmEvent::LlmCallFailed {
                    call_id,
                    task: call.task.clone(),
                    reason,
                    at,
                }]
            }
            LlmCommand::FlagPrompt {
                call_id,
                task,
                prompt_hash,
                patterns,
                excerpt,
                action,
                at,
            } => vec![LlmEvent::PromptFlagged {
                call_id,
                task,
                prompt_hash,
                patterns,
                excerpt,
                action,
                at,
            }],
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            LlmEvent::LlmCallRequested {
                call_id,
                task,
                route,
                prompt_hash,
                worst_case_usd,
                downgraded,
                at,
                ..
            } => {
                self.in_flight.insert(
                    call_id,
                    InFlight {
                        task,
                        route,
                        downgraded,
                        worst_case_usd,
                        at,
                        prompt_hash,
                    },
                );
            }
            LlmEvent::LlmCallCompleted {
                call_id,
                task,
                provider,
                tokens_in,
                tokens_out,
                cost,
                ..
            } => {
                self.in_flight.remove(&call_id);
                self.total.add(cost, tokens_in, tokens_out);
                self.by_task
                    .entry(task)
                    .or_default()
                    .add(cost, tokens_in, tokens_out);
                self.by_provider
                    .entry(provider)
                    .or_default()
                    .add(cost, tokens_in, tokens_out);
            }
            LlmEvent::LlmCallFailed { call_id, .. } => {
                self.in_flight.remove(&call_id);
                self.failed += 1;
            }
            LlmEvent::BudgetAlert { scope, .. } => {
                self.alerted.insert(scope);
            }
            LlmEvent::BudgetExceeded { .. } | LlmEvent::PromptFlagged { .. } => {}
        }
    }
}

impl JarvisAggregate for LlmLedger {
    const CONTEXT: &'static str = "llm";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<LlmLedger>;

    fn at() -> DateTime<Utc> {
        "2026-11-21T10:00:00Z".parse().unwrap()
    }

    fn usd(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn budget(daily: &str, on_cap: OnCap) -> Budget {
        Budget {
            daily_usd: Some(usd(daily)),
            task_usd: None,
            alert_fraction: usd("0.8"),
            on_cap,
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn request(n: u128, worst: &str, budget: Budget, downgrade: Option<Downgrade>) -> LlmCommand {
        LlmCommand::RequestCall {
            call_id: id(n),
            task: "chat".into(),
            route: vec!["groq/llama".into()],
            prompt_hash: format!("h{n}"),
            prompt: "hi".into(),
            worst_case_usd: usd(worst),
            budget,
            downgrade,
            wait_if_busy: false,
            at: at(),
        }
    }

    fn requested(n: u128, worst: &str, route: &str, downgraded: bool) -> LlmEvent {
        LlmEvent::LlmCallRequested {
            call_id: id(n),
            task: "chat".into(),
            route: vec![route.into()],
            prompt_hash: format!("h{n}"),
            prompt: "hi".into(),
            worst_case_usd: usd(worst),
            downgraded,
            at: at(),
        }
    }

    fn completed(n: u128, cost: &str) -> LlmEvent {
        LlmEvent::LlmCallCompleted {
            call_id: id(n),
            task: "chat".into(),
            prompt_hash: format!("h{n}"),
            provider: "groq".into(),
            model: "llama".into(),
            tokens_in: 10,
            tokens_out: 5,
            estimated: false,
            cost: usd(cost),
            latency_ms: 3,
            response: "ok".into(),
            at: at(),
        }
    }

    fn complete(n: u128, cost: &str, budget: Budget) -> LlmCommand {
        LlmCommand::CompleteCall {
            call_id: id(n),
            provider: "groq".into(),
            model: "llama".into(),
            tokens_in: 10,
            tokens_out: 5,
            estimated: false,
            cost: usd(cost),
            latency_ms: 3,
            response: "ok".into(),
            budget,
            at: at(),
        }
    }

    fn exceeded(n: u128, spent: &str, reserved: &str, action: &str) -> LlmEvent {
        LlmEvent::BudgetExceeded {
            call_id: id(n),
            task: "chat".into(),
            scope: "day".into(),
            spent: usd(spent),
            reserved: usd(reserved),
            cap: usd("1"),
            action: action.into(),
            at: at(),
        }
    }

    #[test]
    fn a_call_within_budget_is_admitted() {
        Given::with(())
            .given_no_previous_events()
            .when(request(1, "0.5", budget("1", OnCap::Refuse), None))
            .then_expect_events(vec![requested(1, "0.5", "groq/llama", false)]);
    }

    #[test]
    fn reservations_in_flight_count_against_the_cap() {
        Given::with(())
            .given(vec![requested(1, "0.6", "groq/llama", false)])
            .when(request(2, "0.5", budget("1", OnCap::Refuse), None))
            .then_expect_events(vec![exceeded(2, "0", "0.6", "refused")]);
    }

    #[test]
    fn a_caller_may_wait_for_calls_in_flight_instead_of_being_refused() {
        let mut command = request(2, "0.5", budget("1", OnCap::Refuse), None);
        if let LlmCommand::RequestCall { wait_if_busy, .. } = &mut command {
            *wait_if_busy = true;
        }
        Given::with(())
            .given(vec![requested(1, "0.6", "groq/llama", false)])
            .when(command.clone())
            .then_expect_events(vec![]);
        // Once spend itself reaches the cap there is nothing to wait for.
        Given::with(())
            .given(vec![
                requested(1, "0.6", "groq/llama", false),
                completed(1, "1"),
                requested(3, "0.1", "groq/llama", false),
            ])
            .when(command)
            .then_expect_events(vec![LlmEvent::BudgetExceeded {
                call_id: id(2),
                task: "chat".into(),
                scope: "day".into(),
                spent: usd("1"),
                reserved: usd("0.1"),
                cap: usd("1"),
                action: "refused".into(),
                at: at(),
            }]);
    }

    #[test]
    fn one_call_may_cross_the_cap_when_nothing_is_in_flight() {
        Given::with(())
            .given(vec![
                requested(1, "0.6", "groq/llama", false),
                completed(1, "0.6"),
            ])
            .when(request(2, "0.5", budget("1", OnCap::Refuse), None))
            .then_expect_events(vec![requested(2, "0.5", "groq/llama", false)]);
    }

    #[test]
    fn at_the_cap_nothing_more_is_admitted_in_refuse_mode() {
        let local = Downgrade {
            route: vec!["local/llama3.2".into()],
            worst_case_usd: Decimal::ZERO,
        };
        Given::with(())
            .given(vec![
                requested(1, "0.6", "groq/llama", false),
                completed(1, "1.1"),
            ])
            .when(request(2, "0.1", budget("1", OnCap::Refuse), Some(local)))
            .then_expect_events(vec![exceeded(2, "1.1", "0", "refused")]);
    }

    #[test]
    fn at_the_cap_a_call_is_downgraded_to_a_local_route() {
        let local = Downgrade {
            route: vec!["local/llama3.2".into()],
            worst_case_usd: Decimal::ZERO,
        };
        Given::with(())
            .given(vec![
                requested(1, "0.6", "groq/llama", false),
                completed(1, "1.1"),
            ])
            .when(request(
                2,
                "0.1",
                budget("1", OnCap::Downgrade),
                Some(local),
            ))
            .then_expect_events(vec![
                exceeded(2, "1.1", "0", "downgraded"),
                requested(2, "0", "local/llama3.2", true),
            ]);
    }

    #[test]
    fn a_task_cap_applies_to_its_task_only() {
        let mut b = budget("100", OnCap::Refuse);
        b.task_usd = Some(usd("1"));
        let result = Given::with(())
            .given(vec![
                requested(1, "0.6", "groq/llama", false),
                completed(1, "1"),
            ])
            .when(request(2, "0.1", b, None))
            .inspect_result();
        assert!(result.is_ok());
        let mut ledger = LlmLedger::default();
        ledger.apply(requested(1, "0.6", "groq/llama", false));
        ledger.apply(completed(1, "1"));
        let mut b = budget("100", OnCap::Refuse);
        b.task_usd = Some(usd("1"));
        let events = ledger.request(request(2, "0.1", b, None)).unwrap();
        assert!(
            matches!(&events[..], [LlmEvent::BudgetExceeded { scope, .. }] if scope == "task:chat"),
            "{events:?}"
        );
    }

    #[test]
    fn completion_records_cost_and_alerts_once_at_the_threshold() {
        Given::with(())
            .given(vec![requested(1, "0.9", "groq/llama", false)])
            .when(complete(1, "0.85", budget("1", OnCap::Refuse)))
            .then_expect_events(vec![
                completed(1, "0.85"),
                LlmEvent::BudgetAlert {
                    scope: "day".into(),
                    spent: usd("0.85"),
                    cap: usd("1"),
                    fraction: usd("0.8"),
                    at: at(),
                },
            ]);
        Given::with(())
            .given(vec![
                requested(1, "0.9", "groq/llama", false),
                LlmEvent::BudgetAlert {
                    scope: "day".into(),
                    spent: usd("0.85"),
                    cap: usd("1"),
                    fraction: usd("0.8"),
                    at: at(),
                },
            ])
            .when(complete(1, "0.85", budget("1", OnCap::Refuse)))
            .then_expect_events(vec![completed(1, "0.85")]);
    }

    #[test]
    fn totals_add_up_exactly() {
        let mut ledger = LlmLedger::default();
        for (n, cost) in [(1, "0.000123"), (2, "0.000877"), (3, "0.1")] {
            ledger.apply(requested(n, "1", "groq/llama", false));
            ledger.apply(completed(n, cost));
        }
        assert_eq!(ledger.total().cost, usd("0.101"));
        assert_eq!(ledger.total().calls, 3);
        assert_eq!(ledger.by_provider()["groq"].tokens_in, 30);
        assert!(ledger.in_flight(id(1)).is_none());
    }

    #[test]
    fn finishing_a_call_that_is_not_in_flight_is_refused() {
        Given::with(())
            .given_no_previous_events()
            .when(LlmCommand::FailCall {
                call_id: id(9),
                reason: "x".into(),
                at: at(),
            })
            .then_expect_error(LlmLedgerError::NotInFlight(id(9)));
    }

    #[test]
    fn stale_reservations_stop_counting() {
        let mut ledger = LlmLedger::default();
        let mut old = requested(1, "0.9", "groq/llama", false);
        if let LlmEvent::LlmCallRequested { at: a, .. } = &mut old {
            *a = at() - Duration::seconds(RESERVATION_TTL_SECS + 1);
        }
        ledger.apply(old);
        let events = ledger
            .request(request(2, "0.5", budget("1", OnCap::Refuse), None))
            .unwrap();
        assert!(matches!(&events[..], [LlmEvent::LlmCallRequested { .. }]));
    }

    #[test]
    fn events_round_trip_and_name_themselves() {
        let e = completed(1, "0.5");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<LlmEvent>(&json).unwrap(), e);
        assert_eq!(e.event_type(), "LlmCallCompleted");
        assert_eq!(ledger_id("2026-11-21".parse().unwrap()), "llm@2026-11-21");
    }
}
