//! A YAML document as a tree of located nodes: every value remembers the
//! file, line and column it came from (or the environment variable that
//! set it), so validation can point at it after layers are merged.

use std::{fmt, path::Path, sync::Arc};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A YAML file, at a 1-based line and column (0 when unknown).
    File {
        /// The file as named on the command line or by `tasks.config_file`.
        file: Arc<Path>,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
    },
    /// An environment override (`TASKQUEUE_SECTION__KEY`).
    Env {
        /// The variable's name.
        var: String,
    },
}

impl Origin {
    /// The file's start (line 0: no position).
    pub(crate) fn file(file: &Arc<Path>) -> Origin {
        Origin::File {
            file: file.clone(),
            line: 0,
            column: 0,
        }
    }

    /// Whether the value is an environment override (text to be coerced).
    pub(crate) fn is_env(&self) -> bool {
        matches!(self, Origin::Env { .. })
    }
}

/// One located YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// The value.
    pub value: Value,
    /// Where it was written.
    pub origin: Origin,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    /// The key as text.
    pub name: String,
    /// Where the key was written.
    pub origin: Origin,
}

/// A YAML value whose children are located.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys unique.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// A word for the kind of value, for "expected X, found Y" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "text",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The value of `key` when this node is a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Removes and returns the entry `key` when this node is a mapping.
    pub(crate) fn take(&mut self, key: &str) -> Option<(Key, Node)> {
        match &mut self.value {
            Value::Map(entries) => {
                let index = entries.iter().position(|(k, _)| k.name == key)?;
                Some(entries.remove(index))
            }
            _ => None,
        }
    }

    /// Lays `overlay` over `self`: mappings merge key by key (recursively),
    /// anything else is replaced.
    pub(crate) fn merge(&mut self, overlay: Node) {
        match (&mut self.value, overlay.value) {
            (Value::Map(base), Value::Map(top)) => {
                for (key, value) in top {
                    match base.iter_mut().find(|(k, _)| k.name == key.name) {
                        Some((_, existing)) => existing.merge(value),
                        None => base.push((key, value)),
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.origin = overlay.origin;
            }
        }
    }

    /// Sets the value at `path` (creating mappings on the way).
    pub(crate) fn set(&mut self, path: &[String], value: Node) {
        let Some((first, rest)) = path.split_first() else {
            *self = value;
            return;
        };
        if !matches!(self.value, Value::Map(_)) {
            self.value = Value::Map(Vec::new());
            self.origin = value.origin.clone();
        }
        let Value::Map(entries) = &mut self.value else {
            return;
        };
        let index = match entries.iter().position(|(k, _)| &k.name == first) {
            Some(index) => index,
            None => {
                entries.push((
                    Key {
                        name: first.clone(),
                        origin: value.origin.clone(),
                    },
                    Node {
                        value: Value::Map(Vec::new()),
                        origin: value.origin.clone(),
                    },
                ));
                entries.len() - 1
            }
        };
        entries[index].1.set(rest, value);
    }
}

/// Why a file could not be read as YAML.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    /// The parser's message, without position.
    pub message: String,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

/// Parses one YAML document into a located tree. An empty document is an
/// empty mapping.
pub(crate) fn parse(text: &str, file: &Arc<Path>) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let raw: Option<Spanned<Raw>> =
        serde_saphyr::from_str_with_options(text, options).map_err(|err| {
            let (line, column) = err
                .location()
                .map_or((0, 0), |l| (l.line() as u32, l.column() as u32));
            SyntaxError {
                message: strip_position(&err.without_snippet().to_string()),
                line,
                column,
            }
        })?;
    Ok(match raw {
        Some(raw) => into_node(raw, file),
        None => Node {
            value: Value::Map(Vec::new()),
            origin: Origin::file(file),
        },
    })
}

/// Drops a trailing " at line L column C" that the parser appends, since
/// problems carry their position separately.
fn strip_position(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    match first.rfind(" at line ") {
        Some(index) => first[..index].to_owned(),
        None => first.to_owned(),
    }
}

