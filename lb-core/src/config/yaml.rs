//! A fast path for reading one YAML document into a JSON value, for the documents that use only
//! what it can decide exactly as serde-saphyr does with our options: mappings of string keys,
//! sequences, and untagged scalars without anchors, aliases or merge keys.
//!
//! serde-saphyr stays the reference. It reads through the same parser (granit-parser, with the
//! same limits), and [`value`] answers `None` for every document it is not certain of: a
//! syntax error, a tag, an anchor or alias, a merge key, a repeated key, a key that is not a
//! string, a plain scalar that a number reader might take (`0x1F`, `1e3`, `.inf`, `1_000`), a
//! document too deep or too large for serde-saphyr's budget. The caller then reads that
//! document with serde-saphyr, so errors, their positions and every rare form read exactly as
//! before. What `value` does answer, serde-saphyr answers the same: the `yaml_fast` fuzz
//! target and `tests/yaml_fast.rs` hold it to that.
//!
//! Two tiers. The first, `scan.rs`, reads the block YAML that manifests are written in
//! straight from the bytes (a strict subset: see its documentation); a document outside that
//! subset goes to the second, which builds the values from the parser's events.
//!
//! Why: serde-saphyr's deserializer reads a 100,000-service file in 2.6 s on one core, of which
//! its parser is 1.2 s; building the values straight from the parser's events removes the rest
//! (1.3 s), and the scanner reads the same file in 0.18 s.

use granit_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Value};

mod scan;

/// serde-saphyr's default budget, kept below its limits (depth 64, 250,000 nodes, 1,000,000
/// events, 64 MiB of scalars): a document past any of these is left to serde-saphyr, which
/// reports the breach. Every node is at least one event, so the events bound the nodes.
const MAX_DEPTH: usize = 60;
const MAX_EVENTS: usize = 240_000;
const MAX_BYTES: usize = 16 << 20;

/// The parser options serde-saphyr uses with its default budget (its `Budget::parser_options`).
/// Comments carry no value but are parsed as serde-saphyr parses them: it refuses a document
/// with more than 32 comments in a row where the parser looks ahead (found by the fuzzer).
fn options() -> granit_parser::Options {
    granit_parser::options! {
        simple_key_max_lookahead: 1024,
        flow_nesting_limit: 255,
        block_nesting_limit: granit_parser::Options::default().block_nesting_limit.max(65),
        emit_comments: true,
        max_buffered_comment_events: 32,
    }
}

/// A collection being read.
enum Open {
    Seq(Vec<Value>),
    /// A mapping, and the key whose value comes next.
    Map(Map<String, Value>, Option<String>),
}

/// `doc` (one document) as serde-saphyr reads it into a [`Value`], or `None` when this reader is
/// not certain of the answer (see the module's documentation). An empty document is `None`.
pub fn value(doc: &str) -> Option<Value> {
    if doc.len() > MAX_BYTES {
        return None;
    }
    if let Some(v) = scan::value(doc) {
        return Some(v);
    }
    let mut parser = Parser::new_from_str_with_options(doc, options());
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Value> = None;
    let mut documents = 0;
    for (events, next) in parser.by_ref().enumerate() {
        if events > MAX_EVENTS {
            return None;
        }
        let (event, _) = next.ok()?;
        let node = match event {
            Event::StreamStart | Event::DocumentEnd | Event::Comment(..) => continue,
            Event::StreamEnd => break,
            Event::DocumentStart(_, version) => {
                documents += 1;
                if documents > 1 || version.is_some() {
                    return None;
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                if let Some(Open::Map(map, key @ None)) = stack.last_mut() {
                    let k = key_text(text, style)?;
                    if k == "<<" || map.contains_key(&k) {
                        return None;
                    }
                    *key = Some(k);
                    continue;
                }
                scalar(text, style)?
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                if anchor != 0 || tag.is_some() || stack.len() >= MAX_DEPTH {
                    return None;
                }
                // A collection as a mapping's key.
                if let Some(Open::Map(_, None)) = stack.last() {
                    return None;
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Open::Seq(Vec::new()),
                    _ => Open::Map(Map::new(), None),
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq(items)) => Value::Array(items),
                _ => return None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map(map, None)) => Value::Object(map),
                _ => return None,
            },
            _ => return None,
        };
        match stack.last_mut() {
            Some(Open::Seq(items)) => items.push(node),
            Some(Open::Map(map, key)) => {
                map.insert(key.take()?, node);
            }
            None if root.is_none() => root = Some(node),
            None => return None,
        }
    }
    if !stack.is_empty() {
        return None;
    }
    root
}

