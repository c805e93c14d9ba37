//! `[llm]`: providers, routes per task, budgets, prices, tool allowlists and timeouts.

use std::collections::BTreeMap;
use std::fmt;

use jarvis_domain::llm::OnCap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The kind of API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat completions API (OpenAI, Groq, OpenRouter, xAI, ...).
    Openai,
    /// Ollama's `/api/chat`.
    Ollama,
}

/// `[llm.providers.<name>]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` or `ollama`.
    pub kind: ProviderKind,
    /// e.g. `https://api.groq.com/openai/v1` or `http://127.0.0.1:11434`.
    pub base_url: String,
    /// The API key (never logged; set it with `JARVIS_LLM__PROVIDERS__<NAME>__API_KEY`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Per-request timeout for this provider, ms (default: `llm.timeout_ms`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// USD per million tokens, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million input tokens.
    pub input: Decimal,
    /// USD per million output tokens.
    pub output: Decimal,
}

impl Price {
    /// Free (local models).
    pub const FREE: Self = Self {
        input: Decimal::ZERO,
        output: Decimal::ZERO,
    };

    /// The exact cost of a call.
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> Decimal {
        let million = Decimal::from(1_000_000);
        ((Decimal::from(tokens_in) * self.input + Decimal::from(tokens_out) * self.output)
            / million)
            .normalize()
    }
}

/// `[llm.budget]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Cap on a UTC day's spend, USD (none: no cap).
    #[serde(default)]
    pub daily_usd: Option<Decimal>,
    /// `downgrade` (to `downgrade_route`) or `refuse` at a cap.
    #[serde(default)]
    pub on_cap: OnCap,
    /// Fraction of a cap at which `BudgetAlert` is raised.
    #[serde(default = "default_alert_fraction")]
    pub alert_fraction: Decimal,
    /// Cap per task and UTC day, USD, e.g. `tasks = { trading = 1.0 }`.
    #[serde(default)]
    pub tasks: BTreeMap<String, Decimal>,
    /// Where calls go at a cap in downgrade mode (default: the local models of the task's own route).
    #[serde(default)]
    pub downgrade_route: Vec<String>,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            daily_usd: None,
            on_cap: OnCap::default(),
            alert_fraction: default_alert_fraction(),
            tasks: BTreeMap::new(),
            downgrade_route: Vec::new(),
        }
    }
}

fn default_alert_fraction() -> Decimal {
    Decimal::new(8, 1)
}

/// `[llm]`: the LLM router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Task → ordered fallback chain of `provider/model`.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    /// Budgets.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// Prices by `provider/model` or by `model`, on top of the built-in table.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// The price of a paid model that no table knows (deliberately high, so budgets hold).
    #[serde(default = "default_unknown_price")]
    pub unknown_price: Price,
    /// Task → tool names a model may call; a task with tools "can act", and flagged input to it is refused.
    #[serde(default)]
    pub tools: BTreeMap<String, Vec<String>>,
    /// Per-request timeout, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of one provider after a 429 or a 5xx, before falling back to the next.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First back-off after a 5xx, ms (doubled each retry, with jitter).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest `Retry-After` honoured, ms; a longer one falls back to the next provider at once.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
    /// Consecutive failures that open a provider's circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker stays open before one probe is let through, ms.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// Largest prompt (plus user text) accepted, bytes.
    #[serde(default = "default_max_prompt_bytes")]
    pub max_prompt_bytes: usize,
    /// Output token limit sent with every request (and used for the worst-case cost).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            providers: BTreeMap::new(),
            routes: BTreeMap::new(),
            budget: BudgetConfig::default(),
            prices: BTreeMap::new(),
            unknown_price: default_unknown_price(),
            tools: BTreeMap::new(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            max_retry_after_ms: default_max_retry_after_ms(),
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_ms: default_breaker_cooldown_ms(),
            max_prompt_bytes: default_max_prompt_bytes(),
            max_tokens: default_max_tokens(),
        }
    }
}

