//! Which mint and how many decimals each token symbol means on Solana, and the exact conversion between a
//! `Decimal` amount and the integer count of a token's smallest unit.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;

/// Wrapped SOL's mint (Jupiter wraps and unwraps native SOL around the swap).
pub const SOL_MINT: &str = "So11111111111111111111111111111111111111112";
/// USDC's mint.
pub const USDC_MINT: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
/// USDT's mint.
pub const USDT_MINT: &str = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB";

/// One token: its mint and its decimals.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The mint address (base58).
    pub mint: String,
    /// How many decimals its smallest unit has (9 for SOL, 6 for USDC).
    pub decimals: u32,
}

/// A token symbol the book does not know, or an amount that does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `[venue.tokens]` entry and no default for the symbol.
    #[error("unknown token {0:?}: add it under [venue.tokens] with its mint and decimals")]
    Unknown(String),
    /// The symbol is not `BASE/QUOTE`.
    #[error("symbol {0:?} is not BASE/QUOTE")]
    BadSymbol(String),
    /// A negative, zero or too large amount.
    #[error("{what} = {amount}: {reason}")]
    Amount {
        /// Which amount.
        what: &'static str,
        /// Its value.
        amount: String,
        /// Why it does not convert.
        reason: &'static str,
    },
    /// A configured entry that makes no sense.
    #[error("[venue.tokens] {symbol}: {reason}")]
    Config {
        /// The symbol.
        symbol: String,
        /// What is wrong.
        reason: String,
    },
}

/// Symbols to tokens: the defaults (SOL, USDC, USDT) overridden or extended by `[venue.tokens]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBook {
    tokens: BTreeMap<String, Token>,
}

impl Default for TokenBook {
    fn default() -> Self {
        let mut tokens = BTreeMap::new();
        for (symbol, mint, decimals) in [
            ("SOL", SOL_MINT, 9),
            ("USDC", USDC_MINT, 6),
            ("USDT", USDT_MINT, 6),
        ] {
            tokens.insert(
                symbol.to_string(),
                Token {
                    mint: mint.to_string(),
                    decimals,
                },
            );
        }
        Self { tokens }
    }
}

impl TokenBook {
    /// The defaults plus `extra` (same symbol: `extra` wins).
    ///
    /// # Errors
    /// [`TokenError::Config`] for a mint that is not base58 of 32 bytes, or more than 18 decimals.
    pub fn with(extra: &BTreeMap<String, Token>) -> Result<Self, TokenError> {
        let mut book = Self::default();
        for (symbol, token) in extra {
            let bad = |reason: String| TokenError::Config {
                symbol: symbol.clone(),
                reason,
            };
            if token.decimals > 18 {
                return Err(bad(format!("decimals = {}: at most 18", token.decimals)));
            }
            if token.mint.parse::<solana_address::Address>().is_err() {
                return Err(bad(format!(
                    "mint {:?} is not a base58 Solana address",
                    token.mint
                )));
            }
            book.tokens
                .insert(symbol.trim().to_ascii_uppercase(), token.clone());
        }
        Ok(book)
    }

    /// The token of a symbol such as `SOL`.
    ///
    /// # Errors
    /// [`TokenError::Unknown`].
    pub fn token(&self, symbol: &str) -> Result<&Token, TokenError> {
        self.tokens
            .get(&symbol.to_ascii_uppercase())
            .ok_or_else(|| TokenError::Unknown(symbol.to_string()))
    }

    /// The base and quote tokens of a pair such as `SOL/USDC`.
    ///
    /// # Errors
    /// [`TokenError`] for a malformed pair or an unknown token.
    pub fn pair(&self, symbol: &str) -> Result<(&Token, &Token), TokenError> {
        let (base, quote) = symbol
            .split_once('/')
            .ok_or_else(|| TokenError::BadSymbol(symbol.to_string()))?;
        Ok((self.token(base)?, self.token(quote)?))
    }
}

/// `amount` in smallest units, rounded toward zero (a fraction of the smallest unit cannot be traded).
///
/// # Errors
/// [`TokenError::Amount`] for a negative amount, or one above `u64::MAX` units.
pub fn to_units(what: &'static str, amount: Decimal, decimals: u32) -> Result<u64, TokenError> {
    let bad = |reason| TokenError::Amount {
        what,
        amount: amount.to_string(),
        reason,
    };
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(bad("must not be negative"));
    }
    let scale = Decimal::from(10u64.pow(decimals));
    let units = amount
        .checked_mul(scale)
        .ok_or_else(|| bad("too large"))?
        .trunc();
    u64::try_from(units).map_err(|_| bad("too large for a token amount"))
}

/// `units` smallest units as a token amount, exactly.
pub fn from_units(units: u64, decimals: u32) -> Decimal {
    let mut d = Decimal::from(units);
    // Decimal's scale holds up to 28 digits; token decimals are at most 18.
    d.set_scale(decimals).expect("decimals at most 18");
    d.normalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn defaults_and_overrides() {
        let book = TokenBook::default();
        let (sol, usdc) = book.pair("SOL/USDC").unwrap();
        assert_eq!((sol.mint.as_str(), sol.decimals), (SOL_MINT, 9));
        assert_eq!((usdc.mint.as_str(), usdc.decimals), (USDC_MINT, 6));
        assert_eq!(
            book.pair("BONK/USDC").unwrap_err().to_string(),
            "unknown token \"BONK\": add it under [venue.tokens] with its mint and decimals"
        );
        let extra = BTreeMap::from([(
            "bonk".to_string(),
            Token {
                mint: "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263".into(),
                decimals: 5,
            },
        )]);
        let book = TokenBook::with(&extra).unwrap();
        assert_eq!(book.token("BONK").unwrap().decimals, 5);
        let bad = BTreeMap::from([(
            "X".to_string(),
            Token {
                mint: "not-a-mint".into(),
                decimals: 5,
            },
        )]);
        assert!(TokenBook::with(&bad)
            .unwrap_err()
            .to_string()
            .contains("not a base58"));
    }

    #[test]
    fn units_convert_exactly_and_truncate_dust() {
        assert_eq!(to_units("q", dec("1.5"), 9).unwrap(), 1_500_000_000);
        assert_eq!(to_units("q", dec("0.0000000019"), 9).unwrap(), 1);
        assert_eq!(to_units("q", dec("147.123456"), 6).unwrap(), 147_123_456);
        assert_eq!(from_units(1_500_000_000, 9), dec("1.5"));
        assert_eq!(from_units(147_123_456, 6), dec("147.123456"));
        assert!(to_units("q", dec("-1"), 6).is_err());
        let err = to_units("quantity", dec("100000000000000"), 9).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quantity = 100000000000000: too large for a token amount"
        );
    }
}