fn into_node(raw: Spanned<Raw>, file: &Arc<Path>) -> Node {
    let origin = located(&raw.referenced, file);
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|i| into_node(i, file)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| {
                    let key = Key {
                        origin: located(&key.referenced, file),
                        name: key.value.0,
                    };
                    (key, into_node(value, file))
                })
                .collect(),
        ),
    };
    Node { value, origin }
}

fn located(location: &serde_saphyr::Location, file: &Arc<Path>) -> Origin {
    Origin::File {
        file: file.clone(),
        line: location.line() as u32,
        column: location.column() as u32,
    }
}

/// What the YAML deserializer hands us; children keep their spans.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<RawKey>, Spanned<Raw>)>),
}

/// A mapping key: any scalar, kept as text.
struct RawKey(String);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries: Vec<(Spanned<RawKey>, Spanned<Raw>)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawKey>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            if entries.iter().any(|(k, _)| k.value.0 == key.value.0) {
                return Err(de::Error::custom(format!(
                    "duplicate key {:?} in one mapping",
                    key.value.0
                )));
            }
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = RawKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKey, E> {
                Ok(RawKey(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawKey, E> {
                Ok(RawKey(String::new()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn file() -> Arc<Path> {
        Arc::from(PathBuf::from("t.yaml").as_path())
    }

    fn position(node: &Node) -> (u32, u32) {
        match node.origin {
            Origin::File { line, column, .. } => (line, column),
            Origin::Env { .. } => (0, 0),
        }
    }

    #[test]
    fn nodes_remember_line_and_column() {
        let text = "a:\n  b: 5\n  c: \"x\"\nlist:\n  - id: one\n    n: 1.5\n";
        let node = parse(text, &file()).unwrap();
        let a = node.get("a").unwrap();
        assert_eq!(a.get("b").unwrap().value, Value::Int(5));
        assert_eq!(position(a.get("b").unwrap()), (2, 6));
        assert_eq!(position(a.get("c").unwrap()), (3, 6));
        let Value::Seq(items) = &node.get("list").unwrap().value else {
            panic!("not a list")
        };
        assert_eq!(position(items[0].get("id").unwrap()), (5, 9));
        assert_eq!(items[0].get("n").unwrap().value, Value::Float(1.5));
        let Value::Map(entries) = &a.value else {
            panic!("not a map")
        };
        assert_eq!(
            entries[0].0.origin,
            Origin::File {
                file: file(),
                line: 2,
                column: 3
            }
        );
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: 3\n", &file()).unwrap_err();
        assert!(err.line > 0, "{err:?}");
        assert!(!err.message.contains(" at line "), "{err:?}");
        let err = parse("a: 1\na: 2\n", &file()).unwrap_err();
        assert!(err.message.contains("duplicate"), "{err:?}");
    }

    #[test]
    fn empty_documents_are_empty_mappings() {
        assert_eq!(parse("", &file()).unwrap().value, Value::Map(Vec::new()));
        assert_eq!(
            parse("# nothing\n", &file()).unwrap().value,
            Value::Map(Vec::new())
        );
    }

    #[test]
    fn merge_is_deep_and_later_wins() {
        let mut base = parse("s:\n  a: 1\n  b: 2\nt: [1]\n", &file()).unwrap();
        let top = parse("s:\n  b: 3\n  c: 4\nt: [2, 3]\n", &file()).unwrap();
        base.merge(top);
        let s = base.get("s").unwrap();
        assert_eq!(s.get("a").unwrap().value, Value::Int(1));
        assert_eq!(s.get("b").unwrap().value, Value::Int(3));
        assert_eq!(s.get("c").unwrap().value, Value::Int(4));
        let Value::Seq(t) = &base.get("t").unwrap().value else {
            panic!("not a list")
        };
        assert_eq!(t.len(), 2);
    }
}
