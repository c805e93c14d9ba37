//! The bot's commands: parsing a message into a [`Command`], the role each needs, and the `/help` text.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What a user may do. Ordered: a role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: status, balances, prices, asks.
    Viewer,
    /// Trades, halts and resumes, approves drafts; gets the alerts.
    Operator,
    /// Everything an operator does (and what later needs more).
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        })
    }
}

/// A `/pnl` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Since the start of the UTC day.
    Day,
    /// The last 7 days.
    Week,
    /// The last 30 days.
    Month,
}

impl Window {
    /// Its length.
    pub fn duration(self) -> chrono::Duration {
        match self {
            Self::Day => chrono::Duration::days(1),
            Self::Week => chrono::Duration::days(7),
            Self::Month => chrono::Duration::days(30),
        }
    }

    /// `day`, `week` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `/start`: a greeting with the user's role.
    Start,
    /// `/help`.
    Help,
    /// `/status`: agents, halt, last price time.
    Status,
    /// `/balance`: cash, equity, P&L.
    Balance,
    /// `/positions`.
    Positions,
    /// `/trades [n]`: the last fills.
    Trades(usize),
    /// `/pnl [day|week|month]`.
    Pnl(Window),
    /// `/price <token>`.
    Price(String),
    /// `/sentiment <token>`.
    Sentiment(String),
    /// `/buy <token> <amount>` (`/sell` with `buy = false`): a proposal to confirm.
    Order {
        /// Buy or sell.
        buy: bool,
        /// The token or symbol.
        token: String,
        /// Base units, or quote units when written `$100` / `100usdt`-style (`notional`).
        amount: Decimal,
        /// Whether `amount` is quote units.
        notional: bool,
    },
    /// `/halt [reason]`.
    Halt(Option<String>),
    /// `/resume`.
    Resume,
    /// `/budget`: LLM spend today.
    Budget,
    /// `/ask <question>` and plain text.
    Ask(String),
    /// `/forget`: forget what Jarvis remembers of the user.
    Forget,
    /// `/drafts`: X drafts awaiting approval.
    Drafts,
    /// `/approve <id>`: approve an X draft.
    Approve(String),
}

/// The commands with their arguments and what they do, in `/help` order.
pub const HELP: &[(&str, &str, Role)] = &[
    ("/start", "greeting and your role", Role::Viewer),
    ("/help", "this list", Role::Viewer),
    (
        "/status",
        "agents alive, trading halted?, last price time",
        Role::Viewer,
    ),
    (
        "/balance",
        "cash, equity and P&L of the portfolio",
        Role::Viewer,
    ),
    (
        "/positions",
        "open positions with their value",
        Role::Viewer,
    ),
    ("/trades [n]", "the last n fills (default 5)", Role::Viewer),
    (
        "/pnl [day|week|month]",
        "realised P&L and fees over the window (default day)",
        Role::Viewer,
    ),
    ("/price <token>", "the last price of a token", Role::Viewer),
    (
        "/sentiment <token>",
        "the latest sentiment score of a token",
        Role::Viewer,
    ),
    (
        "/buy <token> <amount>",
        "propose a buy (amount in tokens, or $100 in quote); confirm with the button",
        Role::Operator,
    ),
    (
        "/sell <token> <amount>",
        "propose a sell; confirm with the button",
        Role::Operator,
    ),
    (
        "/halt [reason]",
        "halt all trading (kill switch)",
        Role::Operator,
    ),
    ("/resume", "resume trading", Role::Operator),
    ("/budget", "LLM spend today", Role::Viewer),
    (
        "/ask <question>",
        "ask Jarvis (plain text works too)",
        Role::Viewer,
    ),
    (
        "/forget",
        "forget what Jarvis remembers of you",
        Role::Viewer,
    ),
    ("/drafts", "X drafts awaiting approval", Role::Operator),
    (
        "/approve <id>",
        "approve an X draft for posting",
        Role::Operator,
    ),
];

/// The `/help` text for a user of `role`: the commands they may use.
pub fn help(role: Role) -> String {
    let mut out = String::from("Commands:\n");
    for (usage, what, needs) in HELP {
        if role >= *needs {
            out.push_str(&format!("{usage} - {what}\n"));
        }
    }
    out.push_str("Plain text is treated as /ask.");
    out
}

