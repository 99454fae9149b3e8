//! The fast YAML path (`lb_core::config::yaml::value`) answers only what serde-saphyr answers:
//! for every document it reads, serde-saphyr (with the options `load_str` uses) reads the same
//! value; every other document it leaves to serde-saphyr. Held on the repository's own YAML
//! (which it must mostly read itself) and on generated documents full of the spellings that
//! YAML resolves to other types. The `yaml_fast` fuzz target holds it on arbitrary text.

#![cfg(feature = "yaml")]

use lb_core::config::yaml;
use proptest::prelude::*;
use serde_json::Value;

fn saphyr(doc: &str) -> Result<Value, String> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<Value>(doc, options).map_err(|e| e.to_string())
}

/// `Some(value)` from the fast path must be serde-saphyr's answer.
fn agrees(doc: &str) -> Result<bool, String> {
    agrees_with(yaml::value, doc)
}

/// The same, for the fast path's first tier alone (the block scanner).
fn scanner_agrees(doc: &str) -> Result<bool, String> {
    agrees_with(yaml::scanned, doc)
}

fn agrees_with(read: fn(&str) -> Option<Value>, doc: &str) -> Result<bool, String> {
    match read(doc) {
        None => Ok(false),
        Some(fast) => match saphyr(doc) {
            Ok(v) if v == fast => Ok(true),
            other => Err(format!(
                "fast path read {fast:?}, serde-saphyr {other:?}, for:\n{doc}"
            )),
        },
    }
}

fn repo_documents() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs = Vec::new();
    let mut files = vec![root.join("examples/config.yaml")];
    for entry in std::fs::read_dir(root.join("deploy")).expect("deploy/") {
        files.push(entry.expect("entry").path());
    }
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        docs.extend(text.split("\n---\n").map(str::to_string));
    }
    docs
}

#[test]
fn the_repository_s_yaml_reads_the_same_and_mostly_on_the_fast_path() {
    let docs = repo_documents();
    let mut fast = 0;
    for doc in &docs {
        if agrees(doc).unwrap_or_else(|e| panic!("{e}")) {
            fast += 1;
        }
    }
    // The CRDs and the example use no anchors, tags or numbers in other spellings.
    assert!(
        fast * 10 >= docs.len() * 9,
        "{fast} of {} documents on the fast path",
        docs.len()
    );
}

/// The text of every file in `tests/fixtures/<dir>`.
fn fixtures(dir: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|entry| std::fs::read_to_string(entry.expect("entry").path()).expect("text"))
        .collect()
}

/// Inputs the `yaml_fast` fuzz target found, each once a disagreement.
#[test]
fn the_fuzzer_s_findings_read_as_serde_saphyr_reads_them() {
    let mut n = 0;
    for text in fixtures("yaml") {
        agrees(&text).unwrap_or_else(|e| panic!("{e}"));
        n += 1;
    }
    assert!(n > 0);
}

/// A document past serde-saphyr's budget (here 250,000 nodes, in a `kubectl get -o yaml`
/// List) is refused by it, so the fast path must not read it either.
#[test]
fn a_document_past_serde_saphyr_s_budget_is_left_to_it() {
    let mut doc = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..90_000 {
        doc.push_str(&format!("- {{a: {i}, b: x}}\n"));
    }
    assert!(saphyr(&doc).is_err(), "serde-saphyr reads 270,000 nodes");
    assert_eq!(yaml::value(&doc), None);
}

/// Scalars that YAML resolves to strings, numbers, booleans and nulls, or that are not plain
/// scalars at all.
const SCALARS: &[&str] = &[
    "80",
    "-3",
    "0",
    "-0",
    "007",
    "0x1F",
    "0X1f",
    "0o17",
    "0O17",
    "0b101",
    "1_000",
    "1__0",
    "_1",
    "1e3",
    "1E-2",
    ".5",
    "5.",
    "+1",
    "+.inf",
    "-.inf",
    ".inf",
    ".Inf",
    ".NaN",
    ".nan",
    "+.nan",
    "nan",
    "inf",
    "Infinity",
    "1e999",
    "-1e999",
    "true",
    "True",
    "TRUE",
    "tRue",
    "false",
    "yes",
    "on",
    "off",
    "y",
    "n",
    "No",
    "null",
    "Null",
    "NULL",
    "nULL",
    "~",
    "",
    "10.255.0.3",
    "2001:db8::/64",
    "1.2",
    "1.2.3",
    "a b",
    "a: b",
    "-a",
    "- a",
    "#x",
    "a #b",
    "x\ty",
    "ü",
    "12345678901234567890",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "999999999999999999",
    "-999999999999999999",
    "1:30",
    "2001-01-01",
    "<<",
    "0.0.0.0/0",
    "@x",
    "`x`",
    "%x",
    "!x",
    "&x",
    "*x",
    "|",
    ">",
    "'",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    "?",
    ":",
    "k:",
    ":k",
    "a,b",
    "0xZ",
    "0x1G",
    "-0xa",
    "+0b1",
    "0o9",
    "6b1e0c9a-3f1d-4a8e",
    "1a",
    "1f",
    "0a",
    "-1d",
    "12ab_34",
    "1_a",
    "1e5a",
    "1.5f",
    "9e9e9",
    "1-2",
    "1+2",
    "-_1",
    "1.5.",
    "..",
    "-",
    "+",
    ".",
    "a\\b",
    "x\u{a0}",
    "\u{a0}",
    "1\u{a0}",
    "0.",
    "-.5",
    "+0",
    "00",
    "0_0",
    "1e",
    "e1",
    "0b",
    "x",
    "metadata",
    "name",
    "true ",
    " true",
    "a\nb",
];

