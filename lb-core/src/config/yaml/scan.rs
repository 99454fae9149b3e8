//! The first tier of the fast path: a scanner for the block YAML that manifests and generated
//! files are written in, which reads a document straight from its bytes into a [`Value`].
//!
//! It reads a strict subset and answers `None` for anything outside it, so that the document
//! goes on to the parser-based tier (and, past that, to serde-saphyr). The subset:
//!
//! - printable ASCII and line feeds only: no tab, carriage return, other control character or
//!   non-ASCII byte, and no `#` anywhere (no comments, so no comment rules to match);
//! - a root block mapping or block sequence at column 0, or a root flow collection on one
//!   line;
//! - block mappings of plain keys (`[A-Za-z0-9_./]` first, then `[A-Za-z0-9_./-]`), each key
//!   followed at once by `:` and a space or the line's end; no repeated key;
//! - block sequences (`- item`, a compact mapping `- key: value` as an item, a sequence as a
//!   mapping's value at the key's own column);
//! - single-line scalars: plain, single-quoted, and double-quoted without escapes;
//! - single-line flow sequences and mappings, without trailing commas, whose plain scalars
//!   hold no `:` or quote;
//! - an empty value (`key:` with nothing under it) is null, as YAML reads it.
//!
//! Multi-line plain scalars, block scalars (`|`, `>`), anchors, aliases, tags, directives,
//! document markers, complex keys and flow collections over several lines are all outside it.
//! Scalars resolve as the parser-based tier resolves them ([`super::scalar`]), which leaves
//! every number spelling it is not certain of to serde-saphyr.

use super::{MAX_DEPTH, MAX_EVENTS, scalar};
use serde_json::{Map, Value};
use std::borrow::Cow;

use granit_parser::ScalarStyle;

/// `doc` read as serde-saphyr reads it, when it lies within the subset; otherwise `None`.
pub(super) fn value(doc: &str) -> Option<Value> {
    if !doc
        .bytes()
        .all(|b| b == b'\n' || ((0x20..0x7f).contains(&b) && b != b'#'))
    {
        return None;
    }
    let mut scan = Scan {
        doc,
        s: doc.as_bytes(),
        pos: 0,
        end: 0,
        col: 0,
        next: 0,
        done: false,
        events: 0,
    };
    scan.advance();
    if scan.done || scan.col != 0 {
        return None;
    }
    let root = if matches!(scan.s[scan.pos], b'[' | b'{') {
        let (root, after) = scan.flow(scan.pos, scan.end, 0)?;
        if after != scan.end {
            return None;
        }
        scan.advance();
        root
    } else {
        scan.block(0)?
    };
    (scan.done && scan.events <= MAX_EVENTS).then_some(root)
}

/// A cursor over the document's non-blank lines. The current line's content (leading and
/// trailing spaces cut) is `s[pos..end]`, starting at column `col`; the next line starts at
/// `next`. `done` once no line is left.
struct Scan<'a> {
    doc: &'a str,
    s: &'a [u8],
    pos: usize,
    end: usize,
    col: usize,
    next: usize,
    done: bool,
    /// The parser's events this would take, bounded as the parser-based tier bounds them.
    events: usize,
}

fn key_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/')
}

fn key_char(b: u8) -> bool {
    key_start(b) || b == b'-'
}

/// A plain scalar's first character: nothing YAML reads as an indicator.
fn plain_start(b: u8) -> bool {
    key_start(b) || matches!(b, b'~' | b'+' | b'-')
}

impl<'a> Scan<'a> {
    /// Moves to the next non-blank line.
    fn advance(&mut self) {
        let s = self.s;
        loop {
            if self.next >= s.len() {
                self.done = true;
                return;
            }
            let start = self.next;
            let nl = s[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(s.len(), |i| start + i);
            self.next = nl + 1;
            let mut p = start;
            while p < nl && s[p] == b' ' {
                p += 1;
            }
            if p == nl {
                continue;
            }
            let mut e = nl;
            while s[e - 1] == b' ' {
                e -= 1;
            }
            (self.pos, self.end, self.col) = (p, e, p - start);
            return;
        }
    }

    fn event(&mut self, n: usize) -> Option<()> {
        self.events += n;
        (self.events <= MAX_EVENTS).then_some(())
    }

    /// Whether the current line (from `pos`) is a block sequence's item: `-` then a space or
    /// the line's end.
    fn at_item(&self) -> bool {
        self.s[self.pos] == b'-' && (self.pos + 1 == self.end || self.s[self.pos + 1] == b' ')
    }

    /// The block collection that starts on the current line, at column `col` (== self.col).
    fn block(&mut self, depth: usize) -> Option<Value> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.event(2)?;
        if self.at_item() {
            self.sequence(depth)
        } else {
            self.mapping(depth)
        }
    }