impl Command {
    /// The least role that may run it.
    pub fn needs(&self) -> Role {
        match self {
            Self::Order { .. } | Self::Halt(_) | Self::Resume | Self::Drafts | Self::Approve(_) => {
                Role::Operator
            }
            _ => Role::Viewer,
        }
    }

    /// Its name, e.g. `/buy`, as recorded in refused attempts.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start => "/start",
            Self::Help => "/help",
            Self::Status => "/status",
            Self::Balance => "/balance",
            Self::Positions => "/positions",
            Self::Trades(_) => "/trades",
            Self::Pnl(_) => "/pnl",
            Self::Price(_) => "/price",
            Self::Sentiment(_) => "/sentiment",
            Self::Order { buy: true, .. } => "/buy",
            Self::Order { buy: false, .. } => "/sell",
            Self::Halt(_) => "/halt",
            Self::Resume => "/resume",
            Self::Budget => "/budget",
            Self::Ask(_) => "/ask",
            Self::Forget => "/forget",
            Self::Drafts => "/drafts",
            Self::Approve(_) => "/approve",
        }
    }
}

/// Why a message is not a valid command; the text is the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

fn usage(text: &str) -> Usage {
    Usage(text.to_string())
}

/// An amount: `1.5` (tokens) or `$100` / `100$` / `100usd(t)` (quote units).
fn amount(text: &str) -> Result<(Decimal, bool), Usage> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, notional) = if let Some(n) = lower.strip_prefix('$') {
        (n.to_string(), true)
    } else if let Some(n) = lower.strip_suffix('$') {
        (n.to_string(), true)
    } else if let Some(n) = lower
        .strip_suffix("usdt")
        .or_else(|| lower.strip_suffix("usdc"))
        .or_else(|| lower.strip_suffix("usd"))
    {
        (n.to_string(), true)
    } else {
        (lower, false)
    };
    let value = Decimal::from_str(number.trim()).map_err(|_| {
        Usage(format!(
            "{text:?} is not an amount: write 1.5 (tokens) or $100 (quote)"
        ))
    })?;
    if value <= Decimal::ZERO {
        return Err(Usage(format!(
            "the amount must be greater than zero, not {text}"
        )));
    }
    Ok((value, notional))
}

fn token(arg: Option<&str>, usage_text: &str) -> Result<String, Usage> {
    let t = arg.ok_or_else(|| usage(usage_text))?;
    let t = t.trim_start_matches('$');
    if t.is_empty() || t.len() > 33 || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '/') {
        return Err(Usage(format!("{t:?} is not a token: write e.g. SOL")));
    }
    Ok(t.to_ascii_uppercase())
}