/// The first tier alone (the scanner of block YAML, `scan.rs`): what it reads, or `None` when
/// the document is outside its subset. For the differential tests and the fuzzer.
#[doc(hidden)]
pub fn scanned(doc: &str) -> Option<Value> {
    if doc.len() > MAX_BYTES {
        return None;
    }
    scan::value(doc)
}

/// A mapping key as serde-saphyr reads it into a string: a quoted or block scalar's text, or a
/// plain scalar that reads as a string.
fn key_text(text: std::borrow::Cow<'_, str>, style: ScalarStyle) -> Option<String> {
    if style != ScalarStyle::Plain {
        return Some(text.into_owned());
    }
    match scalar(text, style)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// An untagged scalar's value under the YAML 1.2 core schema with strict booleans; `None` when
/// a number reader might take it.
fn scalar(text: std::borrow::Cow<'_, str>, style: ScalarStyle) -> Option<Value> {
    if style != ScalarStyle::Plain {
        return Some(Value::String(text.into_owned()));
    }
    let s: &str = &text;
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.') {
        if let Some(n) = decimal(s) {
            return Some(n);
        }
        // Any spelling an integer reader (radix prefixes, underscores, signs) or a float
        // reader (`1e3`, `.5`, `.inf`, `1e999`) could take is left to serde-saphyr. Without a
        // radix prefix, an integer is digits and underscores, and a float what Rust's float
        // reader takes: so a letter other than `e` (a UUID's `6b1e…`) makes it a string.
        let lower = s.to_ascii_lowercase();
        let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
        let radix = unsigned.len() >= 2 && unsigned[0] == b'0' && b"xXoObB".contains(&unsigned[1]);
        if s.parse::<f64>().is_ok()
            || radix
            || s.bytes().all(|c| c.is_ascii_digit() || b"_+-".contains(&c))
            || lower.contains("inf")
            || lower.contains("nan")
            || s.trim() != s
        {
            return None;
        }
    } else if s.trim_matches([' ', '\t', '\r', '\n']) != s {
        return None;
    }
    Some(Value::String(text.into_owned()))
}

/// A plain decimal integer without sign or leading zero (`0`, `80`, `-3`), of at most 18
/// digits, so it fits every integer type serde-saphyr might read it as.
fn decimal(s: &str) -> Option<Value> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let b = digits.as_bytes();
    if b.is_empty()
        || b.len() > 18
        || !b.iter().all(u8::is_ascii_digit)
        || (b[0] == b'0' && (b.len() > 1 || neg))
    {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(if neg {
        Value::from(-n)
    } else {
        Value::from(n as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saphyr(doc: &str) -> Option<Value> {
        serde_saphyr::from_str_with_options::<Value>(doc, super::super::load::yaml_options()).ok()
    }

    #[test]
    fn the_common_forms_read_as_serde_saphyr_reads_them() {
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: \"b\", labels: {x: 'y', on: yes, n: 'true'}}\nspec:\n  ports: [{port: 80, nodePort: -3}]\n  ip: 10.255.0.3\n  cidr: 2001:db8::/64\n  t: True\n  f: false\n  z: ~\n  e:\n  w: a b\n    c\n  lit: |\n    one\n    two\n";
        let fast = value(doc).expect("the fast path reads it");
        assert_eq!(Some(fast), saphyr(doc));
    }

    #[test]
    fn what_it_is_not_certain_of_is_left_to_serde_saphyr() {
        for doc in [
            "a: 0x1F",
            "a: 1e3",
            "a: .inf",
            "a: 1_000",
            "a: 012",
            "a: -0",
            "a: +1",
            "a: 1.5",
            "a: 12345678901234567890",
            "a: &x 1\nb: *x",
            "a: !!str 1",
            "<<: {a: 1}",
            "a: 1\na: 2",
            "1: a",
            "true: a",
            "? [a]\n: b",
            "a: [1",
            "%YAML 1.2\n---\na: 1",
            "a: 1\n...\n---\nb: 2",
        ] {
            assert_eq!(value(doc), None, "{doc}");
        }
    }

    #[test]
    fn strict_booleans_and_nulls() {
        for (doc, want) in [
            ("a: yes", Value::from("yes")),
            ("a: on", Value::from("on")),
            ("a: y", Value::from("y")),
            ("a: NULL", Value::Null),
            ("a: TRUE", Value::Bool(true)),
            ("a: 'null'", Value::from("null")),
            ("a: 1.2.3", Value::from("1.2.3")),
        ] {
            let got = value(doc).expect(doc);
            assert_eq!(got["a"], want, "{doc}");
            assert_eq!(Some(got), saphyr(doc), "{doc}");
        }
    }
}
