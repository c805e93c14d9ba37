//! The `RiskBook` aggregate (context `risk`, id `main`, snapshotted): the limits, the halt (kill switch, daily
//! loss, drawdown), and the assessment of every trade proposal. See `docs/adr/0002-trading-domain.md`.
//!
//! `Assess` evaluates every rule and reports every broken one. Everything it needs comes in through the
//! command ([`RiskView`], [`ProposalToAssess`], [`QuoteCheck`]); every time it compares is an event time (the
//! proposal's `proposed_at`), never the clock. Rejecting a trade is a business outcome (`OrderRefused`);
//! a malformed input (an amount ≤ 0, a reference price of another symbol) is a [`RiskError`].
//!
//! The state stays bounded: admissions are pruned to what the rate rules need, and only the last
//! [`VERDICT_MEMORY`] verdicts are remembered to recognise a repeated assessment.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::JarvisAggregate;
use crate::text::Text;
use crate::trading::values::{
    mul, non_negative, positive, AmountError, OrderId, PricePoint, RiskRule, RiskViolation, Side,
};
use crate::values::Symbol;

/// How many verdicts the book remembers (by order id) to treat a repeated assessment as a no-op.
pub const VERDICT_MEMORY: usize = 64;

/// The window of [`RiskLimits::max_orders_per_minute`], in seconds.
const RATE_WINDOW_SECS: u64 = 60;

/// The limits the book enforces. Amounts are in the quote asset. As configuration (`[risk]` in
/// `jarvis.toml`), a missing key takes its default and an unknown key is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RiskLimits {
    /// Largest notional (quantity × reference price) of one order, buy or sell. Default 1,000.
    pub max_notional_per_order: Decimal,
    /// Largest value of one token's position after a buy. Default 2,500.
    pub max_position_per_token: Decimal,
    /// Largest sum of absolute position values after a buy. Default 10,000.
    pub max_gross_exposure: Decimal,
    /// Cash that a buy must leave untouched. Default 100.
    pub min_cash_reserve: Decimal,
    /// Loss since the start of the UTC day (`day_start_equity − equity`) that halts trading. Default 500.
    pub daily_loss_limit: Decimal,
    /// Drawdown from the high-water mark, as a fraction in (0, 1], that halts trading. Default 0.2.
    pub max_drawdown: Decimal,
    /// Most orders admitted within any 60 s. Default 10.
    pub max_orders_per_minute: u32,
    /// Least time between two admitted orders of one token, in seconds (0 = none). Default 300.
    pub cooldown_per_token_secs: u64,
    /// Largest slippage of a quote, in basis points. Default 100.
    pub max_slippage_bps: Decimal,
    /// Largest price impact of a quote, in basis points. Default 200.
    pub max_price_impact_bps: Decimal,
    /// Oldest reference price a proposal may rely on, in seconds. Default 7,200 (candles are hourly).
    pub max_price_age_secs: u64,
    /// The symbols the book trades; `None` = any symbol. Default `None`.
    pub symbols: Option<BTreeSet<Symbol>>,
}

impl Default for RiskLimits {
    /// Conservative defaults for a small account: see each field.
    fn default() -> Self {
        Self {
            max_notional_per_order: Decimal::from(1_000),
            max_position_per_token: Decimal::from(2_500),
            max_gross_exposure: Decimal::from(10_000),
            min_cash_reserve: Decimal::from(100),
            daily_loss_limit: Decimal::from(500),
            max_drawdown: Decimal::new(2, 1),
            max_orders_per_minute: 10,
            cooldown_per_token_secs: 300,
            max_slippage_bps: Decimal::from(100),
            max_price_impact_bps: Decimal::from(200),
            max_price_age_secs: 7_200,
            symbols: None,
        }
    }
}

impl RiskLimits {
    /// Refuses impossible limits: amounts ≤ 0 (or < 0 for the reserve and the bps limits), a drawdown
    /// outside (0, 1], zero orders per minute, a zero price age, an empty symbol set.
    ///
    /// # Errors
    /// [`RiskError::InvalidLimit`] naming the field and the value.
    pub fn validate(&self) -> Result<(), RiskError> {
        let bad = |field, value: String, reason| {
            RiskError::InvalidLimit(AmountError {
                field,
                value,
                reason,
            })
        };
        positive("max_notional_per_order", self.max_notional_per_order)
            .and(positive(
                "max_position_per_token",
                self.max_position_per_token,
            ))
            .and(positive("max_gross_exposure", self.max_gross_exposure))
            .and(positive("daily_loss_limit", self.daily_loss_limit))
            .and(non_negative("min_cash_reserve", self.min_cash_reserve))
            .and(non_negative("max_slippage_bps", self.max_slippage_bps))
            .and(non_negative(
                "max_price_impact_bps",
                self.max_price_impact_bps,
            ))
            .map_err(RiskError::InvalidLimit)?;
        let dd = self.max_drawdown;
        if dd <= Decimal::ZERO || dd > Decimal::ONE {
            return Err(bad(
                "max_drawdown",
                dd.to_string(),
                "must be a fraction in (0, 1]",
            ));
        }
        if self.max_orders_per_minute == 0 {
            return Err(bad(
                "max_orders_per_minute",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.max_price_age_secs == 0 {
            return Err(bad(
                "max_price_age_secs",
                "0".into(),
                "must be greater than zero",
            ));
        }
        if self.symbols.as_ref().is_some_and(BTreeSet::is_empty) {
            return Err(bad(
                "symbols",
                "[]".into(),
                "must not be empty (null = any symbol)",
            ));
        }
        Ok(())
    }
}

/// What the book needs to know of the portfolio (converted from the portfolio's own view by the caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskView {
    /// Cash, in the quote asset.
    pub cash: Decimal,
    /// Held quantity per symbol, in base units.
    pub positions: BTreeMap<Symbol, Decimal>,
    /// Last price per symbol.
    pub prices: BTreeMap<Symbol, PricePoint>,
    /// Cash plus positions at their last prices.
    pub equity: Decimal,
    /// Highest equity so far.
    pub high_water_mark: Decimal,
    /// Equity at the start of the current UTC day.
    pub day_start_equity: Decimal,
    /// Orders still open at the venue: their cash and exposure are spoken for.
    #[serde(default)]
    pub pending: Vec<PendingOrder>,
}

/// What is still open of an order at the venue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingOrder {
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Base units not yet filled.
    pub quantity: Decimal,
}

/// The proposal to assess (from the `Order` aggregate's `TradeProposed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalToAssess {
    /// The order.
    pub order_id: OrderId,
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Quantity in base units, > 0.
    pub quantity: Decimal,
    /// The price the proposal relies on, > 0, of the same symbol.
    pub reference: PricePoint,
    /// When it was proposed (event time): the time of the verdict.
    pub proposed_at: DateTime<Utc>,
}

/// A venue's quote for the order, when one was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QuoteCheck {
    /// Expected slippage, in basis points.
    pub slippage_bps: Decimal,
    /// Expected price impact, in basis points.
    pub price_impact_bps: Decimal,
    /// The venue's fee, in basis points of the notional.
    #[serde(default)]
    pub fee_bps: Decimal,
}

