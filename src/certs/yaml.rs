//! The YAML a kubeconfig may be written in, read into a JSON value (as kubectl reads it,
//! through sigs.k8s.io/yaml): block mappings and sequences, flow `{…}` and `[…]` over several
//! lines (so JSON too), plain, single- and double-quoted scalars with YAML's escapes and line
//! folding, literal `|` and folded `>` block scalars, anchors, aliases and `<<` merge keys,
//! tags (read past), comments, directives and the first of several documents.
//!
//! Scalars stay strings, but for `null`/`~`/empty (null) and `true`/`false` (booleans):
//! every kubeconfig field the hub reads is a string or a boolean.
//!
//! ```
//! use yurthub::certs::yaml::parse;
//! let v = parse("clusters:\n- {name: k, cluster: {server: \"https://10.0.0.1:6443\"}}\n").unwrap();
//! assert_eq!(v["clusters"][0]["cluster"]["server"], "https://10.0.0.1:6443");
//! ```

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// Where and why a text is not YAML this parser reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong there.
    pub what: &'static str,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for YamlError {}

/// Nesting deeper than this is refused: a hostile file must not overflow the stack.
const MAX_DEPTH: usize = 64;

/// What aliases may copy in all, in [`weight`]: far above what a kubeconfig's anchors share
/// (a CA or two), far below what would exhaust a small node's memory.
const MAX_COPIED: usize = 4 << 20;

/// What a copy of `v` costs: its bytes of text, and a few for each node.
fn weight(v: &Value) -> usize {
    match v {
        Value::Array(items) => 16 + items.iter().map(weight).sum::<usize>(),
        Value::Object(m) => 16 + m.iter().map(|(k, v)| k.len() + weight(v)).sum::<usize>(),
        Value::String(s) => 16 + s.len(),
        _ => 16,
    }
}

