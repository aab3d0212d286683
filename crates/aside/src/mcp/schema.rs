//! Tool schemas every MCP client accepts, and arguments as clients really send them.
//!
//! schemars writes formats JSON Schema does not define (`uint`, `uint16`, `uint32`, `uint64`,
//! `int32`, `int64`, `double`, …): Ajv, which Claude Code, Gemini CLI, the TypeScript SDK and the
//! Inspector validate with, warns once per such field in every listing. An `Option<T>` parameter
//! becomes `type: [T, "null"]` (or an `anyOf` with `null`), which Gemini's OpenAPI subset of
//! function declarations refuses. [`standard_input`] and [`standard_output`] rewrite a tool's
//! schemas into plain JSON Schema 2020-12: unknown formats dropped, and for inputs optional
//! parameters as plain optional properties.
//!
//! Form-style clients (the Inspector's, some hosts' UIs) send every value as a string: the
//! `lenient` deserializers take `"100"` for 100 and `"true"` for true.

use serde_json::{Map, Value};

/// The formats JSON Schema 2020-12 defines (section 7.3 of the validation vocabulary).
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// An input schema for any client: no unknown formats, optional parameters without `null`.
pub fn standard_input(schema: &Map<String, Value>) -> Map<String, Value> {
    let mut v = Value::Object(schema.clone());
    clean(&mut v, true);
    match v {
        Value::Object(m) => m,
        _ => schema.clone(),
    }
}

/// An output schema for any client: no unknown formats (`null` stays: answers do hold nulls).
pub fn standard_output(schema: &Map<String, Value>) -> Map<String, Value> {
    let mut v = Value::Object(schema.clone());
    clean(&mut v, false);
    match v {
        Value::Object(m) => m,
        _ => schema.clone(),
    }
}

fn clean(v: &mut Value, drop_null: bool) {
    match v {
        Value::Object(m) => {
            if m.get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
            {
                m.remove("format");
            }
            if drop_null {
                drop_null_alternative(m);
                // `default: null` does not match the type left behind.
                if m.get("default").is_some_and(Value::is_null) {
                    m.remove("default");
                }
            } else {
                split_type_array(m);
            }
            for child in m.values_mut() {
                clean(child, drop_null);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| clean(c, drop_null)),
        _ => {}
    }
}

/// Keywords that describe a value rather than constrain it: they stay outside `anyOf`.
const ANNOTATIONS: &[&str] = &["description", "title", "default", "examples", "deprecated"];

/// `type: [A, B]` → `anyOf: [{type: A, …}, {type: B}]`, the constraints going with their type:
/// single-`type` dialects (Gemini's OpenAPI subset) read each branch; the Inspector's `--strict`
/// listing flags type arrays as not portable.
fn split_type_array(m: &mut Map<String, Value>) {
    let Some(Value::Array(types)) = m.get("type").cloned() else {
        return;
    };
    m.remove("type");
    let constraints: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| !ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    m.retain(|k, _| ANNOTATIONS.contains(&k.as_str()));
    let branches = types
        .into_iter()
        .map(|t| {
            let mut b = Map::new();
            if t.as_str() != Some("null") {
                b.extend(constraints.clone());
            }
            b.insert("type".into(), t);
            Value::Object(b)
        })
        .collect();
    m.insert("anyOf".into(), Value::Array(branches));
}

/// `type: [T, "null"]` → `type: T`; `anyOf`/`oneOf: [X, {type: null}]` → X merged in;
/// `enum` and `const` lose a `null` value.
fn drop_null_alternative(m: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = m.get("type") {
        let rest: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if rest.len() < types.len() {
            let new = match rest.len() {
                1 => rest[0].clone(),
                _ => Value::Array(rest),
            };
            m.insert("type".into(), new);
        }
    }
    if let Some(Value::Array(values)) = m.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alts)) = m.get(key) else {
            continue;
        };
        let is_null = |a: &Value| a.get("type").and_then(Value::as_str) == Some("null");
        if !alts.iter().any(is_null) {
            continue;
        }
        let rest: Vec<Value> = alts.iter().filter(|a| !is_null(a)).cloned().collect();
        m.remove(key);
        match rest.as_slice() {
            [Value::Object(only)] => {
                for (k, val) in only {
                    m.entry(k.clone()).or_insert_with(|| val.clone());
                }
            }
            [] => {}
            _ => {
                m.insert(key.into(), Value::Array(rest));
            }
        }
    }
}

