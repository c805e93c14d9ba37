//! JSON Schemas of every event type, generated from the domain types.
//!
//! `schemas/<context>.<EventType>.v<N>.json` holds the schema of the payload that travels on the bus (the
//! event's own object). A test compares the committed files with this code; run it with `JARVIS_BLESS=1` to
//! rewrite them after an intended change.

use schemars::schema_for;
use serde_json::Value;

use crate::event::JarvisAggregate;
use crate::market::MarketFeed;
use crate::values::Candle;

/// `(file name, schema)` of every event type.
pub fn all() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut add = |context: &str, event_type: &str, version: u32, schema: schemars::Schema| {
        let mut value = schema.to_value();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("title".into(), Value::String(event_type.to_string()));
            obj.insert(
                "$id".into(),
                Value::String(format!("jarvis.{context}.{event_type}.v{version}")),
            );
        }
        out.push((format!("{context}.{event_type}.v{version}.json"), value));
    };
    add(MarketFeed::CONTEXT, "CandleClosed", 1, schema_for!(Candle));
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn every_event_type_has_a_schema() {
        let names: Vec<String> = super::all().into_iter().map(|(n, _)| n).collect();
        for (event_type, version) in crate::market::MarketFeedEvent::TYPES {
            let want = format!("market.{event_type}.v{version}.json");
            assert!(names.contains(&want), "no schema {want}");
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