fn default_unknown_price() -> Price {
    Price {
        input: Decimal::from(15),
        output: Decimal::from(60),
    }
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    250
}
fn default_max_retry_after_ms() -> u64 {
    10_000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_ms() -> u64 {
    30_000
}
fn default_max_prompt_bytes() -> usize {
    64 * 1024
}
fn default_max_tokens() -> u64 {
    1_024
}

/// Built-in prices, USD per million tokens (input, output), by model name. Configuration overrides them.
const DEFAULT_PRICES: &[(&str, &str, &str)] = &[
    ("gpt-4o", "2.5", "10"),
    ("gpt-4o-mini", "0.15", "0.6"),
    ("gpt-4.1", "2", "8"),
    ("gpt-4.1-mini", "0.4", "1.6"),
    ("gpt-4.1-nano", "0.1", "0.4"),
    ("llama-3.3-70b-versatile", "0.59", "0.79"),
    ("llama-3.1-8b-instant", "0.05", "0.08"),
    ("grok-3", "3", "15"),
    ("grok-3-mini", "0.3", "0.5"),
    ("grok-4", "3", "15"),
    ("meta-llama/llama-3.3-70b-instruct", "0.13", "0.4"),
    ("deepseek/deepseek-chat", "0.3", "0.85"),
];

/// One step of a route: `provider/model` (the model may itself contain `/`, as on OpenRouter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The provider's name.
    pub provider: String,
    /// The model.
    pub model: String,
}

