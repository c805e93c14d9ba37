//! Which tokens a text mentions: cashtags (`$SOL`), names (`solana`, `bitcoin`, `ether`) and Solana mint
//! addresses, the last two from a small map that the configuration extends (`[sentiment.aliases]`).
//!
//! - A cashtag is `$` and a letter, then letters and digits (up to 16): `$sol` and `$SOL` both name `SOL`.
//!   Any cashtag counts, known or not: `$TSLA` is a token mentioned too.
//! - A name is a whole word, case-insensitive (`Solana's` → `solana`), mapped to its token. Words that are
//!   also ordinary words in some language (`sol`) are not names by default.
//! - A mint is a base58 word of 32 to 44 characters, matched exactly against the map.
//!
//! The result is sorted and each token appears once, so one text gives one score per token, in a fixed order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jarvis_domain::sentiment::check_token;

/// The built-in aliases: token → names and mints.
pub const DEFAULT_ALIASES: &[(&str, &[&str])] = &[
    (
        "SOL",
        &["solana", "So11111111111111111111111111111111111111112"],
    ),
    ("BTC", &["bitcoin", "btc"]),
    ("ETH", &["ethereum", "ether", "eth"]),
    (
        "USDC",
        &["usdc", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"],
    ),
    (
        "USDT",
        &[
            "tether",
            "usdt",
            "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB",
        ],
    ),
    (
        "BONK",
        &["bonk", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"],
    ),
    ("JUP", &["JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"]),
];

/// Names and mints → tokens.
#[derive(Debug, Clone)]
pub struct TokenMap {
    names: HashMap<String, String>,
    mints: HashMap<String, String>,
}

/// Why an alias was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sentiment alias {alias:?} for token {token:?}: {why}")]
pub struct AliasError {
    /// The token.
    pub token: String,
    /// The alias.
    pub alias: String,
    /// What is wrong.
    pub why: String,
}

fn is_base58(word: &str) -> bool {
    (32..=44).contains(&word.len())
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
}

impl Default for TokenMap {
    fn default() -> Self {
        let mut map = Self {
            names: HashMap::new(),
            mints: HashMap::new(),
        };
        for (token, aliases) in DEFAULT_ALIASES {
            for alias in *aliases {
                // The defaults are valid by construction (a test checks it).
                let _ = map.add(token, alias);
            }
        }
        map
    }
}

impl TokenMap {
    /// The defaults plus `extra` (token → names and mints); a later alias replaces an earlier one.
    ///
    /// # Errors
    /// [`AliasError`] for a malformed token or an alias that is neither a single word nor a mint.
    pub fn with_aliases(extra: &BTreeMap<String, Vec<String>>) -> Result<Self, AliasError> {
        let mut map = Self::default();
        for (token, aliases) in extra {
            for alias in aliases {
                map.add(token, alias)?;
            }
        }
        Ok(map)
    }

    fn add(&mut self, token: &str, alias: &str) -> Result<(), AliasError> {
        let refuse = |why: String| AliasError {
            token: token.into(),
            alias: alias.into(),
            why,
        };
        check_token(token).map_err(refuse)?;
        if is_base58(alias) {
            self.mints.insert(alias.to_string(), token.to_string());
        } else if !alias.is_empty() && alias.chars().all(char::is_alphanumeric) {
            self.names.insert(alias.to_lowercase(), token.to_string());
        } else {
            return Err(refuse(
                "is neither one word of letters and digits nor a base58 mint address".into(),
            ));
        }
        Ok(())
    }

    /// The tokens `text` mentions, sorted, each once.
    pub fn extract(&self, text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut words = text.split(|c: char| !(c.is_alphanumeric() || c == '$' || c == '\''));
        for raw in words.by_ref() {
            if let Some(tag) = raw.strip_prefix('$') {
                let name: String = tag
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .take(16)
                    .collect();
                if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    let upper = name.to_ascii_uppercase();
                    let token = self
                        .names
                        .get(&name.to_lowercase())
                        .cloned()
                        .unwrap_or(upper);
                    if check_token(&token).is_ok() {
                        out.insert(token);
                    }
                }
                continue;
            }
            let word = raw.trim_matches('$');
            // Possessives: "Solana's" is solana.
            let word = word
                .strip_suffix("'s")
                .or_else(|| word.strip_suffix('\''))
                .unwrap_or(word);
            if let Some(token) = self.mints.get(word) {
                out.insert(token.clone());
            } else if let Some(token) = self.names.get(&word.to_lowercase()) {
                out.insert(token.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(text: &str) -> Vec<String> {
        TokenMap::default().extract(text).into_iter().collect()
    }

    #[test]
    fn cashtags_names_and_mints_each_once_sorted() {
        assert_eq!(
            extract("$SOL and Solana's ecosystem vs #Bitcoin; $sol again, ether too"),
            ["BTC", "ETH", "SOL"]
        );
        assert_eq!(
            extract("aping into DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263 now"),
            ["BONK"]
        );
        assert_eq!(extract("$TSLA up, $BRK.B flat"), ["BRK", "TSLA"]);
    }

    #[test]
    fn no_token_is_nothing() {
        assert!(extract("markets were quiet today, $100 of nothing").is_empty());
        assert!(extract("").is_empty());
        assert!(extract("el sol brilla").is_empty());
    }

    #[test]
    fn configured_aliases_extend_and_are_checked() {
        let extra = BTreeMap::from([(
            "WIF".to_string(),
            vec![
                "dogwifhat".to_string(),
                "EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm".to_string(),
            ],
        )]);
        let map = TokenMap::with_aliases(&extra).unwrap();
        let got: Vec<String> = map
            .extract("dogwifhat! EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm and solana")
            .into_iter()
            .collect();
        assert_eq!(got, ["SOL", "WIF"]);
        let bad = BTreeMap::from([("wif".to_string(), vec!["x".to_string()])]);
        assert!(TokenMap::with_aliases(&bad)
            .unwrap_err()
            .to_string()
            .contains("token \"wif\""));
        let bad = BTreeMap::from([("WIF".to_string(), vec!["dog wif".to_string()])]);
        assert!(TokenMap::with_aliases(&bad).is_err());
    }

    #[test]
    fn every_default_alias_is_valid() {
        for (token, aliases) in DEFAULT_ALIASES {
            let extra = BTreeMap::from([(
                token.to_string(),
                aliases.iter().map(|a| a.to_string()).collect(),
            )]);
            TokenMap::with_aliases(&extra).unwrap();
        }
    }
}