    /// The key at `at` (before `end`), when what stands there is a plain or quoted key
    /// followed at once by `:` and a space (or, outside flow, the end): where its text lies
    /// (quotes included) and where the `:` is. A key of 1,000 bytes or more is refused: the
    /// parser looks no further than 1,024 for a key's `:`.
    fn key_at(&self, at: usize, end: usize, flow: bool) -> Option<(usize, usize)> {
        let s = self.s;
        let p = match s[at] {
            b'"' | b'\'' => self.quoted_end(at, end)?,
            b if key_start(b) => {
                let mut p = at + 1;
                while p < end && key_char(s[p]) {
                    p += 1;
                }
                p
            }
            _ => return None,
        };
        let colon = p < end && s[p] == b':';
        let after = if p + 1 == end {
            !flow
        } else {
            p + 1 < end && s[p + 1] == b' '
        };
        (colon && after && p - at < 1000).then_some((at, p))
    }

    /// The key whose text is `s[at..colon]` as a string (`None` for a plain one that is not).
    fn key_text(&mut self, at: usize, colon: usize) -> Option<String> {
        self.event(1)?;
        if matches!(self.s[at], b'"' | b'\'') {
            return Some(self.quoted_text(at, colon));
        }
        match scalar(Cow::Borrowed(&self.doc[at..colon]), ScalarStyle::Plain)? {
            Value::String(key) => Some(key),
            _ => None,
        }
    }

    /// Whether the current line (from `pos`) starts with a key.
    fn at_key(&self) -> bool {
        self.key_at(self.pos, self.end, false).is_some()
    }

    /// A block mapping whose first key is at the current position, at column `self.col`.
    fn mapping(&mut self, depth: usize) -> Option<Value> {
        let col = self.col;
        let mut map = Map::new();
        loop {
            let (at, k) = self.key_at(self.pos, self.end, false)?;
            let key = self.key_text(at, k)?;
            let mut rest = k + 1;
            while rest < self.end && self.s[rest] == b' ' {
                rest += 1;
            }
            let v = self.value_at(true, col, rest, depth)?;
            if map.insert(key, v).is_some() {
                return None;
            }
            if self.done || self.col < col {
                return Some(Value::Object(map));
            }
            if self.col > col {
                return None;
            }
        }
    }

    /// A block sequence whose first item is on the current line, at column `self.col`.
    fn sequence(&mut self, depth: usize) -> Option<Value> {
        let col = self.col;
        let mut items = Vec::new();
        loop {
            let mut p = self.pos + 1;
            while p < self.end && self.s[p] == b' ' {
                p += 1;
            }
            let item = if p == self.end {
                self.value_at(false, col, p, depth)?
            } else {
                // The item's content, as a line of its own at its column.
                self.col += p - self.pos;
                self.pos = p;
                if self.at_item() {
                    return None;
                }
                if self.at_key() {
                    self.block(depth + 1)?
                } else {
                    self.value_at(false, col, p, depth)?
                }
            };
            items.push(item);
            if self.done || self.col < col || (self.col == col && !self.at_item()) {
                return Some(Value::Array(items));
            }
            if self.col > col {
                return None;
            }
        }
    }

    /// The value that starts at `at` on the current line (whose key, when `key`, or item
    /// indicator is at column `col`), or under it when nothing follows; leaves the cursor on
    /// the next line.
    fn value_at(&mut self, key: bool, col: usize, at: usize, depth: usize) -> Option<Value> {
        if at < self.end {
            let (v, after) = self.inline(at, self.end, depth + 1)?;
            if after != self.end {
                return None;
            }
            // A more indented line next would continue the scalar (or be an error): the
            // mapping or sequence this value is in refuses it.
            self.advance();
            return Some(v);
        }
        self.advance();
        if self.done || self.col < col {
            self.event(1)?;
            return Some(Value::Null);
        }
        if self.col > col {
            return self.block(depth + 1);
        }
        // A sequence at a key's own column is the key's value; the line after an item with
        // nothing after its indicator is the next item, or the sequence's end.
        if key && self.at_item() {
            return self.block(depth + 1);
        }
        self.event(1)?;
        Some(Value::Null)
    }

