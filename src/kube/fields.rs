//! Field selectors (`fieldSelector=metadata.name=x,spec.nodeName!=y`) with the exact grammar of
//! `k8s.io/apimachinery/pkg/fields`: terms split on unescaped commas and sorted, `=`, `==` and
//! `!=` only, values escaped with `\`.

use std::fmt;

/// Why a field selector does not parse.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldsError {
    /// A term has no operator.
    NotUnderstood(String),
    /// A backslash starts an escape other than `\\`, `\,` or `\=`.
    InvalidEscape(String),
    /// A `,` or `=` in a value without a backslash.
    UnescapedRune(char),
}

impl fmt::Display for FieldsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldsError::NotUnderstood(t) => write!(f, "invalid selector: can't understand '{t}'"),
            FieldsError::InvalidEscape(s) => {
                write!(f, "invalid field selector: invalid escape sequence: {s}")
            }
            FieldsError::UnescapedRune(c) => write!(
                f,
                "invalid field selector: unescaped character in value: {}",
                *c as u32
            ),
        }
    }
}

impl std::error::Error for FieldsError {}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed field selector: every term must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<Term>,
}

/// Escapes `\`, `,` and `=` in a value.
pub fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Undoes [`escape_value`]; refuses unknown escapes and bare `,` or `=`.
pub fn unescape_value(s: &str) -> Result<String, FieldsError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(FieldsError::InvalidEscape(format!("\\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(FieldsError::UnescapedRune(c)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(FieldsError::InvalidEscape("\\".into()));
    }
    Ok(out)
}

fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Finds the first operator from the left, trying `!=`, `==`, `=` at each position.
fn split_term(term: &str) -> Option<(&str, &str, bool)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, equal) in [("!=", false), ("==", true), ("=", true)] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], rhs, equal));
            }
        }
    }
    None
}

impl FieldSelector {
    /// Parses a selector; the empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, FieldsError> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let (field, rhs, equal) =
                split_term(part).ok_or_else(|| FieldsError::NotUnderstood(part.to_string()))?;
            terms.push(Term {
                field: field.to_string(),
                value: unescape_value(rhs)?,
                equal,
            });
        }
        Ok(Self { terms })
    }

    /// Whether the selector has no terms (selects everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether an object whose fields read through `get` (absent reads as "") matches.
    pub fn matches<S: AsRef<str>>(&self, get: impl Fn(&str) -> Option<S>) -> bool {
        self.terms.iter().all(|t| {
            let value = get(&t.field);
            (value.as_ref().map_or("", AsRef::as_ref) == t.value) == t.equal
        })
    }

    /// Whether the JSON object `obj` matches, its fields read as kube-apiserver's field
    /// selectors see them (`field_value`).
    pub fn matches_object(&self, obj: &serde_json::Value) -> bool {
        self.matches(|path| field_value(obj, path))
    }

    /// The value `field` must equal, if some term requires it.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// The fields the selector tests.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }
}

/// A field as kube-apiserver's field selectors see it: every selectable field is a string
/// (`strconv.FormatBool` for booleans, decimal numbers), and the booleans a resource's
/// selectable fields always carry read `false` when the object leaves them unset.
pub fn field_value(obj: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let mut v = obj;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        // Pods' spec.hostNetwork and Nodes' spec.unschedulable are `bool`s in Go: unset is
        // false, and their field sets say so.
        Value::Null if matches!(path, "spec.hostNetwork" | "spec.unschedulable") => {
            Some("false".to_string())
        }
        _ => None,
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.equal { "=" } else { "!=" };
            write!(f, "{}{}{}", t.field, op, escape_value(&t.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeMap;

    fn golden() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/fields.json");
        let text = std::fs::read_to_string(path).expect("golden fields.json is readable");
        serde_json::from_str(&text).expect("golden fields.json is JSON")
    }

    #[test]
    fn golden_field_selectors() {
        let g = golden();
        let cases = g["cases"].as_array().expect("cases");
        assert!(cases.len() >= 64);
        for c in cases {
            let sel = c["selector"].as_str().unwrap();
            let exp = &c["expected"];
            let parsed = FieldSelector::parse(sel);
            if exp.get("error").is_some() {
                assert!(parsed.is_err(), "{sel:?} should fail");
                continue;
            }
            let parsed = parsed.unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            let fields: BTreeMap<String, String> =
                serde_json::from_value(c["fields"].clone()).unwrap();
            assert_eq!(
                parsed.to_string(),
                exp["string"].as_str().unwrap(),
                "{sel:?}"
            );
            assert_eq!(
                parsed.is_empty(),
                exp["empty"].as_bool().unwrap(),
                "{sel:?}"
            );
            assert_eq!(
                parsed.matches(|f| fields.get(f).map(String::as_str)),
                exp["matches"].as_bool().unwrap(),
                "{sel:?} on {fields:?}"
            );
            let m = &exp["requiresExactMatchMetadataName"];
            let want = m["found"]
                .as_bool()
                .unwrap()
                .then(|| m["value"].as_str().unwrap());
            assert_eq!(
                parsed.requires_exact_match("metadata.name"),
                want,
                "{sel:?}"
            );
        }
    }

    #[test]
    fn golden_escapes() {
        let g = golden();
        for c in g["escapeValueCases"].as_array().unwrap() {
            let v = c["value"].as_str().unwrap();
            let esc = escape_value(v);
            assert_eq!(esc, c["escapeValue"].as_str().unwrap());
            assert_eq!(unescape_value(&esc).as_deref(), Ok(v));
            match c.get("unescapeValue") {
                Some(u) => assert_eq!(unescape_value(v).as_deref(), Ok(u.as_str().unwrap())),
                None => assert!(unescape_value(v).is_err(), "{v:?}"),
            }
        }
    }
}