/// Parses the first document of `text`.
pub fn parse(text: &str) -> Result<Value, YamlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
        anchors: HashMap::new(),
        depth: 0,
        copied: 0,
    };
    p.prologue()?;
    let v = p.block_node(-1)?;
    p.skip_blank();
    if p.pos < p.s.len() && !p.at_marker(b"---") && !p.at_marker(b"...") {
        return Err(p.err("unexpected content"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    anchors: HashMap<String, Value>,
    depth: usize,
    copied: usize,
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_break(b: Option<u8>) -> bool {
    matches!(b, None | Some(b'\n') | Some(b'\r'))
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

/// `null`, booleans, or the string.
fn resolve(plain: String) -> Value {
    match plain.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => Value::String(plain),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.pos + n).copied()
    }

    fn err(&self, what: &'static str) -> YamlError {
        self.err_at(self.pos, what)
    }

    fn err_at(&self, pos: usize, what: &'static str) -> YamlError {
        let end = pos.min(self.s.len());
        YamlError {
            line: 1 + self.s[..end].iter().filter(|&&b| b == b'\n').count(),
            what,
        }
    }

    /// The column of `pos` on its line.
    fn col(&self) -> usize {
        let end = self.pos.min(self.s.len());
        end - self.s[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    }

    fn at_line_start(&self) -> bool {
        self.col() == 0
    }

    /// `---` or `...` alone at the start of a line.
    fn at_marker(&self, m: &[u8]) -> bool {
        self.at_line_start()
            && self.s[self.pos..].starts_with(m)
            && matches!(self.peek_at(3), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
    }

    fn skip_inline_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// Past spaces and a comment to the end of the line (not past the line break).
    fn skip_to_eol(&mut self) {
        self.skip_inline_ws();
        if self.peek() == Some(b'#') {
            while !is_break(self.peek()) {
                self.pos += 1;
            }
        }
    }

    fn at_eol(&mut self) -> bool {
        self.skip_to_eol();
        is_break(self.peek())
    }

    fn skip_break(&mut self) {
        if self.peek() == Some(b'\r') {
            self.pos += 1;
        }
        if self.peek() == Some(b'\n') {
            self.pos += 1;
        }
    }

    /// Past blank and comment lines, and the indentation of the next content line.
    fn skip_blank(&mut self) {
        loop {
            let start = self.pos;
            self.skip_inline_ws();
            if self.peek() == Some(b'#')
                && (self.pos == 0 || is_ws(self.s[self.pos - 1]) || self.at_line_start())
            {
                self.skip_to_eol();
            }
            if self.peek().is_some() && is_break(self.peek()) {
                self.skip_break();
                continue;
            }
            if self.peek().is_none() {
                return;
            }
            // Indentation is spaces: a tab there is an error YAML makes too.
            if self.s[start..self.pos].contains(&b'\t')
                && self.s[..start].last().is_none_or(|&b| b == b'\n')
            {
                self.pos = start;
                return;
            }
            return;
        }
    }

    /// Directives and the first `---`.
    fn prologue(&mut self) -> Result<(), YamlError> {
        loop {
            self.skip_blank();
            if self.at_line_start() && self.peek() == Some(b'%') {
                while !is_break(self.peek()) {
                    self.pos += 1;
                }
                continue;
            }
            if self.at_marker(b"---") {
                self.pos += 3;
            }
            return Ok(());
        }
    }

    fn enter(&mut self) -> Result<(), YamlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        Ok(())
    }

    /// Whether `pos` is at `- ` (or `-` ending the line): a block sequence entry.
    fn at_entry_dash(&self) -> bool {
        self.peek() == Some(b'-')
            && self
                .peek_at(1)
                .is_none_or(|b| is_ws(b) || is_break(Some(b)))
    }

    /// Whether the rest of the line is `key: …` (a block mapping entry).
    fn looks_like_key(&self) -> bool {
        let rest = &self.s[self.pos..];
        let line_end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..line_end];
        let colon_ok = |i: usize| line.get(i + 1).is_none_or(|&b| is_ws(b));
        match line.first() {
            None => false,
            Some(&q @ (b'"' | b'\'')) => {
                let mut i = 1;
                while i < line.len() {
                    if line[i] == q {
                        if q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    if q == b'"' && line[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let mut j = i + 1;
                while line.get(j).is_some_and(|&b| is_ws(b)) {
                    j += 1;
                }
                line.get(j) == Some(&b':') && colon_ok(j)
            }
            Some(b'[' | b'{' | b'#' | b'|' | b'>' | b'*' | b'&' | b'!' | b'%' | b'@' | b'`') => {
                false
            }
            Some(b'-') if line.get(1).is_none_or(|&b| is_ws(b)) => false,
            Some(_) => {
                for (i, &b) in line.iter().enumerate() {
                    if b == b'#' && i > 0 && is_ws(line[i - 1]) {
                        return false;
                    }
                    if b == b':' && colon_ok(i) {
                        return true;
                    }
                }
                false
            }
        }
    }

    /// A node in block context whose lines are indented more than `parent`.
    fn block_node(&mut self, parent: isize) -> Result<Value, YamlError> {
        self.enter()?;
        let v = self.block_node_inner(parent);
        self.depth -= 1;
        v
    }

    fn block_node_inner(&mut self, parent: isize) -> Result<Value, YamlError> {
        self.skip_blank();
        if self.peek().is_none() || self.at_marker(b"---") || self.at_marker(b"...") {
            return Ok(Value::Null);
        }
        if (self.col() as isize) <= parent {
            return Ok(Value::Null);
        }
        if self.peek() == Some(b'\t') {
            return Err(self.err("tabs are not allowed for indentation"));
        }
        let anchor = self.properties(Self::skip_inline_ws)?;
        let v = if anchor.is_some() && self.at_eol() {
            // The anchored node starts on the next line.
            self.block_node(parent)?
        } else {
            let col = self.col();
            if self.at_entry_dash() {
                self.block_sequence(col)?
            } else if self.looks_like_key() {
                self.block_mapping(col)?
            } else {
                self.inline_value(parent)?
            }
        };
        if let Some(a) = anchor {
            self.anchors.insert(a, v.clone());
        }
        Ok(v)
    }

    /// A node's properties, an anchor and a tag in either order, each followed by what
    /// `skip` passes over: the anchor's name, when there is one (a tag is read past).
    fn properties(&mut self, skip: fn(&mut Self)) -> Result<Option<String>, YamlError> {
        let mut anchor = None;
        loop {
            match self.peek() {
                Some(b'&') => anchor = Some(self.name()?),
                Some(b'!') => self.tag(),
                _ => return Ok(anchor),
            }
            skip(self);
        }
    }

    /// `&name` or `*name`: the name.
    fn name(&mut self) -> Result<String, YamlError> {
        self.pos += 1;
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| !is_ws(b) && !is_break(Some(b)) && !is_flow_indicator(b))
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("an anchor or alias without a name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn tag(&mut self) {
        while self
            .peek()
            .is_some_and(|b| !is_ws(b) && !is_break(Some(b)) && !is_flow_indicator(b))
        {
            self.pos += 1;
        }
    }

    fn alias(&mut self) -> Result<Value, YamlError> {
        let name = self.name()?;
        let v = self
            .anchors
            .get(&name)
            .ok_or_else(|| self.err("an alias to no anchor"))?;
        // Aliases of aliases grow a document exponentially ("billion laughs"): what they
        // copy is counted, and bounded.
        self.copied += weight(v);
        if self.copied > MAX_COPIED {
            return Err(self.err("aliases copy too much"));
        }
        Ok(v.clone())
    }

    fn block_sequence(&mut self, indent: usize) -> Result<Value, YamlError> {
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            if self.peek() == Some(b'\t') {
                return Err(self.err("tabs are not allowed for indentation"));
            }
            if self.peek().is_none()
                || self.col() != indent
                || self.at_marker(b"---")
                || self.at_marker(b"...")
            {
                break;
            }
            if !self.at_entry_dash() {
                if self.col() == indent && self.looks_like_key() {
                    break; // the enclosing mapping's next key, at the sequence's column
                }
                return Err(self.err("expected `- ` at the sequence's indentation"));
            }
            self.pos += 1;
            self.skip_inline_ws();
            items.push(self.block_node(indent as isize)?);
        }
        Ok(Value::Array(items))
    }

    fn block_mapping(&mut self, indent: usize) -> Result<Value, YamlError> {
        let mut map = Map::new();
        loop {
            self.skip_blank();
            if self.peek() == Some(b'\t') {
                return Err(self.err("tabs are not allowed for indentation"));
            }
            if self.peek().is_none() || self.at_marker(b"---") || self.at_marker(b"...") {
                break;
            }
            let col = self.col();
            if col < indent {
                break;
            }
            if col > indent {
                return Err(self.err("unexpected indentation"));
            }
            if !self.looks_like_key() {
                if self.peek() == Some(b'-') {
                    break; // a sequence at the parent's key column ends here
                }
                return Err(self.err("expected `key: value`"));
            }
            let key = match self.peek() {
                Some(b'"') => self.double_quoted(0)?,
                Some(b'\'') => self.single_quoted(0)?,
                _ => {
                    let start = self.pos;
                    while self.peek().is_some()
                        && !(self.peek() == Some(b':')
                            && self
                                .peek_at(1)
                                .is_none_or(|b| is_ws(b) || is_break(Some(b))))
                    {
                        self.pos += 1;
                    }
                    String::from_utf8_lossy(&self.s[start..self.pos])
                        .trim_end()
                        .to_string()
                }
            };
            self.skip_inline_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected `:` after the key"));
            }
            self.pos += 1;
            self.skip_inline_ws();
            let value = if self.at_eol() {
                self.skip_blank();
                let seq_here = self.col() == indent && self.at_entry_dash();
                if seq_here {
                    self.enter()?;
                    let v = self.block_sequence(indent);
                    self.depth -= 1;
                    v?
                } else {
                    self.block_node(indent as isize)?
                }
            } else {
                self.block_node(indent as isize)?
            };
            if key == "<<" {
                merge(&mut map, value);
            } else {
                map.insert(key, value);
            }
        }
        Ok(Value::Object(map))
    }

    /// A value that starts on this line in block context: flow, quoted, block scalar,
    /// alias or plain (which may go on over lines indented more than `parent`).
    fn inline_value(&mut self, parent: isize) -> Result<Value, YamlError> {
        let v = match self.peek() {
            Some(b'[' | b'{') => self.flow_node()?,
            Some(b'"') => Value::String(self.double_quoted(parent)?),
            Some(b'\'') => Value::String(self.single_quoted(parent)?),
            Some(b'|' | b'>') => return self.block_scalar(parent).map(Value::String),
            Some(b'*') => self.alias()?,
            _ => return Ok(resolve(self.plain_block(parent))),
        };
        if !self.at_eol() {
            return Err(self.err("unexpected text after the value"));
        }
        Ok(v)
    }

    /// Whether a block plain scalar begun at `start` ends here: a line break, a comment, or
    /// `: `.
    fn plain_block_ends(&self, start: usize) -> bool {
        let comment = self.peek() == Some(b'#') && self.pos > start && is_ws(self.s[self.pos - 1]);
        let colon = self.peek() == Some(b':')
            && self
                .peek_at(1)
                .is_none_or(|b| is_ws(b) || is_break(Some(b)));
        is_break(self.peek()) || comment || colon
    }

    /// A plain scalar in block context, folded over its continuation lines.
    fn plain_block(&mut self, parent: isize) -> String {
        let mut out = String::new();
        let mut blank_lines = 0;
        loop {
            let start = self.pos;
            while !self.plain_block_ends(start) {
                self.pos += 1;
            }
            let piece = String::from_utf8_lossy(&self.s[start..self.pos]);
            let piece = piece.trim();
            if !out.is_empty() {
                out.push_str(&if blank_lines > 0 {
                    "\n".repeat(blank_lines)
                } else {
                    " ".into()
                });
            }
            out.push_str(piece);
            if !self.at_eol() {
                return out;
            }
            // A continuation line is indented more than the parent and is no key or comment.
            let save = self.pos;
            blank_lines = 0;
            loop {
                self.skip_break();
                let line = self.pos;
                self.skip_inline_ws();
                if is_break(self.peek()) && self.peek().is_some() {
                    blank_lines += 1;
                    continue;
                }
                let more = self.peek().is_some()
                    && (self.col() as isize) > parent
                    && self.peek() != Some(b'#')
                    && !self.looks_like_key()
                    && !self.at_entry_dash()
                    && !(self.pos == line && (self.at_marker(b"---") || self.at_marker(b"...")));
                if !more {
                    self.pos = save;
                    return out;
                }
                break;
            }
        }
    }

    /// `"…"`, over lines if need be; `parent` is unused but for symmetry with the block forms.
    fn double_quoted(&mut self, _parent: isize) -> Result<String, YamlError> {
        let opened = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err_at(opened, "unterminated string"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.err_at(opened, "unterminated string"));
                    };
                    self.pos += 1;
                    let simple = match e {
                        b'0' => Some('\0'),
                        b'a' => Some('\u{7}'),
                        b'b' => Some('\u{8}'),
                        b't' | b'\t' => Some('\t'),
                        b'n' => Some('\n'),
                        b'v' => Some('\u{b}'),
                        b'f' => Some('\u{c}'),
                        b'r' => Some('\r'),
                        b'e' => Some('\u{1b}'),
                        b' ' => Some(' '),
                        b'"' => Some('"'),
                        b'/' => Some('/'),
                        b'\\' => Some('\\'),
                        b'N' => Some('\u{85}'),
                        b'_' => Some('\u{a0}'),
                        b'L' => Some('\u{2028}'),
                        b'P' => Some('\u{2029}'),
                        _ => None,
                    };
                    if let Some(c) = simple {
                        out.push(c);
                        continue;
                    }
                    let digits = match e {
                        b'x' => 2,
                        b'u' => 4,
                        b'U' => 8,
                        b'\n' | b'\r' => {
                            // An escaped line break joins the lines with nothing between.
                            self.pos -= 1;
                            self.skip_break();
                            self.skip_inline_ws();
                            continue;
                        }
                        _ => return Err(self.err("bad escape in string")),
                    };
                    let hex = self
                        .s
                        .get(self.pos..self.pos + digits)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                        .ok_or_else(|| self.err("bad escape in string"))?;
                    self.pos += digits;
                    out.push(hex);
                }
                b'\n' | b'\r' => self.fold(&mut out),
                _ => {
                    let start = self.pos;
                    while self
                        .peek()
                        .is_some_and(|b| b != b'"' && b != b'\\' && b != b'\n' && b != b'\r')
                    {
                        self.pos += 1;
                    }
                    out.push_str(&String::from_utf8_lossy(&self.s[start..self.pos]));
                }
            }
        }
    }

    /// `'…'`, with `''` for a quote, over lines if need be.
    fn single_quoted(&mut self, _parent: isize) -> Result<String, YamlError> {
        let opened = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err_at(opened, "unterminated string")),
                Some(b'\'') if self.peek_at(1) == Some(b'\'') => {
                    out.push('\'');
                    self.pos += 2;
                }
                Some(b'\'') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\n' | b'\r') => self.fold(&mut out),
                Some(_) => {
                    let start = self.pos;
                    while self
                        .peek()
                        .is_some_and(|b| b != b'\'' && b != b'\n' && b != b'\r')
                    {
                        self.pos += 1;
                    }
                    out.push_str(&String::from_utf8_lossy(&self.s[start..self.pos]));
                }
            }
        }
    }

    /// A line break inside a quoted scalar: trailing spaces go, one break is a space, each
    /// further (empty) line a newline.
    fn fold(&mut self, out: &mut String) {
        while out.ends_with([' ', '\t']) {
            out.pop();
        }
        let mut breaks = 0;
        while matches!(self.peek(), Some(b'\n' | b'\r')) {
            self.skip_break();
            self.skip_inline_ws();
            breaks += 1;
        }
        if breaks == 1 {
            out.push(' ');
        } else {
            out.push_str(&"\n".repeat(breaks - 1));
        }
    }

    /// `|` or `>` with its chomping and indentation indicators, and the lines indented more
    /// than `parent`.
    fn block_scalar(&mut self, parent: isize) -> Result<String, YamlError> {
        let folded = self.peek() == Some(b'>');
        self.pos += 1;
        let (mut chomp, mut explicit) = (b' ', None);
        while let Some(b) = self.peek() {
            match b {
                b'+' | b'-' => chomp = b,
                b'1'..=b'9' => explicit = Some(usize::from(b - b'0')),
                _ => break,
            }
            self.pos += 1;
        }
        if !self.at_eol() {
            return Err(self.err("unexpected text after a block scalar's header"));
        }
        let base = usize::try_from(parent.max(0)).unwrap_or(0) + usize::from(parent >= 0);
        let mut indent = explicit.map(|e| usize::try_from(parent.max(0)).unwrap_or(0) + e);
        let mut lines: Vec<String> = Vec::new();
        // Whether the last content line ended with a line break (not the end of the text).
        let mut last_broken = false;
        loop {
            if self.peek().is_none() {
                break;
            }
            let save = self.pos;
            self.skip_break();
            let line_start = self.pos;
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            let spaces = self.pos - line_start;
            if is_break(self.peek()) {
                if self.peek().is_none() {
                    break;
                }
                lines.push(String::new());
                continue;
            }
            let need = *indent.get_or_insert(spaces.max(base));
            if spaces < need || spaces == 0 {
                self.pos = save;
                break;
            }
            let start = line_start + need;
            while !is_break(self.peek()) {
                self.pos += 1;
            }
            lines.push(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned());
            last_broken = self.peek().is_some();
        }
        let trailing = lines.iter().rev().take_while(|l| l.is_empty()).count();
        let body_lines = &lines[..lines.len() - trailing];
        let mut out = String::new();
        for (i, l) in body_lines.iter().enumerate() {
            if i > 0 {
                // Folded: a break between two plain lines is a space, one before an empty
                // line goes (each empty line is a newline); literal: every break stays.
                let normal = |l: &str| !l.is_empty() && !l.starts_with([' ', '\t']);
                let prev = &body_lines[i - 1];
                match (folded, normal(prev), normal(l), l.is_empty()) {
                    (true, true, true, _) => out.push(' '),
                    (true, true, _, true) => {}
                    _ => out.push('\n'),
                }
            }
            out.push_str(l);
        }
        match chomp {
            b'-' => {}
            b'+' => {
                if !body_lines.is_empty() && (last_broken || trailing > 0) {
                    out.push('\n');
                }
                out.push_str(&"\n".repeat(trailing));
            }
            _ => {
                if !body_lines.is_empty() && (last_broken || trailing > 0) {
                    out.push('\n');
                }
            }
        }
        Ok(out)
    }

    /// Spaces, line breaks and comments inside a flow collection.
    fn skip_flow_ws(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'#') => {
                    while !is_break(self.peek()) {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    /// The entries of a flow collection from its opening bracket to `close`, each read by
    /// `entry`, separated by commas (a trailing one allowed).
    fn flow_entries(
        &mut self,
        close: u8,
        mut entry: impl FnMut(&mut Self) -> Result<(), YamlError>,
    ) -> Result<(), YamlError> {
        self.pos += 1;
        loop {
            self.skip_flow_ws();
            match self.peek() {
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.err("an unterminated flow collection")),
                _ => {}
            }
            entry(self)?;
            self.skip_flow_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {}
                _ => return Err(self.err("expected `,` or the collection's end")),
            }
        }
    }

    /// A node in flow context.
    fn flow_node(&mut self) -> Result<Value, YamlError> {
        self.enter()?;
        let v = self.flow_node_inner();
        self.depth -= 1;
        v
    }

    fn flow_node_inner(&mut self) -> Result<Value, YamlError> {
        self.skip_flow_ws();
        let anchor = self.properties(Self::skip_flow_ws)?;
        let v = match self.peek() {
            Some(b'[') => {
                let mut items = Vec::new();
                self.flow_entries(b']', |p| {
                    items.push(p.flow_node()?);
                    Ok(())
                })?;
                Value::Array(items)
            }
            Some(b'{') => {
                let mut map = Map::new();
                self.flow_entries(b'}', |p| {
                    let key = match p.flow_node()? {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    p.skip_flow_ws();
                    let value = if p.peek() == Some(b':') {
                        p.pos += 1;
                        p.skip_flow_ws();
                        if matches!(p.peek(), Some(b',' | b'}')) {
                            Value::Null
                        } else {
                            p.flow_node()?
                        }
                    } else {
                        Value::Null
                    };
                    if key == "<<" {
                        merge(&mut map, value);
                    } else {
                        map.insert(key, value);
                    }
                    Ok(())
                })?;
                Value::Object(map)
            }
            Some(b'"') => Value::String(self.double_quoted(0)?),
            Some(b'\'') => Value::String(self.single_quoted(0)?),
            Some(b'*') => self.alias()?,
            None => return Err(self.err("a value is missing")),
            Some(_) => resolve(self.plain_flow()),
        };
        if let Some(a) = anchor {
            self.anchors.insert(a, v.clone());
        }
        Ok(v)
    }

    /// A plain scalar in flow context: up to a flow indicator, `: ` or a comment.
    fn plain_flow(&mut self) -> String {
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                let ends = is_flow_indicator(b)
                    || is_break(Some(b))
                    || (b == b':'
                        && self
                            .peek_at(1)
                            .is_none_or(|n| is_ws(n) || is_break(Some(n)) || is_flow_indicator(n)))
                    || (b == b'#' && self.pos > start && is_ws(self.s[self.pos - 1]));
                if ends {
                    break;
                }
                self.pos += 1;
            }
            let piece = String::from_utf8_lossy(&self.s[start..self.pos]);
            let piece = piece.trim();
            if !piece.is_empty() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(piece);
            }
            if !is_break(self.peek()) || self.peek().is_none() {
                return out;
            }
            // Folded onto the next line, unless that line starts the next token.
            let save = self.pos;
            self.skip_flow_ws();
            if self
                .peek()
                .is_none_or(|b| is_flow_indicator(b) || b == b':')
            {
                self.pos = save;
                return out;
            }
        }
    }
}