/// Parses a message. `None` for an empty message (nothing to answer). Plain text is [`Command::Ask`].
///
/// # Errors
/// [`Usage`] naming what is wrong, for an unknown command or bad arguments.
pub fn parse(text: &str) -> Option<Result<Command, Usage>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if !text.starts_with('/') {
        return Some(Ok(Command::Ask(text.to_string())));
    }
    let (head, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let rest = rest.trim();
    // `/cmd@botname` in groups.
    let name = head.split('@').next().unwrap_or(head).to_ascii_lowercase();
    let mut args = rest.split_whitespace();
    let parsed = match name.as_str() {
        "/start" => Ok(Command::Start),
        "/help" => Ok(Command::Help),
        "/status" => Ok(Command::Status),
        "/balance" => Ok(Command::Balance),
        "/positions" => Ok(Command::Positions),
        "/trades" => match args.next() {
            None => Ok(Command::Trades(5)),
            Some(n) => match n.parse::<usize>() {
                Ok(n) if (1..=50).contains(&n) => Ok(Command::Trades(n)),
                _ => Err(Usage(format!("/trades [n]: n is 1 to 50, not {n:?}"))),
            },
        },
        "/pnl" => match args.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("day") => Ok(Command::Pnl(Window::Day)),
            Some("week") => Ok(Command::Pnl(Window::Week)),
            Some("month") => Ok(Command::Pnl(Window::Month)),
            Some(other) => Err(Usage(format!("/pnl [day|week|month]: not {other:?}"))),
        },
        "/price" => token(args.next(), "/price <token>, e.g. /price SOL").map(Command::Price),
        "/sentiment" => {
            token(args.next(), "/sentiment <token>, e.g. /sentiment SOL").map(Command::Sentiment)
        }
        "/buy" | "/sell" => {
            let buy = name == "/buy";
            let text = if buy {
                "/buy <token> <amount>, e.g. /buy SOL 1.5 or /buy SOL $100"
            } else {
                "/sell <token> <amount>, e.g. /sell SOL 1.5"
            };
            match (args.next(), args.next(), args.next()) {
                (Some(t), Some(a), None) => token(Some(t), text).and_then(|token| {
                    amount(a).map(|(amount, notional)| Command::Order {
                        buy,
                        token,
                        amount,
                        notional,
                    })
                }),
                _ => Err(usage(text)),
            }
        }
        "/halt" => Ok(Command::Halt((!rest.is_empty()).then(|| rest.to_string()))),
        "/resume" => Ok(Command::Resume),
        "/budget" => Ok(Command::Budget),
        "/ask" if rest.is_empty() => Err(usage("/ask <question>, or just write the question")),
        "/ask" => Ok(Command::Ask(rest.to_string())),
        "/forget" => Ok(Command::Forget),
        "/drafts" => Ok(Command::Drafts),
        "/approve" => match args.next() {
            Some(id) => Ok(Command::Approve(id.to_string())),
            None => Err(usage("/approve <draft id>; /drafts lists them")),
        },
        other => Err(Usage(format!(
            "unknown command {other}; /help lists the commands"
        ))),
    };
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Command {
        parse(text).unwrap().unwrap()
    }

    fn err(text: &str) -> String {
        parse(text).unwrap().unwrap_err().0
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(ok("/start"), Command::Start);
        assert_eq!(ok("/status@jarvis_bot"), Command::Status);
        assert_eq!(ok("/trades"), Command::Trades(5));
        assert_eq!(ok("/trades 3"), Command::Trades(3));
        assert_eq!(ok("/pnl week"), Command::Pnl(Window::Week));
        assert_eq!(ok("/price sol"), Command::Price("SOL".into()));
        assert_eq!(ok("/sentiment $SOL"), Command::Sentiment("SOL".into()));
        assert_eq!(
            ok("/buy SOL 1.5"),
            Command::Order {
                buy: true,
                token: "SOL".into(),
                amount: Decimal::new(15, 1),
                notional: false
            }
        );
        assert_eq!(
            ok("/sell sol $100"),
            Command::Order {
                buy: false,
                token: "SOL".into(),
                amount: Decimal::from(100),
                notional: true
            }
        );
        assert_eq!(
            ok("/halt fat finger"),
            Command::Halt(Some("fat finger".into()))
        );
        assert_eq!(ok("/halt"), Command::Halt(None));
        assert_eq!(
            ok("what do I hold?"),
            Command::Ask("what do I hold?".into())
        );
        assert_eq!(ok("/ask why?"), Command::Ask("why?".into()));
        assert_eq!(ok("/approve 0190"), Command::Approve("0190".into()));
        assert!(parse("   ").is_none());
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        assert!(err("/buy SOL").contains("/buy <token> <amount>"));
        assert!(err("/buy SOL -1").contains("greater than zero"));
        assert!(err("/buy SOL lots").contains("not an amount"));
        assert!(err("/trades 0").contains("1 to 50"));
        assert!(err("/pnl year").contains("year"));
        assert!(err("/launch").contains("unknown command /launch"));
        assert!(err("/price").contains("/price <token>"));
        assert!(err("/price S-OL").contains("not a token"));
    }

    #[test]
    fn roles_gate_commands_and_help() {
        assert_eq!(ok("/buy SOL 1").needs(), Role::Operator);
        assert_eq!(ok("/halt").needs(), Role::Operator);
        assert_eq!(ok("/balance").needs(), Role::Viewer);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        let viewer = help(Role::Viewer);
        assert!(viewer.contains("/balance") && !viewer.contains("/buy"));
        let operator = help(Role::Operator);
        for (usage, _, _) in HELP {
            assert!(operator.contains(usage), "{usage}");
        }
        assert_eq!(ok("/sell SOL 1").name(), "/sell");
    }
}