#[derive(Clone, Debug)]
enum Node {
    Scalar(usize, Style),
    /// Items, flow, compact (a mapping item starts on its `-` line; as a mapping's value,
    /// the items stand at the key's column).
    Seq(Vec<Node>, bool, bool),
    Map(Vec<(usize, Style, Node)>, bool),
    Alias,
}

#[derive(Clone, Copy, Debug)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
    Anchored,
    Tagged,
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        8 => Just(Style::Plain),
        2 => Just(Style::Single),
        2 => Just(Style::Double),
        1 => Just(Style::Literal),
        1 => Just(Style::Anchored),
        1 => Just(Style::Tagged),
    ]
}

/// Keys from a few, so that a mapping often repeats one (in another style, too).
fn key() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => Just(SCALARS.len() - 4),
        4 => Just(SCALARS.len() - 3),
        2 => Just(0),
        1 => 0..SCALARS.len(),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    tree(
        prop_oneof![
            20 => (0..SCALARS.len(), style()).prop_map(|(i, s)| Node::Scalar(i, s)),
            1 => Just(Node::Alias),
        ]
        .boxed(),
        style().boxed(),
    )
}

/// Documents in the block form manifests are written in: no anchors, aliases, tags or block
/// scalars (and, rendered so, no comments), most within the scanner's subset.
fn block_node() -> impl Strategy<Value = Node> {
    let style = prop_oneof![
        8 => Just(Style::Plain),
        2 => Just(Style::Single),
        2 => Just(Style::Double),
    ];
    tree(
        (0..SCALARS.len(), style.clone())
            .prop_map(|(i, s)| Node::Scalar(i, s))
            .boxed(),
        style.boxed(),
    )
}

fn tree(leaf: BoxedStrategy<Node>, key_style: BoxedStrategy<Style>) -> impl Strategy<Value = Node> {
    leaf.prop_recursive(4, 24, 4, move |inner| {
        prop_oneof![
            (
                prop::collection::vec(inner.clone(), 0..4),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(v, f, c)| Node::Seq(v, f, c)),
            (
                prop::collection::vec((key(), key_style.clone(), inner), 0..4),
                any::<bool>()
            )
                .prop_map(|(v, f)| Node::Map(v, f)),
        ]
    })
}

fn scalar(i: usize, style: Style, indent: usize, out: &mut String) {
    let s = SCALARS[i];
    match style {
        // A line break in a plain scalar: its next line continues it, indented.
        Style::Plain => out.push_str(&s.replace('\n', &format!("\n{}", " ".repeat(indent.max(1))))),
        Style::Single => {
            out.push('\'');
            out.push_str(&s.replace('\'', "''"));
            out.push('\'');
        }
        Style::Double => {
            out.push('"');
            out.push_str(
                &s.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n"),
            );
            out.push('"');
        }
        Style::Literal => {
            out.push_str("|\n");
            for line in s.split('\n') {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&" ".repeat(indent));
        }
        Style::Anchored => {
            out.push_str("&a ");
            out.push_str(s);
        }
        Style::Tagged => {
            out.push_str("!!str ");
            out.push_str(s);
        }
    }
}

/// Writes `node` at `indent` (block) or inline (flow).
fn render(node: &Node, indent: usize, flow: bool, comments: bool, out: &mut String) {
    match node {
        Node::Scalar(i, s) => scalar(*i, if flow { plainish(*s) } else { *s }, indent, out),
        Node::Alias => out.push_str("*a"),
        Node::Seq(items, f, _) if flow || *f || items.is_empty() => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                render(item, indent, true, comments, out);
            }
            out.push(']');
        }
        Node::Map(entries, f) if flow || *f || entries.is_empty() => {
            out.push('{');
            for (n, (k, ks, v)) in entries.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                scalar(*k, plainish(*ks), indent, out);
                out.push_str(": ");
                render(v, indent, true, comments, out);
            }
            out.push('}');
        }
        Node::Seq(items, _, compact) => {
            for item in items {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                match item {
                    Node::Map(entries, false) if *compact && !entries.is_empty() => {
                        entries_block(entries, indent + 2, true, comments, out)
                    }
                    _ => render(item, indent + 2, false, comments, out),
                }
            }
        }
        Node::Map(entries, _) => entries_block(entries, indent, false, comments, out),
    }
}