/// Commands the risk book accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum RiskCommand {
    /// Replace the limits (the same limits again are a no-op).
    SetLimits {
        /// The new limits, validated.
        limits: RiskLimits,
        /// When (event time).
        at: DateTime<Utc>,
    },
    /// Assess a proposal against every rule.
    Assess {
        /// The proposal.
        proposal: ProposalToAssess,
        /// The portfolio as it stands.
        view: RiskView,
        /// The venue's quote, if any (the slippage and impact rules apply only with one).
        quote: Option<QuoteCheck>,
    },
    /// Halt trading (kill switch); a no-op when already halted.
    Halt {
        /// Why, not blank.
        reason: String,
        /// When (event time).
        at: DateTime<Utc>,
    },
    /// Resume trading; a no-op when not halted.
    Resume {
        /// Why, not blank.
        reason: String,
        /// When (event time).
        at: DateTime<Utc>,
        /// The portfolio at the resume. Resuming a drawdown halt measures the drawdown from here until the
        /// portfolio makes a new high; without it the drawdown (still past the limit) halts again at once.
        #[serde(default)]
        drawdown_base: Option<DrawdownBase>,
    },
}

/// Where the drawdown is measured from after an operator resumed a drawdown halt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DrawdownBase {
    /// The equity at the resume: the new peak.
    pub equity: Decimal,
    /// The portfolio's high-water mark at the resume: once it is exceeded, the drawdown is measured from
    /// the high-water mark again.
    pub high_water_mark: Decimal,
}

/// Events of the risk book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum RiskEvent {
    /// New limits.
    RiskLimitsSet {
        /// The limits.
        limits: RiskLimits,
        /// When.
        at: DateTime<Utc>,
    },
    /// A proposal passed every rule.
    OrderAdmitted {
        /// The order.
        order_id: OrderId,
        /// The pair.
        symbol: Symbol,
        /// Buy or sell.
        side: Side,
        /// Quantity × reference price.
        notional: Decimal,
        /// The proposal's time.
        at: DateTime<Utc>,
    },
    /// A proposal broke one or more rules.
    OrderRefused {
        /// The order.
        order_id: OrderId,
        /// The pair.
        symbol: Symbol,
        /// Every broken rule, in rule order.
        reasons: Vec<RiskViolation>,
        /// The proposal's time.
        at: DateTime<Utc>,
    },
    /// Trading halted: by command (`rule` = `halted`) or by the daily loss or drawdown limit.
    TradingHalted {
        /// What halted it.
        rule: RiskRule,
        /// Why, with the numbers.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Trading resumed.
    TradingResumed {
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
        /// After a drawdown halt: where the drawdown is measured from now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drawdown_base: Option<DrawdownBase>,
    },
}

impl RiskEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[
        ("RiskLimitsSet", 1),
        ("OrderAdmitted", 1),
        ("OrderRefused", 1),
        ("TradingHalted", 1),
        ("TradingResumed", 1),
    ];
}

