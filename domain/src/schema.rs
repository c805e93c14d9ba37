//! JSON Schemas of every event type, generated from the domain types.
//!
//! `schemas/<context>.<EventType>.v<N>.json` holds the schema of the payload that travels on the bus (the
//! event's own object, without cqrs-es's `{"<EventType>": ...}` wrapper). A test compares the committed
//! files with this code; run it with `JARVIS_BLESS=1` to rewrite them after an intended change.

use schemars::{schema_for, JsonSchema};
use serde_json::{Map, Value};

use crate::backtest::{BacktestEvent, BacktestRun};
use crate::chat::{Conversation, ConversationEvent};
use crate::event::{EventTypes, JarvisAggregate};
use crate::llm::{LlmEvent, LlmLedger};
use crate::market::{MarketFeed, MarketFeedEvent, PriceFeed, PriceFeedEvent};
use crate::memory::{UserMemory, UserMemoryEvent};
use crate::sentiment::{SentimentEvent, TokenSentiment};
use crate::social::{XFeed, XFeedEvent};
use crate::telegram::{TelegramBot, TelegramEvent};
use crate::trading::order::{Order, OrderEvent};
use crate::trading::paper::{PaperEvent, PaperVenue};
use crate::trading::portfolio::{Portfolio, PortfolioEvent};
use crate::trading::risk::{RiskBook, RiskEvent};
use crate::x_account::{XAccount, XAccountEvent};

/// `(file name, schema)` of every event type of every aggregate.
pub fn all() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    out.extend(of::<MarketFeedEvent>(MarketFeed::CONTEXT));
    out.extend(of::<PriceFeedEvent>(PriceFeed::CONTEXT));
    out.extend(of::<OrderEvent>(Order::CONTEXT));
    out.extend(of::<PortfolioEvent>(Portfolio::CONTEXT));
    out.extend(of::<RiskEvent>(RiskBook::CONTEXT));
    out.extend(of::<PaperEvent>(PaperVenue::CONTEXT));
    out.extend(of::<BacktestEvent>(BacktestRun::CONTEXT));
    out.extend(of::<ConversationEvent>(Conversation::CONTEXT));
    out.extend(of::<UserMemoryEvent>(UserMemory::CONTEXT));
    out.extend(of::<LlmEvent>(LlmLedger::CONTEXT));
    out.extend(of::<XFeedEvent>(XFeed::CONTEXT));
    out.extend(of::<SentimentEvent>(TokenSentiment::CONTEXT));
    out.extend(of::<XAccountEvent>(XAccount::CONTEXT));
    out.extend(of::<TelegramEvent>(TelegramBot::CONTEXT));
    out
}

/// The schemas of one event enum: for each variant, the schema of its payload, with the definitions it
/// refers to.
fn of<E: EventTypes + JsonSchema>(context: &str) -> Vec<(String, Value)> {
    let root = schema_for!(E).to_value();
    let defs = root
        .get("$defs")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let branches = root
        .get("oneOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    E::TYPES
        .iter()
        .map(|(event_type, version)| {
            let body = branches
                .iter()
                .find_map(|b| b.pointer(&format!("/properties/{event_type}")))
                .cloned()
                .unwrap_or_else(|| panic!("{event_type} is not a variant of its event enum"));
            // A payload that is a reference to one definition is that definition.
            let body = match body.get("$ref").and_then(Value::as_str) {
                Some(r) => defs
                    .get(r.trim_start_matches("#/$defs/"))
                    .cloned()
                    .unwrap_or(body),
                None => body,
            };
            let mut schema = Map::new();
            schema.insert("$schema".into(), root["$schema"].clone());
            schema.insert(
                "$id".into(),
                Value::String(format!("jarvis.{context}.{event_type}.v{version}")),
            );
            schema.insert("title".into(), Value::String(event_type.to_string()));
            if let Value::Object(fields) = body {
                schema.extend(fields);
            }
            if !defs.as_object().is_none_or(Map::is_empty) {
                schema.insert("$defs".into(), defs.clone());
            }
            (
                format!("{context}.{event_type}.v{version}.json"),
                Value::Object(schema),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn every_event_type_has_a_schema_and_no_file_is_stale() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let names: Vec<String> = super::all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names.len(),
            1 + 6 + 4 + 5 + 4 + 1 + 2 + 2 + 6 + 1 + 2 + 1 + 1 + 8 + 2,
            "{names:?}"
        );
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            if file.ends_with(".json") {
                assert!(
                    names.contains(&file),
                    "schemas/{file} has no event type; delete it"
                );
            }
        }
    }

    #[test]
    fn committed_schemas_match_the_code() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let bless = std::env::var_os("JARVIS_BLESS").is_some();
        for (name, schema) in super::all() {
            let path = dir.join(&name);
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if bless {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "schemas/{name} differs from the domain types; run `JARVIS_BLESS=1 cargo test -p jarvis-domain schema` and commit"
            );
        }
    }
}