/// Deserializers that take a number or boolean also when a client sends it as a string.
pub mod lenient {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(u64),
        Text(String),
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrText {
        Bool(bool),
        Text(String),
    }

    fn number<E: Error>(v: NumOrText) -> Result<u64, E> {
        match v {
            NumOrText::Num(n) => Ok(n),
            NumOrText::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("{t:?} is not a whole number"))),
        }
    }

    /// An optional whole number: `100`, `"100"`, `null`, `""` (absent).
    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<NumOrText>::deserialize(d)? {
            None => Ok(None),
            Some(NumOrText::Text(t)) if t.trim().is_empty() => Ok(None),
            Some(v) => number(v).map(Some),
        }
    }

    /// [`opt_u64`] as a `usize`.
    pub fn opt_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        opt_u64(d)?
            .map(|n| usize::try_from(n).map_err(|_| D::Error::custom(format!("{n} is too large"))))
            .transpose()
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }

    /// A list of names: `["a", "b"]`, or one string `"a"` / `"a,b"`; `null` is empty.
    pub fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match Option::<OneOrMany>::deserialize(d)? {
            None => Vec::new(),
            Some(OneOrMany::Many(v)) => v,
            Some(OneOrMany::One(s)) => s
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        })
    }

    /// A boolean: `true`, `"true"`, `"false"`, `"1"`, `"0"`, `null` (false).
    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Option::<BoolOrText>::deserialize(d)? {
            None => Ok(false),
            Some(BoolOrText::Bool(b)) => Ok(b),
            Some(BoolOrText::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" | "" => Ok(false),
                _ => Err(D::Error::custom(format!("{t:?} is not true or false"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_lose_unknown_formats_and_null_alternatives() {
        let schema = json!({
            "type": "object",
            "properties": {
                "timeout_ms": {"type": ["integer", "null"], "format": "uint64", "minimum": 0},
                "until": {"anyOf": [{"$ref": "#/$defs/Until"}, {"type": "null"}], "description": "d"},
                "when": {"type": "string", "format": "date-time"}
            }
        });
        let out = Value::Object(standard_input(schema.as_object().unwrap()));
        assert_eq!(
            out["properties"]["timeout_ms"],
            json!({"type": "integer", "minimum": 0})
        );
        assert_eq!(
            out["properties"]["until"],
            json!({"$ref": "#/$defs/Until", "description": "d"})
        );
        assert_eq!(out["properties"]["when"]["format"], "date-time");
        let out = Value::Object(standard_output(schema.as_object().unwrap()));
        assert_eq!(
            out["properties"]["timeout_ms"],
            json!({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]}),
            "a nullable output stays nullable, one type per branch"
        );
    }

    #[derive(serde::Deserialize)]
    struct Args {
        #[serde(default, deserialize_with = "lenient::opt_u64")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "lenient::bool")]
        b: bool,
    }

    #[test]
    fn numbers_and_booleans_may_come_as_strings() {
        let a: Args = serde_json::from_value(json!({"n": "100", "b": "true"})).unwrap();
        assert_eq!((a.n, a.b), (Some(100), true));
        let a: Args = serde_json::from_value(json!({"n": 7, "b": false})).unwrap();
        assert_eq!((a.n, a.b), (Some(7), false));
        let a: Args = serde_json::from_value(json!({})).unwrap();
        assert_eq!((a.n, a.b), (None, false));
        assert!(serde_json::from_value::<Args>(json!({"n": "ten"})).is_err());
        assert!(serde_json::from_value::<Args>(json!({"b": "maybe"})).is_err());
    }
}