    /// One inline node in `s[at..end]`: a quoted scalar, a flow collection or (outside flow)
    /// a plain scalar running to `end`. The node and where it ended.
    fn inline(&mut self, at: usize, end: usize, depth: usize) -> Option<(Value, usize)> {
        match self.s[at] {
            b'"' | b'\'' => self.quoted(at, end),
            b'[' | b'{' => self.flow(at, end, depth),
            _ => {
                let text = &self.s[at..end];
                if !plain_start(text[0])
                    || (text[0] == b'-' && (text.len() == 1 || text[1] == b' '))
                    || text
                        .iter()
                        .any(|b| matches!(b, b'[' | b']' | b'{' | b'}' | b'"' | b'\''))
                    || text.windows(2).any(|w| w[0] == b':' && w[1] == b' ')
                    || text[text.len() - 1] == b':'
                {
                    return None;
                }
                self.event(1)?;
                let v = scalar(Cow::Borrowed(&self.doc[at..end]), ScalarStyle::Plain)?;
                Some((v, end))
            }
        }
    }

    /// A quoted scalar starting at `at`, on this line; double-quoted ones without escapes.
    /// The scalar and where what follows it (past spaces) starts.
    fn quoted(&mut self, at: usize, end: usize) -> Option<(Value, usize)> {
        let close = self.quoted_end(at, end)?;
        self.event(1)?;
        let text = self.quoted_text(at, close);
        let mut p = close;
        while p < end && self.s[p] == b' ' {
            p += 1;
        }
        Some((Value::String(text), p))
    }

    /// Where the quoted scalar starting at `at` ends (past its closing quote), if it closes
    /// before `end` and (double-quoted) has no escape.
    fn quoted_end(&self, at: usize, end: usize) -> Option<usize> {
        let s = self.s;
        let q = s[at];
        let mut p = at + 1;
        while p < end {
            match s[p] {
                b'\\' if q == b'"' => return None,
                b if b == q => {
                    if q == b'\'' && p + 1 < end && s[p + 1] == b'\'' {
                        p += 2;
                        continue;
                    }
                    return Some(p + 1);
                }
                _ => p += 1,
            }
        }
        None
    }

    /// The text of the quoted scalar `s[at..close]` (quotes included).
    fn quoted_text(&self, at: usize, close: usize) -> String {
        let inner = &self.doc[at + 1..close - 1];
        if self.s[at] == b'\'' && inner.contains("''") {
            inner.replace("''", "'")
        } else {
            inner.to_string()
        }
    }

