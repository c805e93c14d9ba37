//! The signing key, loaded from a Solana CLI keypair file (a JSON array of 64 bytes: secret then public).
//!
//! The key never leaves this type: `Debug` shows the public key only, and no error carries the file's
//! content, not even a single byte of it (serde's messages quote the offending value, so they are not
//! passed on).

use std::path::Path;

use solana_address::Address as Pubkey;
use solana_keypair::Keypair;
use solana_message::VersionedMessage;
use solana_signer::Signer as _;
use solana_transaction::versioned::VersionedTransaction;

/// Why a keypair file could not be used. Names the file and what is wrong, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// The file cannot be read.
    #[error("keypair file {path}: cannot read it: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS's reason (e.g. permission denied).
        reason: String,
    },
    /// The file is not a Solana CLI keypair.
    #[error("keypair file {path}: not a Solana CLI keypair (a JSON array of 64 numbers 0-255): {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong, without any of the file's content.
        reason: String,
    },
    /// A transaction that is not the one a swap for this wallet should be.
    #[error("swap transaction refused: {0}")]
    Transaction(String),
}

/// A keypair that signs swap transactions. Redacted in `Debug`; never serialized.
pub struct Wallet {
    keypair: Keypair,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("pubkey", &self.pubkey().to_string())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Wallet {
    /// Loads a keypair file.
    ///
    /// # Errors
    /// [`WalletError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, WalletError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| WalletError::Unreadable {
            path: name.clone(),
            reason: e.kind().to_string(),
        })?;
        Self::from_json(&name, &text)
    }

    /// Parses the content of a keypair file; `path` only names it in errors.
    ///
    /// # Errors
    /// [`WalletError::Malformed`].
    pub fn from_json(path: &str, text: &str) -> Result<Self, WalletError> {
        let malformed = |reason: &str| WalletError::Malformed {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let bytes: Vec<u8> = match serde_json::from_str(text) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Only the position, never serde's message (it quotes the value).
                return Err(malformed(&format!(
                    "invalid at line {} column {}",
                    e.line(),
                    e.column()
                )));
            }
        };
        if bytes.len() != 64 {
            return Err(malformed(&format!("{} numbers instead of 64", bytes.len())));
        }
        let keypair = Keypair::try_from(bytes.as_slice())
            .map_err(|_| malformed("its public half does not match its secret half"))?;
        Ok(Self { keypair })
    }

    /// A fresh random wallet (tests and examples).
    pub fn generate() -> Self {
        Self {
            keypair: Keypair::new(),
        }
    }

    /// The file content of this wallet in the Solana CLI format (tests and key generation).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.keypair.to_bytes().to_vec()).expect("bytes serialize")
    }

    /// The public key (the fee payer and owner of the swapped tokens).
    pub fn pubkey(&self) -> Pubkey {
        self.keypair.pubkey()
    }

    /// Signs the unsigned swap transaction Jupiter built. Refuses one that is not for this wallet: its fee
    /// payer must be this key, and this key must be its only signer.
    ///
    /// # Errors
    /// [`WalletError::Transaction`] for bytes that are not a transaction, or not this wallet's.
    pub fn sign_swap(&self, bytes: &[u8]) -> Result<VersionedTransaction, WalletError> {
        let refuse = |why: String| WalletError::Transaction(why);
        let unsigned: VersionedTransaction = bincode::deserialize(bytes)
            .map_err(|e| refuse(format!("not a serialized transaction: {e}")))?;
        let message: VersionedMessage = unsigned.message;
        let header = message.header();
        let payer = message.static_account_keys().first().copied();
        if payer != Some(self.pubkey()) {
            return Err(refuse(format!(
                "its fee payer is {}, not this wallet ({})",
                payer.map_or("none".to_string(), |p| p.to_string()),
                self.pubkey()
            )));
        }
        if header.num_required_signatures != 1 {
            return Err(refuse(format!(
                "it needs {} signatures; a swap for this wallet needs exactly one",
                header.num_required_signatures
            )));
        }
        VersionedTransaction::try_new(message, &[&self.keypair])
            .map_err(|e| refuse(format!("signing failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cli_keypair_round_trips_and_debug_hides_the_secret() {
        let wallet = Wallet::generate();
        let json = wallet.to_json();
        let again = Wallet::from_json("k.json", &json).unwrap();
        assert_eq!(again.pubkey(), wallet.pubkey());
        let debug = format!("{again:?}");
        assert!(debug.contains(&wallet.pubkey().to_string()), "{debug}");
        let secret = &json[1..json.len() - 1];
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn errors_never_quote_the_file() {
        let wallet = Wallet::generate();
        let json = wallet.to_json();
        // One byte out of range: serde's own message would quote it.
        let bad = json.replacen('[', "[300,", 1);
        let err = Wallet::from_json("k.json", &bad).unwrap_err().to_string();
        assert!(
            err.starts_with("keypair file k.json: not a Solana CLI keypair"),
            "{err}"
        );
        assert!(!err.contains("300"), "{err}");
        let secret_numbers: Vec<&str> = json[1..json.len() - 1].split(',').collect();
        let short = format!("[{}]", secret_numbers[..32].join(","));
        let err = Wallet::from_json("k.json", &short).unwrap_err().to_string();
        assert!(err.ends_with("32 numbers instead of 64"), "{err}");
        assert!(!err.contains(&secret_numbers[..8].join(",")), "{err}");
        let err = Wallet::load(Path::new("/nonexistent/k.json"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "keypair file /nonexistent/k.json: cannot read it: entity not found"
        );
    }
}