/// `<<: *base` (or a list of them): the keys the mapping does not have yet.
fn merge(map: &mut Map<String, Value>, from: Value) {
    let sources = match from {
        Value::Array(items) => items,
        one => vec![one],
    };
    for source in sources {
        if let Value::Object(m) = source {
            for (k, v) in m {
                map.entry(k).or_insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn block_forms_and_compact_sequences() {
        let v = ok("a: 1\nb:\n  c: x y\n  d:\n  - p\n  -   q: r\n      s: t\n  - - n\ne:\n- z\n");
        assert_eq!(
            v,
            json!({"a": "1", "b": {"c": "x y", "d": ["p", {"q": "r", "s": "t"}, ["n"]]}, "e": ["z"]})
        );
    }

    #[test]
    fn flow_collections_over_lines_and_json() {
        let v = ok("cluster: {server: \"https://a:6443\",\n   certificate-authority-data: 'QQ==' }\nlist: [a, 'b', {c: d},\n  e]\nempty: {}\nnone: []\n");
        assert_eq!(
            v,
            json!({"cluster": {"server": "https://a:6443", "certificate-authority-data": "QQ=="},
                   "list": ["a", "b", {"c": "d"}, "e"], "empty": {}, "none": []})
        );
        let j = ok("{\n  \"kind\": \"Config\",\n  \"clusters\": [{\"name\": \"c\", \"cluster\": {\"server\": \"https://j\", \"insecure-skip-tls-verify\": true}}],\n  \"users\": null\n}\n");
        assert_eq!(
            j["clusters"][0]["cluster"]["insecure-skip-tls-verify"],
            true
        );
        assert_eq!(j["users"], Value::Null);
    }

    #[test]
    fn scalars_quoting_escapes_folding_and_block_scalars() {
        let v = ok("d: \"a\\tb\\u00e9\\x41\\\"\"\ns: 'it''s'\nf: \"one\n  two\"\np: plain\n  continued\nurl: https://h:1/x#frag\nc: value # comment\nlit: |\n  line 1\n  line 2\nfold: >-\n  a\n  b\n\n  c\nkeep: |+\n  k\n\nn: ~\nt: true\n");
        assert_eq!(v["d"], "a\tbéA\"");
        assert_eq!(v["s"], "it's");
        assert_eq!(v["f"], "one two");
        assert_eq!(v["p"], "plain continued");
        assert_eq!(v["url"], "https://h:1/x#frag");
        assert_eq!(v["c"], "value");
        assert_eq!(v["lit"], "line 1\nline 2\n");
        assert_eq!(v["fold"], "a b\nc");
        assert_eq!(v["keep"], "k\n\n");
        assert_eq!(v["n"], Value::Null);
        assert_eq!(v["t"], true);
    }

    #[test]
    fn anchors_aliases_merges_tags_directives_and_documents() {
        let v = ok("%YAML 1.2\n---\nbase: &b {server: s, x: 1}\nc1:\n  <<: *b\n  x: 2\nc2: *b\nt: !!str yes\n...\n---\nsecond: doc\n");
        assert_eq!(v["c1"], json!({"server": "s", "x": "2"}));
        assert_eq!(v["c2"], json!({"server": "s", "x": "1"}));
        assert_eq!(v["t"], "yes");
        assert!(v.get("second").is_none());
    }

    #[test]
    fn errors_name_the_line_and_nothing_panics() {
        for (bad, line) in [
            ("a: \"open\n", 1),
            ("a: 1\n  b: 2\n", 2),
            ("a: *nowhere\n", 1),
            ("a: [1, 2\n", 2),
            ("a: {b: c\n", 2),
            ("a: \"\\q\"\n", 1),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.line, line, "{bad:?}: {e}");
        }
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_err());
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let (prev, next) = ((b'a' + i) as char, (b'b' + i) as char);
            laughs.push_str(&format!(
                "{next}: &{next} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        assert_eq!(parse(&laughs).unwrap_err().what, "aliases copy too much");
        // Few aliases of one long string count by its length.
        let long = format!(
            "a: &a \"{}\"\nb: [{}]\n",
            "x".repeat(100_000),
            vec!["*a"; 100].join(", ")
        );
        assert_eq!(parse(&long).unwrap_err().what, "aliases copy too much");
        assert_eq!(
            parse("user:\n\ttoken: abc\n").unwrap_err().what,
            "tabs are not allowed for indentation"
        );
        assert_eq!(
            ok("users:\n- name: x\n...\n"),
            json!({"users": [{"name": "x"}]})
        );
        for junk in [
            "\u{0}",
            ":",
            "- - - -",
            "{,}",
            "[,]",
            "&",
            "!",
            "|9\n",
            "a:\n\t- b\n",
            "\"\\",
            "'",
        ] {
            let _ = parse(junk);
        }
    }
}
