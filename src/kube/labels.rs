//! Label selectors (`app=web,tier in (a,b),!legacy`) with the lexer, parser, validation and
//! canonical form of `k8s.io/apimachinery/pkg/labels`.

use std::fmt;

/// Why a label selector does not parse; the text follows apimachinery's wording.
#[derive(Debug, PartialEq, Eq)]
pub struct LabelsError(pub String);

impl fmt::Display for LabelsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabelsError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the selector into tokens, as apimachinery's `Lexer` does (a NUL byte ends input).
fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while is_whitespace(at(pos)) {
            pos += 1;
        }
        let ch = at(pos);
        if ch == 0 {
            out.push((Tok::End, String::new()));
            return out;
        }
        if is_special(ch) {
            let start = pos;
            let mut last: Option<(Tok, usize)> = None;
            while is_special(at(pos)) {
                pos += 1;
                match keyword(&s[start..pos]) {
                    Some(t) => last = Some((t, pos)),
                    None if last.is_some() => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            match last {
                Some((t, end)) => {
                    pos = end;
                    out.push((t, s[start..end].to_string()));
                }
                None => out.push((Tok::Error, s[start..pos].to_string())),
            }
        } else {
            let start = pos;
            while at(pos) != 0 && !is_special(at(pos)) && !is_whitespace(at(pos)) {
                pos += 1;
            }
            let lit = &s[start..pos];
            out.push((keyword(lit).unwrap_or(Tok::Identifier), lit.to_string()));
        }
    }
}

struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    /// In the "values" context `in` and `notin` are plain identifiers.
    fn as_value(t: Tok) -> Tok {
        match t {
            Tok::In | Tok::NotIn => Tok::Identifier,
            t => t,
        }
    }

    fn lookahead(&self, values: bool) -> (Tok, &str) {
        let (t, l) = &self.items[self.pos.min(self.items.len() - 1)];
        (if values { Self::as_value(*t) } else { *t }, l)
    }

    fn consume(&mut self, values: bool) -> (Tok, String) {
        let (t, l) = self.items[self.pos.min(self.items.len() - 1)].clone();
        self.pos += 1;
        (if values { Self::as_value(t) } else { t }, l)
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, LabelsError> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(true);
            match t {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self.requirement().map_err(|e| {
                        LabelsError(format!("unable to parse requirement: {}", e.0))
                    })?;
                    reqs.push(r);
                    let (t, lit) = self.consume(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(true);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(LabelsError(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(LabelsError(format!(
                                "found '{lit}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(LabelsError(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, LabelsError> {
        let mut op = None;
        let (mut t, mut lit) = self.consume(true);
        if t == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (t, lit) = self.consume(true);
        }
        if t != Tok::Identifier {
            return Err(LabelsError(format!("found '{lit}', expected: identifier")));
        }
        validate_key(&lit)?;
        let key = lit;
        let (next, _) = self.lookahead(true);
        if op.is_some() || next == Tok::End || next == Tok::Comma {
            // `!key` ends the requirement whatever follows; the caller then rejects a stray
            // operator (`!app=web`), as apimachinery does.
            return new_requirement(key, op.unwrap_or(Op::Exists), Vec::new());
        }
        let (t, lit) = self.consume(false);
        let op = match t {
            Tok::In => Op::In,
            Tok::Equals => Op::Equals,
            Tok::DoubleEquals => Op::DoubleEquals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => {
                return Err(LabelsError(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                )))
            }
        };
        let values = match op {
            Op::In | Op::NotIn => self.set_values()?,
            _ => self.exact_value()?,
        };
        new_requirement(key, op, values)
    }

    fn set_values(&mut self) -> Result<Vec<String>, LabelsError> {
        let (t, lit) = self.consume(true);
        if t != Tok::OpenPar {
            return Err(LabelsError(format!("found '{lit}' expected: '('")));
        }
        let (t, lit) = self.lookahead(true);
        let lit = lit.to_string();
        match t {
            Tok::Identifier | Tok::Comma => {
                let s = self.identifiers()?;
                if self.consume(true).0 != Tok::ClosedPar {
                    return Err(LabelsError(format!("found '{lit}', expected: ')'")));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume(true);
                Ok(vec![String::new()])
            }
            _ => Err(LabelsError(format!(
                "found '{lit}', expected: ',', ')' or identifier"
            ))),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, LabelsError> {
        let mut set: Vec<String> = Vec::new();
        let insert = |set: &mut Vec<String>, v: String| {
            if !set.contains(&v) {
                set.push(v);
            }
        };
        loop {
            let (t, lit) = self.consume(true);
            match t {
                Tok::Identifier => {
                    insert(&mut set, lit);
                    let (t2, l2) = self.lookahead(true);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => break,
                        _ => {
                            return Err(LabelsError(format!("found '{l2}', expected: ',' or ')'")))
                        }
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        insert(&mut set, String::new());
                    }
                    match self.lookahead(true).0 {
                        Tok::ClosedPar => {
                            insert(&mut set, String::new());
                            break;
                        }
                        Tok::Comma => {
                            self.consume(true);
                            insert(&mut set, String::new());
                        }
                        _ => {}
                    }
                }
                _ => {
                    return Err(LabelsError(format!(
                        "found '{lit}', expected: ',', or identifier"
                    )))
                }
            }
        }
        set.sort();
        Ok(set)
    }

    fn exact_value(&mut self) -> Result<Vec<String>, LabelsError> {
        let (t, _) = self.lookahead(true);
        if t == Tok::End || t == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume(true);
        if t == Tok::Identifier {
            Ok(vec![lit])
        } else {
            Err(LabelsError(format!("found '{lit}', expected: identifier")))
        }
    }
}

fn is_dns1123_label_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// Whether `s` is an RFC 1123 subdomain, as Kubernetes checks object names (a Node's among
/// them): lower-case labels joined by dots, at most 253 bytes.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| is_dns1123_label_char(c))
        })
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn validate_key(key: &str) -> Result<(), LabelsError> {
    let bad = |why: &str| Err(LabelsError(format!("Invalid value: {key:?}: {why}")));
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                return bad("prefix part must be non-empty");
            }
            if !is_dns1123_subdomain(prefix) {
                return bad("prefix part must be a lowercase RFC 1123 subdomain");
            }
            name
        }
        _ => return bad("a valid label key has at most one '/'"),
    };
    if name.is_empty() || name.len() > 63 || !is_qualified_name_part(name) {
        return bad("name part must be 1-63 alphanumeric characters, '-', '_' or '.'");
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), LabelsError> {
    if v.len() > 63 || !(v.is_empty() || is_qualified_name_part(v)) {
        return Err(LabelsError(format!(
            "Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"
        )));
    }
    Ok(())
}

fn new_requirement(key: String, op: Op, values: Vec<String>) -> Result<Requirement, LabelsError> {
    validate_key(&key)?;
    match op {
        Op::In | Op::NotIn if values.is_empty() => {
            return Err(LabelsError("values set can't be empty".into()))
        }
        Op::Equals | Op::DoubleEquals | Op::NotEquals if values.len() != 1 => {
            return Err(LabelsError("exact-match requires one single value".into()))
        }
        Op::GreaterThan | Op::LessThan
            if values.len() != 1 || values[0].parse::<i64>().is_err() =>
        {
            return Err(LabelsError(
                "for 'Gt', 'Lt' operators, the value must be an integer".into(),
            ))
        }
        _ => {}
    }
    for v in &values {
        validate_value(v)?;
    }
    Ok(Requirement { key, op, values })
}

impl Requirement {
    fn matches<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match (self.op, get(&self.key)) {
            (Op::In | Op::Equals | Op::DoubleEquals, Some(v)) => has(v),
            (Op::In | Op::Equals | Op::DoubleEquals, None) => false,
            (Op::NotIn | Op::NotEquals, Some(v)) => !has(v),
            (Op::NotIn | Op::NotEquals, None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::GreaterThan | Op::LessThan, Some(v)) => {
                let (Ok(have), Some(Ok(want))) = (
                    v.parse::<i64>(),
                    self.values.first().map(|w| w.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
            (Op::GreaterThan | Op::LessThan, None) => false,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Op::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            Op::Equals => "=",
            Op::DoubleEquals => "==",
            Op::NotEquals => "!=",
            Op::In => " in ",
            Op::NotIn => " notin ",
            Op::GreaterThan => ">",
            Op::LessThan => "<",
            Op::Exists | Op::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.op, Op::In | Op::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut values = self.values.clone();
        values.sort();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl LabelSelector {
    /// Parses a selector; the empty (or all-blank) string selects everything.
    pub fn parse(s: &str) -> Result<Self, LabelsError> {
        let mut p = Parser {
            items: lex(s),
            pos: 0,
        };
        let mut reqs = p.parse()?;
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { reqs })
    }

    /// Whether the selector has no requirements (selects everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether a label set read through `get` matches every requirement.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.reqs.iter().all(|r| r.matches(&get))
    }

    /// Whether the JSON object `obj`'s `metadata.labels` match.
    pub fn matches_object(&self, obj: &serde_json::Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.matches(|k| labels[k].as_str())
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn golden_label_selectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/labels.json");
        let text = std::fs::read_to_string(path).expect("golden labels.json is readable");
        let g: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = g["cases"].as_array().unwrap();
        assert!(cases.len() >= 120);
        for c in cases {
            let sel = c["selector"].as_str().unwrap();
            let exp = &c["expected"];
            let parsed = LabelSelector::parse(sel);
            if exp.get("error").is_some() {
                assert!(parsed.is_err(), "{sel:?} should fail, got {parsed:?}");
                continue;
            }
            let parsed = parsed.unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            let labels: BTreeMap<String, String> =
                serde_json::from_value(c["labels"].clone()).unwrap();
            assert_eq!(
                parsed.to_string(),
                exp["string"].as_str().unwrap(),
                "{sel:?}"
            );
            assert_eq!(
                parsed.matches(|k| labels.get(k).map(String::as_str)),
                exp["matches"].as_bool().unwrap(),
                "{sel:?} on {labels:?}"
            );
        }
    }
}