impl DomainEvent for RiskEvent {
    fn event_type(&self) -> String {
        match self {
            Self::RiskLimitsSet { .. } => "RiskLimitsSet",
            Self::OrderAdmitted { .. } => "OrderAdmitted",
            Self::OrderRefused { .. } => "OrderRefused",
            Self::TradingHalted { .. } => "TradingHalted",
            Self::TradingResumed { .. } => "TradingResumed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why the risk book refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RiskError {
    /// An impossible limit.
    #[error("invalid risk limit: {0}")]
    InvalidLimit(AmountError),
    /// A malformed amount in the proposal or the view (≤ 0, an overflow).
    #[error("invalid input: {0}")]
    InvalidInput(#[from] AmountError),
    /// The reference price is of another symbol than the proposal.
    #[error("proposal {order_id} is for {symbol} but its reference price is for {reference}")]
    ReferenceMismatch {
        /// The order.
        order_id: OrderId,
        /// The proposal's symbol.
        symbol: Symbol,
        /// The reference price's symbol.
        reference: Symbol,
    },
    /// A held position has no price in the view, so the gross exposure cannot be valued.
    #[error("view has no price for {symbol}, held quantity {quantity}")]
    MissingPrice {
        /// The symbol.
        symbol: Symbol,
        /// Its held quantity.
        quantity: Decimal,
    },
    /// The order was already assessed from another proposal.
    #[error("order {order_id} was already assessed: recorded {recorded}; offered {offered}")]
    ConflictingAssessment {
        /// The order.
        order_id: OrderId,
        /// The recorded verdict.
        recorded: String,
        /// The proposal offered now.
        offered: String,
    },
    /// A blank reason.
    #[error("{field} must not be blank")]
    BlankReason {
        /// The field.
        field: &'static str,
    },
}

/// The current halt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Halt {
    /// What halted trading: `Halted` (command), `DailyLossLimit` or `MaxDrawdown`.
    pub rule: RiskRule,
    /// Why, with the numbers.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A recorded verdict, as its event states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    /// `OrderAdmitted`.
    Admitted {
        /// The pair.
        symbol: Symbol,
        /// Buy or sell.
        side: Side,
        /// Quantity × reference price.
        notional: Decimal,
        /// The proposal's time.
        at: DateTime<Utc>,
    },
    /// `OrderRefused`.
    Refused {
        /// The pair.
        symbol: Symbol,
        /// The broken rules.
        rules: Vec<RiskRule>,
        /// The proposal's time.
        at: DateTime<Utc>,
    },
}

impl Verdict {
    /// Whether `p` (with its notional) is the proposal this verdict was given on, as far as the event tells.
    fn matches(&self, p: &ProposalToAssess, notional: Decimal) -> bool {
        match self {
            Self::Admitted {
                symbol,
                side,
                notional: n,
                at,
            } => *symbol == p.symbol && *side == p.side && *n == notional && *at == p.proposed_at,
            Self::Refused { symbol, at, .. } => *symbol == p.symbol && *at == p.proposed_at,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admitted {
                symbol,
                side,
                notional,
                at,
            } => {
                write!(f, "admitted {side} {symbol} notional {notional} at {at}")
            }
            Self::Refused { symbol, rules, at } => {
                write!(f, "refused {symbol} at {at} ({rules:?})")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Admission {
    symbol: Symbol,
    at: DateTime<Utc>,
}

/// The risk book's state: the limits, the halt, the recent admissions and the recent verdicts.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskBook {
    limits: RiskLimits,
    limits_set_at: Option<DateTime<Utc>>,
    halt: Option<Halt>,
    #[serde(default)]
    drawdown_base: Option<DrawdownBase>,
    admissions: Vec<Admission>,
    verdicts: VecDeque<(OrderId, Verdict)>,
}

fn secs(n: u64) -> TimeDelta {
    i64::try_from(n)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .unwrap_or(TimeDelta::MAX)
}

fn before(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn seconds_of(d: TimeDelta) -> Decimal {
    Decimal::new(d.num_milliseconds(), 3).normalize()
}

fn checked(
    field: &'static str,
    op: &str,
    a: Decimal,
    b: Decimal,
    r: Option<Decimal>,
) -> Result<Decimal, AmountError> {
    r.map(|r| r.normalize()).ok_or_else(|| AmountError {
        field,
        value: format!("{a} {op} {b}"),
        reason: "overflows",
    })
}

fn add(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    checked(field, "+", a, b, a.checked_add(b))
}

fn sub(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    checked(field, "-", a, b, a.checked_sub(b))
}

fn not_blank(field: &'static str, text: &str) -> Result<(), RiskError> {
    if text.trim().is_empty() {
        Err(RiskError::BlankReason { field })
    } else {
        Ok(())
    }
}

fn broke(
    rule: RiskRule,
    limit: Option<Decimal>,
    actual: Option<Decimal>,
    detail: Text,
) -> RiskViolation {
    RiskViolation {
        rule,
        limit,
        actual,
        detail,
    }
}

impl RiskBook {
    /// The limits in force (the defaults until `SetLimits`).
    pub fn limits(&self) -> &RiskLimits {
        &self.limits
    }

    /// The current halt, if trading is halted.
    pub fn halt(&self) -> Option<&Halt> {
        self.halt.as_ref()
    }

    /// The recorded verdict on an order, if it is among the last [`VERDICT_MEMORY`].
    pub fn verdict(&self, order_id: &OrderId) -> Option<&Verdict> {
        self.verdicts
            .iter()
            .rev()
            .find(|(id, _)| id == order_id)
            .map(|(_, v)| v)
    }

    /// Decides a command. Pure: returns the events, or the refusal.
    ///
    /// # Errors
    /// [`RiskError`] for invalid limits, malformed proposals or views, a conflicting repeated assessment, or
    /// a blank reason.
    pub fn decide(&self, command: RiskCommand) -> Result<Vec<RiskEvent>, RiskError> {
        match command {
            RiskCommand::SetLimits { limits, at } => {
                limits.validate()?;
                if self.limits_set_at.is_some() && self.limits == limits {
                    return Ok(vec![]);
                }
                Ok(vec![RiskEvent::RiskLimitsSet { limits, at }])
            }
            RiskCommand::Halt { reason, at } => {
                not_blank("reason", &reason)?;
                // An operator's halt supersedes an automatic one (which might lift by itself on a new
                // day); halting an operator-halted book again changes nothing.
                Ok(match &self.halt {
                    Some(h) if h.rule == RiskRule::Halted => vec![],
                    _ => vec![RiskEvent::TradingHalted {
                        rule: RiskRule::Halted,
                        reason,
                        at,
                    }],
                })
            }
            RiskCommand::Resume {
                reason,
                at,
                drawdown_base,
            } => {
                not_blank("reason", &reason)?;
                if let Some(base) = &drawdown_base {
                    positive("drawdown_base.equity", base.equity)?;
                    positive("drawdown_base.high_water_mark", base.high_water_mark)?;
                }
                Ok(match &self.halt {
                    Some(h) => vec![RiskEvent::TradingResumed {
                        reason,
                        at,
                        drawdown_base: drawdown_base.filter(|_| h.rule == RiskRule::MaxDrawdown),
                    }],
                    None => vec![],
                })
            }
            RiskCommand::Assess {
                proposal,
                view,
                quote,
            } => self.assess(proposal, &view, quote.as_ref()),
        }
    }

    fn assess(
        &self,
        p: ProposalToAssess,
        view: &RiskView,
        quote: Option<&QuoteCheck>,
    ) -> Result<Vec<RiskEvent>, RiskError> {
        positive("quantity", p.quantity)?;
        positive("reference.price", p.reference.price)?;
        if p.reference.symbol != p.symbol {
            return Err(RiskError::ReferenceMismatch {
                order_id: p.order_id,
                symbol: p.symbol,
                reference: p.reference.symbol,
            });
        }
        for (symbol, point) in &view.prices {
            if point.price <= Decimal::ZERO {
                return Err(AmountError {
                    field: "view.prices",
                    value: format!("{symbol} = {}", point.price),
                    reason: "must be greater than zero",
                }
                .into());
            }
        }
        let price = p.reference.price;
        let notional = mul("notional", p.quantity, price)?.normalize();
        if let Some(recorded) = self.verdict(&p.order_id) {
            if recorded.matches(&p, notional) {
                return Ok(vec![]);
            }
            return Err(RiskError::ConflictingAssessment {
                order_id: p.order_id,
                recorded: recorded.to_string(),
                offered: format!(
                    "{} {} {} at {price} (notional {notional}) proposed at {}",
                    p.side, p.quantity, p.symbol, p.proposed_at
                ),
            });
        }

        let l = &self.limits;
        let (sym, now) = (&p.symbol, p.proposed_at);
        // A daily-loss halt lasts for the rest of its UTC day: the first proposal of a later day resumes
        // trading (and is then judged on that day's own loss). Other halts wait for an operator.
        let mut resumed = None;
        let halt = match &self.halt {
            Some(h)
                if h.rule == RiskRule::DailyLossLimit && now.date_naive() > h.at.date_naive() =>
            {
                resumed = Some(RiskEvent::TradingResumed {
                    drawdown_base: None,
                    reason: format!(
                        "a new UTC day ({}) after the daily loss halt of {}",
                        now.date_naive(),
                        h.at.date_naive()
                    ),
                    at: now,
                });
                None
            }
            other => other.as_ref(),
        };
        let mut v = Vec::new();
        if let Some(h) = halt {
            let (since, rule, reason) = (h.at, h.rule, h.reason.clone());
            let detail =
                Text::lazy(move || format!("trading is halted since {since} ({rule:?}): {reason}"));
            v.push(broke(RiskRule::Halted, None, None, detail));
        }
        let loss = sub("daily loss", view.day_start_equity, view.equity)?;
        if loss >= l.daily_loss_limit {
            let (equity, start, limit) = (view.equity, view.day_start_equity, l.daily_loss_limit);
            let detail = Text::lazy(move || {
                format!(
                    "loss since the start of the day {loss} (equity {equity} from {start}) reaches the daily loss limit {limit}"
                )
            });
            v.push(broke(
                RiskRule::DailyLossLimit,
                Some(l.daily_loss_limit),
                Some(loss),
                detail,
            ));
        }
        // After an operator resumed a drawdown halt, the peak is the equity at the resume until the
        // portfolio makes a new high.
        let (peak, peak_name) = match &self.drawdown_base {
            Some(base) if view.high_water_mark <= base.high_water_mark => {
                (base.equity, "the equity at the resume")
            }
            _ => (view.high_water_mark, "the high-water mark"),
        };
        if peak > Decimal::ZERO {
            let fall = sub("drawdown", peak, view.equity)?;
            let dd = fall.checked_div(peak).unwrap_or(Decimal::ZERO).normalize();
            if dd >= l.max_drawdown {
                let (equity, limit) = (view.equity, l.max_drawdown);
                let detail = Text::lazy(move || {
                    format!(
                        "drawdown {dd} (equity {equity} below {peak_name} {peak}) reaches the limit {limit}"
                    )
                });
                v.push(broke(
                    RiskRule::MaxDrawdown,
                    Some(l.max_drawdown),
                    Some(dd),
                    detail,
                ));
            }
        }
        let halting: Vec<&RiskViolation> = v
            .iter()
            .filter(|x| matches!(x.rule, RiskRule::DailyLossLimit | RiskRule::MaxDrawdown))
            .collect();
        let halt_now = match (halt, halting.first()) {
            (None, Some(first)) => Some(RiskEvent::TradingHalted {
                rule: first.rule,
                reason: halting
                    .iter()
                    .map(|x| x.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                at: now,
            }),
            _ => None,
        };
        if l.symbols.as_ref().is_some_and(|s| !s.contains(sym)) {
            v.push(broke(
                RiskRule::UnknownSymbol,
                None,
                None,
                Text::lazy({
                    let sym = sym.clone();
                    move || format!("{sym} is not among the symbols the book trades")
                }),
            ));
        }
        let age = now - p.reference.at;
        let max_age = secs(l.max_price_age_secs);
        let max_age_dec = Decimal::from(l.max_price_age_secs);
        if age > max_age {
            let (sym, at, max) = (sym.clone(), p.reference.at, l.max_price_age_secs);
            let detail = Text::lazy(move || {
                format!(
                    "price of {sym} from {at} is {}s old at {now}, above the maximum age of {max}s",
                    seconds_of(age)
                )
            });
            v.push(broke(
                RiskRule::StalePrice,
                Some(max_age_dec),
                Some(seconds_of(age)),
                detail,
            ));
        } else if -age > max_age {
            let (sym, at, max) = (sym.clone(), p.reference.at, l.max_price_age_secs);
            let detail = Text::lazy(move || {
                format!(
                    "price of {sym} from {at} is {}s after the proposal at {now} (a look-ahead beyond {max}s)",
                    seconds_of(-age)
                )
            });
            v.push(broke(
                RiskRule::StalePrice,
                Some(max_age_dec),
                Some(seconds_of(age)),
                detail,
            ));
        }
        if notional > l.max_notional_per_order {
            let (quantity, limit) = (p.quantity, l.max_notional_per_order);
            let detail = Text::lazy(move || {
                format!("notional {notional} ({quantity} × {price}) is above the limit {limit} per order")
            });
            v.push(broke(
                RiskRule::MaxNotionalPerOrder,
                Some(l.max_notional_per_order),
                Some(notional),
                detail,
            ));
        }
        let held = view.positions.get(sym).copied().unwrap_or_default();
        // Open orders at the venue: a pending buy has spoken for its cash and adds to its position; a
        // pending sell has spoken for what it sells.
        let mut pending_buys: BTreeMap<&Symbol, Decimal> = BTreeMap::new();
        let mut pending_sell = Decimal::ZERO;
        for o in &view.pending {
            positive("pending.quantity", o.quantity)?;
            match o.side {
                Side::Buy => {
                    let q = pending_buys.entry(&o.symbol).or_default();
                    *q = add("pending buys", *q, o.quantity)?;
                }
                Side::Sell if o.symbol == *sym => {
                    pending_sell = add("pending sells", pending_sell, o.quantity)?;
                }
                Side::Sell => {}
            }
        }
        let mut pending_cash = Decimal::ZERO;
        for (s, q) in &pending_buys {
            let mark = match view.prices.get(*s) {
                Some(point) => point.price,
                None if *s == sym => price,
                None => {
                    return Err(RiskError::MissingPrice {
                        symbol: (*s).clone(),
                        quantity: *q,
                    })
                }
            };
            pending_cash = add("pending buys", pending_cash, mul("pending buys", *q, mark)?)?;
        }
        match p.side {
            Side::Buy => {
                let pending_same = pending_buys.get(sym).copied().unwrap_or_default();
                let after = add("position", add("position", held, pending_same)?, p.quantity)?;
                let value = mul("position value", after, price)?.normalize();
                if value > l.max_position_per_token {
                    let (sym, limit) = (sym.clone(), l.max_position_per_token);
                    let detail = Text::lazy(move || {
                        format!(
                            "{sym} position after the buy {after} × {price} = {value} is above the limit {limit}"
                        )
                    });
                    v.push(broke(
                        RiskRule::MaxPositionPerToken,
                        Some(l.max_position_per_token),
                        Some(value),
                        detail,
                    ));
                }
                let mut held_symbols: BTreeSet<&Symbol> = view.positions.keys().collect();
                held_symbols.extend(pending_buys.keys().copied());
                held_symbols.insert(sym);
                let mut gross = Decimal::ZERO;
                for s in held_symbols {
                    let mut qty = add(
                        "gross exposure",
                        view.positions.get(s).copied().unwrap_or_default(),
                        pending_buys.get(s).copied().unwrap_or_default(),
                    )?;
                    if s == sym {
                        qty = after;
                    }
                    if qty.is_zero() {
                        continue;
                    }
                    let mark = match view.prices.get(s) {
                        Some(point) => point.price,
                        None if s == sym => price,
                        None => {
                            return Err(RiskError::MissingPrice {
                                symbol: s.clone(),
                                quantity: qty,
                            })
                        }
                    };
                    gross = add(
                        "gross exposure",
                        gross,
                        mul("gross exposure", qty.abs(), mark)?,
                    )?;
                }
                if gross > l.max_gross_exposure {
                    let limit = l.max_gross_exposure;
                    let detail = Text::lazy(move || {
                        format!("gross exposure after the buy {gross} is above the limit {limit}")
                    });
                    v.push(broke(
                        RiskRule::MaxGrossExposure,
                        Some(l.max_gross_exposure),
                        Some(gross),
                        detail,
                    ));
                }
                // What the buy can cost at worst: its notional with the quote's slippage and the fee.
                let cost = match quote {
                    Some(q) => {
                        let bps = add("cost", q.slippage_bps, q.fee_bps)?;
                        let extra = mul("cost", notional, bps)?
                            .checked_div(Decimal::from(10_000))
                            .unwrap_or_default();
                        add("cost", notional, extra)?.normalize()
                    }
                    None => notional,
                };
                let cash_after = sub("cash", sub("cash", view.cash, pending_cash)?, cost)?;
                if cash_after < l.min_cash_reserve {
                    let (cash, reserve) = (view.cash, l.min_cash_reserve);
                    let detail = Text::lazy(move || {
                        format!(
                            "cash after the buy {cash} − {pending_cash} pending − {cost} (notional {notional} with slippage and fee) = {cash_after} is below the reserve {reserve}"
                        )
                    });
                    v.push(broke(
                        RiskRule::MinCashReserve,
                        Some(l.min_cash_reserve),
                        Some(cash_after),
                        detail,
                    ));
                }
            }
            Side::Sell => {
                let available = sub("position", held, pending_sell)?;
                if p.quantity > available {
                    let (quantity, sym) = (p.quantity, sym.clone());
                    let detail = Text::lazy(move || {
                        format!(
                            "sell of {quantity} {sym} is above the held {held} less {pending_sell} already being sold (no shorting)"
                        )
                    });
                    v.push(broke(
                        RiskRule::InsufficientPosition,
                        Some(available),
                        Some(p.quantity),
                        detail,
                    ));
                }
            }
        }
        let window_start = before(now, secs(RATE_WINDOW_SECS));
        let recent = self
            .admissions
            .iter()
            .filter(|a| a.at > window_start && a.at <= now)
            .count();
        if recent >= l.max_orders_per_minute as usize {
            let limit = l.max_orders_per_minute;
            let detail = Text::lazy(move || {
                format!("{recent} orders admitted in the minute before {now}, the limit is {limit}")
            });
            let (limit, actual) = (
                Decimal::from(l.max_orders_per_minute),
                Decimal::from(recent),
            );
            v.push(broke(
                RiskRule::MaxOrdersPerMinute,
                Some(limit),
                Some(actual),
                detail,
            ));
        }
        let last = self
            .admissions
            .iter()
            .filter(|a| &a.symbol == sym)
            .map(|a| a.at)
            .max();
        if let Some(last) = last.filter(|_| l.cooldown_per_token_secs > 0) {
            let elapsed = now - last;
            if elapsed < secs(l.cooldown_per_token_secs) {
                let (sym, cooldown) = (sym.clone(), l.cooldown_per_token_secs);
                let detail = Text::lazy(move || {
                    format!(
                        "last {sym} order admitted at {last}, {}s before {now}, inside the cooldown of {cooldown}s",
                        seconds_of(elapsed)
                    )
                });
                let limit = Decimal::from(l.cooldown_per_token_secs);
                v.push(broke(
                    RiskRule::CooldownPerToken,
                    Some(limit),
                    Some(seconds_of(elapsed)),
                    detail,
                ));
            }
        }
        if let Some(q) = quote {
            if q.slippage_bps > l.max_slippage_bps {
                let (slippage, limit) = (q.slippage_bps, l.max_slippage_bps);
                let detail = Text::lazy(move || {
                    format!("slippage {slippage} bps is above the limit {limit} bps")
                });
                v.push(broke(
                    RiskRule::MaxSlippage,
                    Some(l.max_slippage_bps),
                    Some(q.slippage_bps),
                    detail,
                ));
            }
            if q.price_impact_bps > l.max_price_impact_bps {
                let (impact, limit) = (q.price_impact_bps, l.max_price_impact_bps);
                let detail = Text::lazy(move || {
                    format!("price impact {impact} bps is above the limit {limit} bps")
                });
                v.push(broke(
                    RiskRule::MaxPriceImpact,
                    Some(l.max_price_impact_bps),
                    Some(q.price_impact_bps),
                    detail,
                ));
            }
        }

        let mut events: Vec<RiskEvent> = resumed.into_iter().chain(halt_now).collect();
        events.push(if v.is_empty() {
            RiskEvent::OrderAdmitted {
                order_id: p.order_id,
                symbol: p.symbol,
                side: p.side,
                notional,
                at: now,
            }
        } else {
            RiskEvent::OrderRefused {
                order_id: p.order_id,
                symbol: p.symbol,
                reasons: v,
                at: now,
            }
        });
        Ok(events)
    }

    fn remember(&mut self, order_id: OrderId, verdict: Verdict) {
        self.verdicts.push_back((order_id, verdict));
        while self.verdicts.len() > VERDICT_MEMORY {
            self.verdicts.pop_front();
        }
    }

    /// Keeps every admission inside the rate window of the newest, and the latest of each symbol inside the
    /// cooldown: all the rate rules need.
    fn prune(&mut self) {
        let Some(newest) = self.admissions.iter().map(|a| a.at).max() else {
            return;
        };
        let rate_start = before(newest, secs(RATE_WINDOW_SECS));
        let cooldown_start = before(newest, secs(self.limits.cooldown_per_token_secs));
        let mut latest: BTreeMap<Symbol, DateTime<Utc>> = BTreeMap::new();
        for a in &self.admissions {
            let e = latest.entry(a.symbol.clone()).or_insert(a.at);
            *e = (*e).max(a.at);
        }
        self.admissions.retain(|a| {
            a.at > rate_start || (a.at > cooldown_start && latest.get(&a.symbol) == Some(&a.at))
        });
    }
}

impl Aggregate for RiskBook {
    const TYPE: &'static str = "RiskBook";
    type Command = RiskCommand;
    type Event = RiskEvent;
    type Error = RiskError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RiskEvent::RiskLimitsSet { limits, at } => {
                self.limits = limits;
                self.limits_set_at = Some(at);
                self.prune();
            }
            RiskEvent::OrderAdmitted {
                order_id,
                symbol,
                side,
                notional,
                at,
            } => {
                self.admissions.push(Admission {
                    symbol: symbol.clone(),
                    at,
                });
                self.prune();
                self.remember(
                    order_id,
                    Verdict::Admitted {
                        symbol,
                        side,
                        notional,
                        at,
                    },
                );
            }
            RiskEvent::OrderRefused {
                order_id,
                symbol,
                reasons,
                at,
            } => {
                let rules = reasons.iter().map(|r| r.rule).collect();
                self.remember(order_id, Verdict::Refused { symbol, rules, at });
            }
            RiskEvent::TradingHalted { rule, reason, at } => {
                self.halt = Some(Halt { rule, reason, at })
            }
            RiskEvent::TradingResumed { drawdown_base, .. } => {
                self.halt = None;
                if drawdown_base.is_some() {
                    self.drawdown_base = drawdown_base;
                }
            }
        }
    }
}

impl JarvisAggregate for RiskBook {
    const CONTEXT: &'static str = "risk";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTypes as _;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<RiskBook>;

    fn d(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn sym(text: &str) -> Symbol {
        Symbol::new_checked(text).unwrap()
    }

    /// `secs` after 2024-01-01T12:00:00Z.
    fn t(secs: i64) -> DateTime<Utc> {
        "2024-01-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(secs)
    }

    fn point(symbol: &str, price: &str, at: i64) -> PricePoint {
        PricePoint {
            symbol: sym(symbol),
            price: d(price),
            at: t(at),
        }
    }

    /// Buy 5 BTC/USDT at 100 (notional 500), priced at t(0), proposed at t(60).
    fn buy(qty: &str) -> ProposalToAssess {
        ProposalToAssess {
            order_id: OrderId::derived("candle-1/BTC/USDT"),
            symbol: sym("BTC/USDT"),
            side: Side::Buy,
            quantity: d(qty),
            reference: point("BTC/USDT", "100", 0),
            proposed_at: t(60),
        }
    }

    fn sell(qty: &str) -> ProposalToAssess {
        ProposalToAssess {
            side: Side::Sell,
            ..buy(qty)
        }
    }

    /// 10,000 cash, no positions, equity flat at 10,000.
    fn view() -> RiskView {
        RiskView {
            cash: d("10000"),
            positions: BTreeMap::new(),
            prices: BTreeMap::from([(sym("BTC/USDT"), point("BTC/USDT", "100", 0))]),
            equity: d("10000"),
            high_water_mark: d("10000"),
            day_start_equity: d("10000"),
            pending: vec![],
        }
    }

    fn holding(qty: &str) -> RiskView {
        RiskView {
            positions: BTreeMap::from([(sym("BTC/USDT"), d(qty))]),
            ..view()
        }
    }

    #[test]
    fn an_operator_halt_supersedes_a_daily_loss_halt() {
        let mut book = RiskBook::default();
        book.apply(RiskEvent::TradingHalted {
            rule: RiskRule::DailyLossLimit,
            reason: "loss".into(),
            at: t(0),
        });
        let events = book
            .decide(RiskCommand::Halt {
                reason: "manual".into(),
                at: t(1),
            })
            .unwrap();
        assert!(
            matches!(
                &events[..],
                [RiskEvent::TradingHalted {
                    rule: RiskRule::Halted,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_daily_loss_halt_lifts_on_the_next_utc_day_but_an_operator_halt_does_not() {
        let day_one: DateTime<Utc> = "2021-05-19T13:00:00Z".parse().unwrap();
        let halted = |rule| RiskEvent::TradingHalted {
            rule,
            reason: "loss".into(),
            at: day_one,
        };
        let mut book = RiskBook::default();
        book.apply(halted(RiskRule::DailyLossLimit));
        let next_day = "2021-05-20T01:00:00Z".parse().unwrap();
        let mut proposal = buy("5");
        proposal.proposed_at = next_day;
        proposal.reference.at = next_day;
        let events = book.decide(assess(proposal.clone(), view())).unwrap();
        assert!(
            matches!(events[0], RiskEvent::TradingResumed { .. }),
            "{events:?}"
        );
        assert!(
            matches!(events[1], RiskEvent::OrderAdmitted { .. }),
            "{events:?}"
        );
        let mut book = RiskBook::default();
        book.apply(halted(RiskRule::Halted));
        let events = book.decide(assess(proposal, view())).unwrap();
        assert!(
            matches!(events[0], RiskEvent::OrderRefused { .. }),
            "{events:?}"
        );
    }

    fn assess(p: ProposalToAssess, view: RiskView) -> RiskCommand {
        RiskCommand::Assess {
            proposal: p,
            view,
            quote: None,
        }
    }

    fn admitted(key: &str, symbol: &str, at: i64) -> RiskEvent {
        RiskEvent::OrderAdmitted {
            order_id: OrderId::derived(key),
            symbol: sym(symbol),
            side: Side::Buy,
            notional: d("500"),
            at: t(at),
        }
    }

    fn book(events: Vec<RiskEvent>) -> RiskBook {
        let mut b = RiskBook::default();
        events.into_iter().for_each(|e| b.apply(e));
        b
    }

    fn limits_set(limits: RiskLimits) -> RiskEvent {
        RiskEvent::RiskLimitsSet { limits, at: t(0) }
    }

    /// The violations of a refusal (empty when admitted).
    fn violations(given: Vec<RiskEvent>, command: RiskCommand) -> Vec<RiskViolation> {
        match book(given).decide(command).unwrap().pop() {
            Some(RiskEvent::OrderRefused { reasons, .. }) => reasons,
            Some(RiskEvent::OrderAdmitted { .. }) => vec![],
            other => panic!("no verdict: {other:?}"),
        }
    }

    fn rules(v: &[RiskViolation]) -> Vec<RiskRule> {
        v.iter().map(|x| x.rule).collect()
    }

    /// Asserts the only violation is `rule` with `limit`, `actual`, and a detail containing both numbers.
    fn only(v: Vec<RiskViolation>, rule: RiskRule, limit: &str, actual: &str) {
        assert_eq!(rules(&v), vec![rule], "{v:?}");
        assert_eq!(
            (v[0].limit, v[0].actual),
            (Some(d(limit)), Some(d(actual))),
            "{v:?}"
        );
        assert!(
            v[0].detail.contains(limit) && v[0].detail.contains(actual),
            "{}",
            v[0].detail
        );
    }

    #[test]
    fn clean_buy_is_admitted_at_the_proposal_time() {
        Given::with(())
            .given_no_previous_events()
            .when(assess(buy("5"), view()))
            .then_expect_events(vec![admitted("candle-1/BTC/USDT", "BTC/USDT", 60)]);
    }

    #[test]
    fn halted_book_refuses_everything_until_resumed() {
        let halted = RiskEvent::TradingHalted {
            rule: RiskRule::Halted,
            reason: "kill switch".into(),
            at: t(1),
        };
        let v = violations(vec![halted.clone()], assess(sell("1"), holding("5")));
        assert_eq!(rules(&v), vec![RiskRule::Halted]);
        assert!(v[0].detail.contains("kill switch"), "{}", v[0].detail);
        let resumed = RiskEvent::TradingResumed {
            reason: "checked".into(),
            at: t(2),
            drawdown_base: None,
        };
        assert!(violations(vec![halted.clone(), resumed], assess(buy("5"), view())).is_empty());
        Given::with(())
            .given(vec![halted.clone()])
            .when(RiskCommand::Halt {
                reason: "again".into(),
                at: t(3),
            })
            .then_expect_events(vec![]);
        Given::with(())
            .given_no_previous_events()
            .when(RiskCommand::Resume {
                reason: "nothing to resume".into(),
                at: t(3),
                drawdown_base: None,
            })
            .then_expect_events(vec![]);
        Given::with(())
            .given_no_previous_events()
            .when(RiskCommand::Halt {
                reason: " ".into(),
                at: t(3),
            })
            .then_expect_error_message("reason must not be blank");
    }

    #[test]
    fn resuming_a_drawdown_halt_measures_the_drawdown_from_the_resume_until_a_new_high() {
        let halted = RiskEvent::TradingHalted {
            rule: RiskRule::MaxDrawdown,
            reason: "drawdown 0.3".into(),
            at: t(1),
        };
        let base = DrawdownBase {
            equity: d("7000"),
            high_water_mark: d("10000"),
        };
        let resumed = RiskEvent::TradingResumed {
            reason: "reviewed".into(),
            at: t(2),
            drawdown_base: Some(base),
        };
        Given::with(())
            .given(vec![halted.clone()])
            .when(RiskCommand::Resume {
                reason: "reviewed".into(),
                at: t(2),
                drawdown_base: Some(base),
            })
            .then_expect_events(vec![resumed.clone()]);
        let at = |equity: &str, hwm: &str| RiskView {
            equity: d(equity),
            cash: d(equity),
            high_water_mark: d(hwm),
            day_start_equity: d(equity),
            ..view()
        };
        // 30% below the old peak, but flat since the resume: trades.
        assert!(violations(
            vec![halted.clone(), resumed.clone()],
            assess(buy("5"), at("7000", "10000"))
        )
        .is_empty());
        // 20% below the equity at the resume: the limit, measured from the resume.
        let v = violations(
            vec![halted.clone(), resumed.clone()],
            assess(buy("5"), at("5600", "10000")),
        );
        only(v.clone(), RiskRule::MaxDrawdown, "0.2", "0.2");
        assert!(
            v[0].detail.contains("the equity at the resume 7000"),
            "{}",
            v[0].detail
        );
        // A new high: the high-water mark is the peak again.
        only(
            violations(vec![halted, resumed], assess(buy("5"), at("8400", "10500"))),
            RiskRule::MaxDrawdown,
            "0.2",
            "0.2",
        );
    }

    #[test]
    fn daily_loss_halts_then_refuses() {
        let ok = RiskView {
            equity: d("9600"),
            high_water_mark: d("9600"),
            ..view()
        };
        assert!(violations(vec![], assess(buy("5"), ok)).is_empty());
        let lost = RiskView {
            equity: d("9500"),
            high_water_mark: d("9500"),
            ..view()
        };
        let events = Given::with(())
            .given_no_previous_events()
            .when(assess(buy("5"), lost.clone()))
            .inspect_result()
            .unwrap();
        let [RiskEvent::TradingHalted {
            rule: RiskRule::DailyLossLimit,
            reason,
            at,
        }, RiskEvent::OrderRefused { reasons, .. }] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert!(reason.contains("500") && *at == t(60), "{reason}");
        only(reasons.clone(), RiskRule::DailyLossLimit, "500", "500");
        // Already halted: no second halt, and the halt is reported too.
        let v = violations(
            events,
            assess(
                ProposalToAssess {
                    order_id: OrderId::derived("2"),
                    ..buy("5")
                },
                lost,
            ),
        );
        assert_eq!(rules(&v), vec![RiskRule::Halted, RiskRule::DailyLossLimit]);
    }

    #[test]
    fn drawdown_halts_then_refuses() {
        let ok = RiskView {
            high_water_mark: d("12000"),
            ..view()
        };
        assert!(violations(vec![], assess(buy("5"), ok)).is_empty());
        let deep = RiskView {
            high_water_mark: d("12500"),
            ..view()
        };
        let events = book(vec![]).decide(assess(buy("5"), deep)).unwrap();
        assert!(
            matches!(
                &events[0],
                RiskEvent::TradingHalted {
                    rule: RiskRule::MaxDrawdown,
                    ..
                }
            ),
            "{events:?}"
        );
        let Some(RiskEvent::OrderRefused { reasons, .. }) = events.get(1) else {
            panic!("{events:?}")
        };
        only(reasons.clone(), RiskRule::MaxDrawdown, "0.2", "0.2");
        assert!(book(events).halt().is_some());
    }

    #[test]
    fn unknown_symbol() {
        let only_eth = RiskLimits {
            symbols: Some(BTreeSet::from([sym("ETH/USDT")])),
            ..RiskLimits::default()
        };
        let v = violations(vec![limits_set(only_eth)], assess(buy("5"), view()));
        assert_eq!(rules(&v), vec![RiskRule::UnknownSymbol]);
        assert!(v[0].detail.contains("BTC/USDT"));
        let with_btc = RiskLimits {
            symbols: Some(BTreeSet::from([sym("BTC/USDT")])),
            ..RiskLimits::default()
        };
        assert!(violations(vec![limits_set(with_btc)], assess(buy("5"), view())).is_empty());
    }

    #[test]
    fn stale_price_and_look_ahead() {
        let at = |secs| ProposalToAssess {
            proposed_at: t(secs),
            ..buy("5")
        };
        assert!(violations(vec![], assess(at(7_200), view())).is_empty());
        only(
            violations(vec![], assess(at(7_201), view())),
            RiskRule::StalePrice,
            "7200",
            "7201",
        );
        let v = violations(vec![], assess(at(-7_201), view()));
        assert_eq!(
            (rules(&v), v[0].actual),
            (vec![RiskRule::StalePrice], Some(d("-7201")))
        );
        assert!(
            v[0].detail.contains("look-ahead") && v[0].detail.contains("7201s after"),
            "{}",
            v[0].detail
        );
    }

    #[test]
    fn max_notional_per_order_on_both_sides() {
        assert!(violations(vec![], assess(buy("10"), view())).is_empty());
        only(
            violations(vec![], assess(buy("10.01"), view())),
            RiskRule::MaxNotionalPerOrder,
            "1000",
            "1001",
        );
        only(
            violations(vec![], assess(sell("10.01"), holding("20"))),
            RiskRule::MaxNotionalPerOrder,
            "1000",
            "1001",
        );
    }

    #[test]
    fn max_position_per_token_only_on_buys() {
        assert!(violations(vec![], assess(buy("10"), holding("15"))).is_empty());
        only(
            violations(vec![], assess(buy("10"), holding("16"))),
            RiskRule::MaxPositionPerToken,
            "2500",
            "2600",
        );
        // A sell that reduces an oversized position is not checked against it.
        assert!(violations(vec![], assess(sell("5"), holding("30"))).is_empty());
    }

    #[test]
    fn max_gross_exposure_counts_every_position() {
        let with_eth = |eth: &str| {
            let mut v = view();
            v.positions.insert(sym("ETH/USDT"), d(eth));
            v.prices
                .insert(sym("ETH/USDT"), point("ETH/USDT", "100", 0));
            v
        };
        assert!(violations(vec![], assess(buy("10"), with_eth("90"))).is_empty());
        only(
            violations(vec![], assess(buy("10"), with_eth("91"))),
            RiskRule::MaxGrossExposure,
            "10000",
            "10100",
        );
        let mut unpriced = with_eth("1");
        unpriced.prices.clear();
        let err = book(vec![]).decide(assess(buy("1"), unpriced)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "view has no price for ETH/USDT, held quantity 1"
        );
    }

    #[test]
    fn min_cash_reserve() {
        assert!(violations(
            vec![],
            assess(
                buy("10"),
                RiskView {
                    cash: d("1100"),
                    ..view()
                }
            )
        )
        .is_empty());
        only(
            violations(
                vec![],
                assess(
                    buy("10"),
                    RiskView {
                        cash: d("1099"),
                        ..view()
                    },
                ),
            ),
            RiskRule::MinCashReserve,
            "100",
            "99",
        );
    }

    #[test]
    fn the_reserve_counts_pending_buys_slippage_and_fee() {
        let pending = |qty: &str| PendingOrder {
            symbol: sym("BTC/USDT"),
            side: Side::Buy,
            quantity: d(qty),
        };
        // 2,000 cash − 10 pending × 100 − 5 × 100 = 500: above the reserve of 100.
        let with_pending = |cash: &str, qty: &str| RiskView {
            cash: d(cash),
            pending: vec![pending(qty)],
            ..view()
        };
        assert!(violations(vec![], assess(buy("5"), with_pending("2000", "10"))).is_empty());
        // 1,599 − 1,000 pending − 500 = 99: below.
        only(
            violations(vec![], assess(buy("5"), with_pending("1599", "10"))),
            RiskRule::MinCashReserve,
            "100",
            "99",
        );
        // With a quote: 500 notional costs 500 × (1 + (50 + 10) / 10,000) = 503.
        let quoted = |cash: &str| RiskCommand::Assess {
            proposal: buy("5"),
            view: RiskView {
                cash: d(cash),
                ..view()
            },
            quote: Some(QuoteCheck {
                slippage_bps: d("50"),
                price_impact_bps: d("0"),
                fee_bps: d("10"),
            }),
        };
        assert!(violations(vec![], quoted("603")).is_empty());
        only(
            violations(vec![], quoted("602")),
            RiskRule::MinCashReserve,
            "100",
            "99",
        );
    }

    #[test]
    fn a_pending_sell_is_not_sold_twice() {
        let view = RiskView {
            pending: vec![PendingOrder {
                symbol: sym("BTC/USDT"),
                side: Side::Sell,
                quantity: d("3"),
            }],
            ..holding("5")
        };
        assert!(violations(vec![], assess(sell("2"), view.clone())).is_empty());
        only(
            violations(vec![], assess(sell("2.5"), view)),
            RiskRule::InsufficientPosition,
            "2",
            "2.5",
        );
    }

    #[test]
    fn insufficient_position_on_sells() {
        assert!(violations(vec![], assess(sell("5"), holding("5"))).is_empty());
        only(
            violations(vec![], assess(sell("6"), holding("5"))),
            RiskRule::InsufficientPosition,
            "5",
            "6",
        );
    }

    #[test]
    fn max_orders_per_minute() {
        let two = limits_set(RiskLimits {
            max_orders_per_minute: 2,
            cooldown_per_token_secs: 0,
            ..RiskLimits::default()
        });
        let given = |a, b| {
            vec![
                two.clone(),
                admitted("a", "ETH/USDT", a),
                admitted("b", "SOL/USDT", b),
            ]
        };
        assert!(violations(given(0, 50), assess(buy("5"), view())).is_empty());
        only(
            violations(given(1, 50), assess(buy("5"), view())),
            RiskRule::MaxOrdersPerMinute,
            "2",
            "2",
        );
    }

    #[test]
    fn cooldown_per_token() {
        assert!(violations(
            vec![admitted("a", "BTC/USDT", -240)],
            assess(buy("5"), view())
        )
        .is_empty());
        only(
            violations(
                vec![admitted("a", "BTC/USDT", -239)],
                assess(buy("5"), view()),
            ),
            RiskRule::CooldownPerToken,
            "300",
            "299",
        );
        assert!(violations(
            vec![admitted("a", "ETH/USDT", 59)],
            assess(buy("5"), view())
        )
        .is_empty());
    }

    #[test]
    fn slippage_and_price_impact_only_with_a_quote() {
        let quoted = |slippage: &str, impact: &str| RiskCommand::Assess {
            proposal: buy("5"),
            view: view(),
            quote: Some(QuoteCheck {
                slippage_bps: d(slippage),
                price_impact_bps: d(impact),
                fee_bps: d("0"),
            }),
        };
        assert!(violations(vec![], quoted("100", "200")).is_empty());
        only(
            violations(vec![], quoted("101", "200")),
            RiskRule::MaxSlippage,
            "100",
            "101",
        );
        only(
            violations(vec![], quoted("100", "201")),
            RiskRule::MaxPriceImpact,
            "200",
            "201",
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let p = ProposalToAssess {
            proposed_at: t(8_000),
            ..buy("30")
        };
        let v = violations(vec![], assess(p, view()));
        let expected = [
            RiskRule::StalePrice,
            RiskRule::MaxNotionalPerOrder,
            RiskRule::MaxPositionPerToken,
        ];
        assert_eq!(rules(&v), expected);
        assert_eq!(v[1].actual, Some(d("3000")));
    }

    #[test]
    fn repeated_assessment_keeps_the_recorded_verdict() {
        let first = admitted("candle-1/BTC/USDT", "BTC/USDT", 60);
        Given::with(())
            .given(vec![first.clone()])
            .when(assess(buy("5"), view()))
            .then_expect_events(vec![]);
        let err = book(vec![first])
            .decide(assess(buy("6"), view()))
            .unwrap_err();
        assert!(
            matches!(err, RiskError::ConflictingAssessment { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("notional 500") && err.to_string().contains("notional 600"),
            "{err}"
        );
        let refused = book(vec![]).decide(assess(buy("50"), view())).unwrap();
        let b = book(refused);
        assert!(matches!(
            b.verdict(&buy("5").order_id),
            Some(Verdict::Refused { .. })
        ));
        assert_eq!(b.decide(assess(buy("50"), view())).unwrap(), vec![]);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let b = RiskBook::default();
        let err = b.decide(assess(buy("0"), view())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: quantity = 0: must be greater than zero"
        );
        let mut p = buy("1");
        p.reference.price = d("-1");
        assert!(b
            .decide(assess(p, view()))
            .unwrap_err()
            .to_string()
            .contains("reference.price = -1"));
        let mut p = buy("1");
        p.reference.symbol = sym("ETH/USDT");
        assert!(matches!(
            b.decide(assess(p, view())),
            Err(RiskError::ReferenceMismatch { .. })
        ));
    }

    #[test]
    fn limits_are_validated_and_a_repeat_is_a_no_op() {
        assert_eq!(RiskLimits::default().validate(), Ok(()));
        let check = |l: RiskLimits| l.validate().unwrap_err().to_string();
        let base = RiskLimits::default;
        assert_eq!(
            check(RiskLimits {
                max_notional_per_order: d("-1"),
                ..base()
            }),
            "invalid risk limit: max_notional_per_order = -1: must be greater than zero"
        );
        assert!(check(RiskLimits {
            min_cash_reserve: d("-5"),
            ..base()
        })
        .contains("min_cash_reserve = -5"));
        assert!(check(RiskLimits {
            max_drawdown: d("0"),
            ..base()
        })
        .contains("max_drawdown = 0"));
        assert!(check(RiskLimits {
            max_drawdown: d("1.5"),
            ..base()
        })
        .contains("max_drawdown = 1.5"));
        assert!(check(RiskLimits {
            max_orders_per_minute: 0,
            ..base()
        })
        .contains("max_orders_per_minute = 0"));
        Given::with(())
            .given_no_previous_events()
            .when(RiskCommand::SetLimits {
                limits: RiskLimits {
                    max_drawdown: d("1.5"),
                    ..base()
                },
                at: t(0),
            })
            .then_expect_error_message(
                "invalid risk limit: max_drawdown = 1.5: must be a fraction in (0, 1]",
            );
        Given::with(())
            .given_no_previous_events()
            .when(RiskCommand::SetLimits {
                limits: base(),
                at: t(0),
            })
            .then_expect_events(vec![limits_set(base())]);
        Given::with(())
            .given(vec![limits_set(base())])
            .when(RiskCommand::SetLimits {
                limits: base(),
                at: t(9),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn state_stays_bounded() {
        let mut b = RiskBook::default();
        for i in 0..2_000_i64 {
            let s = ["BTC/USDT", "ETH/USDT", "SOL/USDT"][(i % 3) as usize];
            b.apply(admitted(&i.to_string(), s, i * 20));
        }
        assert!(b.admissions.len() <= 6, "{:?}", b.admissions);
        assert_eq!(b.verdicts.len(), VERDICT_MEMORY);
        assert!(
            b.verdict(&OrderId::derived("1999")).is_some()
                && b.verdict(&OrderId::derived("0")).is_none()
        );
    }

    #[test]
    fn serde_round_trip_of_the_state_and_every_event() {
        let halted = book(vec![])
            .decide(assess(
                buy("5"),
                RiskView {
                    equity: d("9000"),
                    ..view()
                },
            ))
            .unwrap();
        let mut events = vec![limits_set(RiskLimits {
            symbols: Some(BTreeSet::from([sym("BTC/USDT")])),
            ..RiskLimits::default()
        })];
        events.extend(halted);
        events.push(RiskEvent::TradingResumed {
            reason: "ok".into(),
            at: t(99),
            drawdown_base: None,
        });
        events.push(admitted("x", "BTC/USDT", 100));
        let types: BTreeSet<String> = events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(types.len(), RiskEvent::TYPES.len());
        for e in &events {
            let back: RiskEvent = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
            assert_eq!(&back, e);
            assert_eq!(RiskEvent::version_of(&e.event_type()), Some(1));
        }
        let state = book(events);
        let back: RiskBook = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }
}
