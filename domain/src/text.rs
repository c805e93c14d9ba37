//! Text and JSON written when first read.
//!
//! A rationale's inputs and summary, and a risk violation's detail, are sentences and maps of numbers for
//! people and the audit trail. Formatting them (every `Decimal` and time as text, a JSON map per proposal)
//! costs more than the decisions they explain, and a backtest, which keeps its events in memory, seldom
//! reads them. [`Text`] and [`Json`] hold what to write and write it on first read (serialisation, display,
//! comparison), once: the same bytes as formatting eagerly, because the closure is the same pure function of
//! the same values. Events read back from the store hold the text itself.
//!
//! Both serialise and describe themselves in JSON Schema exactly as `String` and `serde_json::Value` do, so
//! the stored events and their schemas do not change. A clone shares the text (a reference count).

use std::borrow::Cow;
use std::fmt;
use std::ops::{Deref, Index};
use std::sync::{Arc, LazyLock};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A value computed on first use, behind a shared pointer.
trait Force<T>: Send + Sync {
    fn force(&self) -> &T;
}

impl<T: Send + Sync, F: FnOnce() -> T + Send> Force<T> for LazyLock<T, F> {
    fn force(&self) -> &T {
        LazyLock::force(self)
    }
}

/// Text for people: a sentence with numbers, written when first read. Reads as a `&str`.
#[derive(Clone)]
pub struct Text(TextRepr);

#[derive(Clone)]
enum TextRepr {
    Static(&'static str),
    Shared(Arc<str>),
    Lazy(Arc<dyn Force<String>>),
}

impl Text {
    /// Text that `write` produces when it is first read. `write` must be a pure function of what it
    /// captures: it runs at most once, whenever (and on whichever thread) the text is first needed.
    pub fn lazy(write: impl FnOnce() -> String + Send + 'static) -> Self {
        Self(TextRepr::Lazy(Arc::new(LazyLock::new(write))))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            TextRepr::Static(s) => s,
            TextRepr::Shared(s) => s,
            TextRepr::Lazy(l) => l.force(),
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Self(TextRepr::Static(""))
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(TextRepr::Shared(s.into()))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Self(TextRepr::Static(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_string()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

impl JsonSchema for Text {
    fn inline_schema() -> bool {
        String::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        String::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        String::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// A JSON value for machines and the audit trail (a map of named numbers), built when first read. Reads as
/// a `serde_json::Value`.
#[derive(Clone)]
pub struct Json(JsonRepr);

#[derive(Clone)]
enum JsonRepr {
    Ready(Arc<Value>),
    Lazy(Arc<dyn Force<Value>>),
}

impl Json {
    /// The value `build` produces when it is first read. `build` must be a pure function of what it
    /// captures (see [`Text::lazy`]).
    pub fn lazy(build: impl FnOnce() -> Value + Send + 'static) -> Self {
        Self(JsonRepr::Lazy(Arc::new(LazyLock::new(build))))
    }

    /// The value.
    pub fn value(&self) -> &Value {
        match &self.0 {
            JsonRepr::Ready(v) => v,
            JsonRepr::Lazy(l) => l.force(),
        }
    }

    /// The value, to change: built now if it was not yet, and copied first if it is shared.
    pub fn make_mut(&mut self) -> &mut Value {
        if let JsonRepr::Lazy(l) = &self.0 {
            self.0 = JsonRepr::Ready(Arc::new(l.force().clone()));
        }
        match &mut self.0 {
            JsonRepr::Ready(v) => Arc::make_mut(v),
            JsonRepr::Lazy(_) => unreachable!("made ready above"),
        }
    }
}

impl Default for Json {
    fn default() -> Self {
        Self::from(Value::Null)
    }
}

impl Deref for Json {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl<I: serde_json::value::Index> Index<I> for Json {
    type Output = Value;

    fn index(&self, index: I) -> &Value {
        &self.value()[index]
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Self(JsonRepr::Ready(Arc::new(v)))
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.value(), f)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.value(), f)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::from)
    }
}

impl JsonSchema for Json {
    fn inline_schema() -> bool {
        Value::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        Value::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        Value::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Value::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn lazy_text_is_written_once_and_reads_like_the_eager_text() {
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let price = rust_decimal::Decimal::new(12345, 2);
        let text = Text::lazy(move || {
            WRITES.fetch_add(1, Ordering::SeqCst);
            format!("price {price}")
        });
        let copy = text.clone();
        assert_eq!(
            WRITES.load(Ordering::SeqCst),
            0,
            "nothing written before it is read"
        );
        assert_eq!(copy, "price 123.45");
        assert_eq!(text.as_str(), "price 123.45");
        assert_eq!(
            WRITES.load(Ordering::SeqCst),
            1,
            "written once, shared by the clone"
        );
        assert_eq!(text, Text::from("price 123.45".to_string()));
        assert_eq!(format!("{text:?}"), format!("{:?}", "price 123.45"));
        assert_eq!(
            serde_json::to_string(&text).unwrap(),
            serde_json::to_string("price 123.45").unwrap()
        );
        let back: Text = serde_json::from_str("\"price 123.45\"").unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn lazy_json_serialises_as_the_value_and_can_be_changed() {
        let eager = serde_json::json!({"b": "2", "a": 1});
        let mut lazy = Json::lazy(|| serde_json::json!({"b": "2", "a": 1}));
        assert_eq!(
            serde_json::to_string(&lazy).unwrap(),
            serde_json::to_string(&eager).unwrap()
        );
        assert_eq!(lazy["b"], "2");
        let shared = lazy.clone();
        lazy.make_mut()
            .as_object_mut()
            .unwrap()
            .insert("c".into(), Value::Bool(true));
        assert_eq!(lazy["c"], true);
        assert_eq!(shared, eager, "a clone keeps the value it had");
        assert_eq!(
            serde_json::to_value(schemars::schema_for!(Json)).unwrap(),
            serde_json::to_value(schemars::schema_for!(Value)).unwrap()
        );
        assert_eq!(
            serde_json::to_value(schemars::schema_for!(Text)).unwrap(),
            serde_json::to_value(schemars::schema_for!(String)).unwrap()
        );
    }
}