impl Target {
    /// Parses `provider/model`.
    ///
    /// # Errors
    /// A message naming the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok(Self {
                provider: p.to_string(),
                model: m.to_string(),
            }),
            _ => Err(format!("{text:?} is not \"provider/model\"")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

impl LlmConfig {
    /// Whether the router has anything to do.
    pub fn enabled(&self) -> bool {
        !self.providers.is_empty()
    }

    /// The price of `target`: configuration by `provider/model`, then by model, then the built-in table;
    /// local (Ollama) models are free; any other model costs `unknown_price`.
    pub fn price(&self, target: &Target) -> Price {
        if let Some(p) = self
            .prices
            .get(&target.to_string())
            .or_else(|| self.prices.get(&target.model))
        {
            return *p;
        }
        if self
            .providers
            .get(&target.provider)
            .is_some_and(|p| p.kind == ProviderKind::Ollama)
        {
            return Price::FREE;
        }
        DEFAULT_PRICES
            .iter()
            .find(|(m, _, _)| *m == target.model)
            .map_or(self.unknown_price, |(_, i, o)| Price {
                input: i.parse().unwrap_or(self.unknown_price.input),
                output: o.parse().unwrap_or(self.unknown_price.output),
            })
    }

    /// The route of `task`, parsed.
    pub fn route(&self, task: &str) -> Option<Vec<Target>> {
        self.routes
            .get(task)
            .map(|r| r.iter().filter_map(|t| Target::parse(t).ok()).collect())
    }

    /// Where a task's calls go at a cap: `budget.downgrade_route`, else the free models of its own route.
    pub fn downgrade_route(&self, task: &str) -> Vec<Target> {
        if !self.budget.downgrade_route.is_empty() {
            return self
                .budget
                .downgrade_route
                .iter()
                .filter_map(|t| Target::parse(t).ok())
                .collect();
        }
        self.route(task)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| self.price(t) == Price::FREE)
            .collect()
    }

    /// The tools a task's model may call.
    pub fn tools_of(&self, task: &str) -> &[String] {
        self.tools.get(task).map_or(&[], Vec::as_slice)
    }

    /// Checks the values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key and its value.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in &self.providers {
            let url = url::Url::parse(&p.base_url)
                .map_err(|e| format!("llm.providers.{name}.base_url = {:?}: {e}", p.base_url))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "llm.providers.{name}.base_url = {:?}: must be http or https",
                    p.base_url
                ));
            }
            if p.timeout_ms == Some(0) {
                return Err(format!(
                    "llm.providers.{name}.timeout_ms = 0: must be positive"
                ));
            }
        }
        let check_route = |key: &str, route: &[String]| -> Result<(), String> {
            for step in route {
                let t = Target::parse(step).map_err(|e| format!("{key}: {e}"))?;
                if !self.providers.contains_key(&t.provider) {
                    return Err(format!(
                        "{key}: {step:?} names provider {:?}, which is not in [llm.providers] (have: {})",
                        t.provider,
                        self.providers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            Ok(())
        };
        for (task, route) in &self.routes {
            if route.is_empty() {
                return Err(format!("llm.routes.{task} is empty"));
            }
            check_route(&format!("llm.routes.{task}"), route)?;
        }
        check_route("llm.budget.downgrade_route", &self.budget.downgrade_route)?;
        if !self.providers.is_empty() && self.routes.is_empty() {
            return Err("[llm.routes] is empty: name at least one task's route".into());
        }
        for task in self.budget.tasks.keys().chain(self.tools.keys()) {
            if !self.routes.contains_key(task) {
                return Err(format!(
                    "llm: task {task:?} has a budget or tools but no route in [llm.routes]"
                ));
            }
        }
        let bad_money = |key: String, v: Decimal| -> Result<(), String> {
            if v.is_sign_negative() {
                Err(format!("{key} = {v}: must not be negative"))
            } else {
                Ok(())
            }
        };
        if let Some(d) = self.budget.daily_usd {
            bad_money("llm.budget.daily_usd".into(), d)?;
        }
        for (task, v) in &self.budget.tasks {
            bad_money(format!("llm.budget.tasks.{task}"), *v)?;
        }
        for (model, p) in &self.prices {
            bad_money(format!("llm.prices.\"{model}\".input"), p.input)?;
            bad_money(format!("llm.prices.\"{model}\".output"), p.output)?;
        }
        if self.budget.alert_fraction <= Decimal::ZERO || self.budget.alert_fraction > Decimal::ONE
        {
            return Err(format!(
                "llm.budget.alert_fraction = {}: must be in (0, 1]",
                self.budget.alert_fraction
            ));
        }
        for (key, v) in [
            ("llm.timeout_ms", self.timeout_ms),
            ("llm.max_tokens", self.max_tokens),
            ("llm.breaker_failures", u64::from(self.breaker_failures)),
            ("llm.max_prompt_bytes", self.max_prompt_bytes as u64),
        ] {
            if v == 0 {
                return Err(format!("{key} = 0: must be positive"));
            }
        }
        if self.max_prompt_bytes > 512 * 1024 {
            return Err(format!(
                "llm.max_prompt_bytes = {}: at most {} (prompts are stored in events)",
                self.max_prompt_bytes,
                512 * 1024
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> LlmConfig {
        serde_json::from_str(json).unwrap()
    }

    fn sample() -> LlmConfig {
        config(
            r#"{
            "providers": {
                "groq": {"kind": "openai", "base_url": "https://api.groq.com/openai/v1", "api_key": "gsk_secret"},
                "local": {"kind": "ollama", "base_url": "http://127.0.0.1:11434"}
            },
            "routes": {"chat": ["local/llama3.2", "groq/llama-3.3-70b-versatile"]},
            "prices": {"groq/llama-3.3-70b-versatile": {"input": "0.6", "output": "0.8"}}
        }"#,
        )
    }

    #[test]
    fn prices_come_from_config_then_table_then_kind() {
        let c = sample();
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(
            c.price(&t("groq/llama-3.3-70b-versatile")).input,
            Decimal::new(6, 1)
        );
        assert_eq!(
            c.price(&t("groq/llama-3.1-8b-instant")).output,
            Decimal::new(8, 2)
        );
        assert_eq!(c.price(&t("local/llama3.2")), Price::FREE);
        assert_eq!(c.price(&t("groq/whatever")), c.unknown_price);
        assert_eq!(c.downgrade_route("chat"), vec![t("local/llama3.2")]);
    }

    #[test]
    fn cost_is_exact() {
        let p = Price {
            input: Decimal::new(59, 2),
            output: Decimal::new(79, 2),
        };
        // 1234 × 0.59 / 1e6 + 567 × 0.79 / 1e6 = 0.00072806 + 0.00044793
        assert_eq!(
            p.cost(1234, 567),
            Decimal::from_str_exact("0.00117599").unwrap()
        );
        assert_eq!(Price::FREE.cost(10, 10), Decimal::ZERO);
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = sample();
        assert_eq!(c.validate(), Ok(()));
        c.routes.insert("x".into(), vec!["nope/m".into()]);
        let err = c.validate().unwrap_err();
        assert!(
            err.contains("llm.routes.x") && err.contains("\"nope\""),
            "{err}"
        );
        let mut c = sample();
        c.providers.get_mut("groq").unwrap().base_url = "ftp://x".into();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("llm.providers.groq.base_url"));
        let mut c = sample();
        c.budget.daily_usd = Some(Decimal::NEGATIVE_ONE);
        assert!(c
            .validate()
            .unwrap_err()
            .contains("llm.budget.daily_usd = -1"));
        let mut c = sample();
        c.routes.insert("y".into(), vec!["groq".into()]);
        assert!(c.validate().unwrap_err().contains("provider/model"));
    }

    #[test]
    fn api_keys_are_redacted_in_debug() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("gsk_secret"), "{text}");
    }

    #[test]
    fn routes_keep_slashes_in_model_names() {
        let t = Target::parse("openrouter/meta-llama/llama-3.3-70b-instruct").unwrap();
        assert_eq!(t.provider, "openrouter");
        assert_eq!(t.model, "meta-llama/llama-3.3-70b-instruct");
    }
}