    /// A flow sequence or mapping starting at `at` and closing on this line.
    fn flow(&mut self, at: usize, end: usize, depth: usize) -> Option<(Value, usize)> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.event(2)?;
        let s = self.s;
        let seq = s[at] == b'[';
        let close = if seq { b']' } else { b'}' };
        let skip = |mut p: usize| {
            while p < end && s[p] == b' ' {
                p += 1;
            }
            p
        };
        let mut p = skip(at + 1);
        let mut items = Vec::new();
        let mut map = Map::new();
        if p < end && s[p] == close {
            p += 1;
        } else {
            loop {
                if p >= end {
                    return None;
                }
                if seq {
                    let (v, after) = self.flow_node(p, end, depth)?;
                    items.push(v);
                    p = after;
                } else {
                    let (k0, colon) = self.key_at(p, end, true)?;
                    let key = self.key_text(k0, colon)?;
                    let (v, after) = self.flow_node(skip(colon + 1), end, depth)?;
                    if map.insert(key, v).is_some() {
                        return None;
                    }
                    p = after;
                }
                match s.get(p) {
                    Some(b) if p < end && *b == close => {
                        p += 1;
                        break;
                    }
                    Some(b',') if p < end => {
                        p = skip(p + 1);
                        // No trailing comma.
                        if p >= end || s[p] == close {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
        }
        let v = if seq {
            Value::Array(items)
        } else {
            Value::Object(map)
        };
        Some((v, skip(p)))
    }

    /// A node inside a flow collection, starting at `at`: what it was and where the next
    /// `,` or closing bracket is.
    fn flow_node(&mut self, at: usize, end: usize, depth: usize) -> Option<(Value, usize)> {
        let s = self.s;
        if at >= end {
            return None;
        }
        match s[at] {
            b'"' | b'\'' => self.quoted(at, end),
            b'[' | b'{' => self.flow(at, end, depth + 1),
            b if !plain_start(b) => None,
            _ => {
                let mut p = at;
                while p < end && !matches!(s[p], b',' | b']' | b'}') {
                    if matches!(s[p], b':' | b'[' | b'{' | b'"' | b'\'') {
                        return None;
                    }
                    p += 1;
                }
                let mut e = p;
                while s[e - 1] == b' ' {
                    e -= 1;
                }
                if s[at] == b'-' && (e == at + 1 || s[at + 1] == b' ') {
                    return None;
                }
                self.event(1)?;
                let v = scalar(Cow::Borrowed(&self.doc[at..e]), ScalarStyle::Plain)?;
                Some((v, p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saphyr(doc: &str) -> Option<Value> {
        serde_saphyr::from_str_with_options::<Value>(doc, super::super::super::load::yaml_options())
            .ok()
    }

    #[test]
    fn the_block_forms_of_manifests_read_as_serde_saphyr_reads_them() {
        for doc in [
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels: {x: 'y', on: yes, n: 'it''s'}\nspec:\n  ports: [{port: 80, nodePort: -3}, {port: 443}]\n  ip: 10.255.0.3\n  cidr: 2001:db8::/64\n  t: True\n  z: ~\n  e:\n  w: a  b\n",
            "items:\n- a\n- b: 1\n  c:\n  - x\n  - y\n  d: {}\n-\n- []\nafter: z\n",
            "a:\n  - 1\n  -   b: 2\n      c: 3\n  - - 4\n",
            "a:\n    b:\n        c: \"x y\"\n\n\n    d: 'q'   \n",
            "a: [a b , \"c\",'d',[e, {f: g}], {}]\nb: {h: [], i: \"\"}\n",
            "- x\n- y\n",
            "a:\nb:\n",
            "a: http://x:80/y\nb: -x\nc: +x\nd: x:y\n",
        ] {
            let fast = value(doc);
            let reference = saphyr(doc);
            if fast.is_some() {
                assert_eq!(fast, reference, "{doc}");
            }
        }
    }

    #[test]
    fn the_common_forms_are_within_the_subset() {
        for doc in [
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels: {x: 'y', n: 'it''s'}\nspec:\n  ports: [{port: 80}, {port: 443}]\n  ip: 10.255.0.3\n  e:\n",
            "items:\n- a\n- b: 1\n  c:\n  - x\n  - y\n  d: {}\n-\n- []\nafter: z\n",
            "a:\n    b:\n        c: \"x y\"\n\n\n    d: 'q'   \n",
            "a: [a b , \"c\",'d',[e, {f: g}], {}]\n",
            "\"a b\": 1\n'c''d':\n  - {'e': f, \"g\": \"\"}\n",
        ] {
            assert!(value(doc).is_some(), "{doc}");
            assert_eq!(value(doc), saphyr(doc), "{doc}");
        }
    }

    #[test]
    fn what_lies_outside_the_subset_is_left_to_the_next_tier() {
        for doc in [
            "a: 1 # comment",
            "a: b\n  c",
            "- a\n  b",
            "a: |\n  x\n",
            "a: >\n  x\n",
            "a: &x 1",
            "a: *x",
            "a: !!str 1",
            "\"a\":1",
            "a: {\"b\":1}",
            "a : 1",
            "a:\tb",
            "a: b\r\n",
            "a: \"x\\ty\"",
            "a: \"x\n  y\"",
            "a: [x,\n  y]",
            "a: [x, ]",
            "a: [x: y]",
            "a: {b}",
            "a: {b: }",
            "a: 1\na: 2",
            "a: {b: 1, b: 2}",
            "<<: {}",
            "1: a",
            "a: 0x1F",
            "a: b: c",
            "a: b:",
            "a: - b",
            "a: -",
            "- - a",
            "  a: 1",
            "a: 1\n b: 2",
            "a:\n    b: 1\n  c: 2",
            "x",
            "",
            "a: \u{fc}",
            "a: [1] x",
            "a: \"b\" c",
            "a: x[1]",
            "%YAML 1.2\na: 1",
            "...\n",
            "a: ?x",
        ] {
            assert_eq!(value(doc), None, "{doc:?}");
        }
    }

    /// The parser looks at most 1,024 bytes ahead for a key's `:`.
    #[test]
    fn a_key_too_long_is_left_alone() {
        let doc = format!("{}: 1\n", "k".repeat(1100));
        assert!(saphyr(&doc).is_none());
        assert_eq!(value(&doc), None);
        let doc = format!("{}: 1\n", "k".repeat(900));
        assert_eq!(value(&doc), saphyr(&doc));
        assert!(value(&doc).is_some());
    }

    #[test]
    fn a_document_too_deep_is_left_alone() {
        let mut doc = String::new();
        for d in 0..70 {
            doc.push_str(&" ".repeat(d * 2));
            doc.push_str("a:\n");
        }
        assert_eq!(value(&doc), None);
        let flow = format!("a: {}{}", "[".repeat(70), "]".repeat(70));
        assert_eq!(value(&flow), None);
    }
}