/// A block mapping's entries at `indent`; the first on the current line when `inline` (a
/// compact mapping in a sequence's item).
fn entries_block(
    entries: &[(usize, Style, Node)],
    indent: usize,
    inline: bool,
    comments: bool,
    out: &mut String,
) {
    for (n, (k, ks, v)) in entries.iter().enumerate() {
        if !(inline && n == 0) {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
        }
        scalar(*k, plainish(*ks), indent, out);
        out.push(':');
        if matches!(v, Node::Scalar(..) | Node::Alias) || is_flow(v) {
            out.push(' ');
        }
        // A compact sequence stands at its key's column.
        let at = match v {
            Node::Seq(_, _, true) => indent,
            _ => indent + 2,
        };
        render(v, at, false, comments, out);
        if comments && matches!(v, Node::Scalar(_, Style::Plain)) && *k % 7 == 0 {
            out.push_str(" # a comment");
        }
    }
}

fn is_flow(n: &Node) -> bool {
    match n {
        Node::Seq(v, f, _) => *f || v.is_empty(),
        Node::Map(v, f) => *f || v.is_empty(),
        _ => false,
    }
}

/// Block scalars cannot be keys or stand in flow collections.
fn plainish(s: Style) -> Style {
    match s {
        Style::Literal => Style::Double,
        other => other,
    }
}

/// `root` as a document (with comments after some plain scalars when `comments`).
fn document(root: &Node, comments: bool) -> String {
    let mut doc = String::new();
    render(root, 0, false, comments, &mut doc);
    doc.trim_start_matches('\n').to_string()
}

/// The fast path and its scanner alone both answer only what serde-saphyr answers.
fn both_agree(doc: &str) -> Result<bool, String> {
    agrees(doc).and_then(|_| scanner_agrees(doc))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn a_generated_document_reads_as_serde_saphyr_reads_it(root in node()) {
        if let Err(e) = both_agree(&document(&root, true)) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn a_generated_block_document_reads_as_serde_saphyr_reads_it(root in block_node()) {
        if let Err(e) = both_agree(&document(&root, false)) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn a_generated_service_reads_as_serde_saphyr_reads_it(
        name in 0..SCALARS.len(),
        port in 0..SCALARS.len(),
        ip in 0..SCALARS.len(),
        label in 0..SCALARS.len(),
        s in style(),
    ) {
        let mut v = String::new();
        scalar(label, plainish(s), 4, &mut v);
        let doc = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  labels:\n    app: {v}\nspec:\n  ports: [{{port: {}}}]\n  loadBalancerIP: {}\n",
            SCALARS[name], SCALARS[port], SCALARS[ip],
        );
        if let Err(e) = both_agree(&doc) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The generated documents are worth checking: the fast path reads a good share of them, and
/// its first tier (the block scanner) a good share of those.
#[test]
fn the_generated_documents_exercise_the_fast_path() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut fast, mut scanned, mut valid) = (0, 0, 0);
    for _ in 0..2000 {
        let root = node().new_tree(&mut runner).expect("a tree").current();
        let doc = document(&root, true);
        let doc = doc.as_str();
        valid += usize::from(saphyr(doc).is_ok());
        fast += usize::from(agrees(doc).unwrap_or_else(|e| panic!("{e}")));
        scanned += usize::from(scanner_agrees(doc).unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(
        fast * 2 >= valid,
        "{fast} of {valid} valid documents on the fast path"
    );
    // These are full of what lies outside the scanner's subset (comments, anchors, tags).
    assert!(
        scanned * 20 >= fast,
        "{scanned} of the {fast} documents on the fast path read by its scanner"
    );
    // The block documents, much less so.
    let (mut scanned, mut valid) = (0, 0);
    for _ in 0..2000 {
        let root = block_node()
            .new_tree(&mut runner)
            .expect("a tree")
            .current();
        let doc = document(&root, false);
        let doc = doc.as_str();
        valid += usize::from(saphyr(doc).is_ok());
        scanned += usize::from(scanner_agrees(doc).unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(
        scanned * 2 >= valid,
        "{scanned} of {valid} valid block documents read by the scanner"
    );
}

/// The documents of the files the benches generate (and `services_yaml` writes), in the
/// form `kubectl` and most generators write, are read by the scanner, as serde-saphyr reads
/// them.
#[test]
fn block_manifests_are_read_by_the_scanner() {
    let mut n = 0;
    for text in fixtures("yaml-block") {
        for doc in text.split("\n---\n") {
            assert!(
                scanner_agrees(doc).unwrap_or_else(|e| panic!("{e}")),
                "the scanner leaves this to the next tier:\n{doc}"
            );
            n += 1;
        }
    }
    assert!(n >= 10, "{n} documents");
}
