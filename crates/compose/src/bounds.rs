//! Loading the YAML with bounded work.
//!
//! Compose files come from tenants, so parsing must not let a small file
//! cost a lot of time or memory. Three things can:
//!
//! - **Alias expansion.** `*x` is a full copy of the node anchored `&x`, and
//!   serde_yaml_ng builds every copy. Its own guard (at most 100 alias jumps
//!   per event of the file) stops the nested "billion laughs", but not one
//!   big anchor used many times: `&a [0, 0, ... 3000 times]` aliased 3000
//!   times is 15 KB of YAML and 9 million nodes (4 s of CPU, hundreds of
//!   MB), 40 000 times 40 000 fits in 200 KB, and a 100 KB string aliased
//!   40 000 times is 4 GB.
//! - **Flow nesting.** libyaml's scanner walks its stack of possible simple
//!   keys, one per open `[`/`{`, for every token: `[[[[...]]]]` costs the
//!   square of its depth (40 000 levels, 80 KB: 9 s) before serde_yaml_ng's
//!   own recursion limit (128) is ever consulted.
//! - **Depth** in general (recursion in the crate's tree walks).
//!
//! So [`load`] checks, in order, each step linear in the input or bounded
//! by a budget, before the tree is built:
//! 1. the byte size ([`MAX_BYTES`]);
//! 2. when the file has more than [`MAX_DEPTH`] `[`/`{` characters (else
//!    no flow nesting can be deeper), the nesting depth of the source, with
//!    the streaming granit-parser stopped at the first event deeper than
//!    [`MAX_DEPTH`];
//! 3. the tree serde_yaml_ng *would* build, walked through its own
//!    deserializer (so aliases expand exactly as they will) without
//!    allocating, and stopped as soon as it exceeds [`MAX_NODES`] nodes,
//!    [`MAX_TEXT_BYTES`] bytes of scalars or [`MAX_DEPTH`] levels;
//!
//! and only then builds the `Value`.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;

use crate::{Error, Result};

/// Largest compose file accepted, in bytes (the api refuses larger ones
/// first, with the same number).
pub const MAX_BYTES: usize = 256 * 1024;

/// Deepest nesting of mappings and lists, in the source and after alias
/// expansion. Real compose files nest about 6 levels.
pub const MAX_DEPTH: usize = 64;

/// Most YAML nodes (scalars, lists, mappings, mapping keys included) once
/// every alias is expanded. A 50-service compose file has a few thousand;
/// 50 000 nodes are a few MB of tree and tens of ms of work.
pub const MAX_NODES: usize = 50_000;

/// Most bytes of scalar text once every alias is expanded (16 times
/// [`MAX_BYTES`]); variable interpolation has a second budget of the same
/// size for the text it produces.
pub const MAX_TEXT_BYTES: usize = 4 * 1024 * 1024;

/// Most nested `${A:-${B:-...}}` defaults in one interpolation; each level
/// is a recursive call.
pub const MAX_INTERPOLATION_DEPTH: usize = 16;

const ALIAS_HINT: &str = "counting each use of an alias `*x` as a copy of its anchor `&x`; inline the values or use fewer aliases";

fn too_many_nodes() -> Error {
    Error::Limit(format!(
        "compose file expands to more than {MAX_NODES} YAML nodes ({ALIAS_HINT})"
    ))
}

fn too_much_text() -> Error {
    Error::Limit(format!(
        "compose file expands to more than {} MiB of text ({ALIAS_HINT})",
        MAX_TEXT_BYTES / (1024 * 1024)
    ))
}

fn too_deep() -> Error {
    Error::Limit(format!(
        "compose file nests mappings and lists more than {MAX_DEPTH} levels deep (aliases included)"
    ))
}

/// Parses `yaml` into a tree, refusing inputs over the limits above with
/// [`Error::Limit`]; other problems are [`Error::Yaml`].
pub(crate) fn load(yaml: &str) -> Result<Value> {
    if yaml.len() > MAX_BYTES {
        return Err(Error::Limit(format!(
            "compose file is {} bytes; at most {MAX_BYTES} (256 KiB) are accepted",
            yaml.len()
        )));
    }
    let flow_openers = yaml.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if flow_openers > MAX_DEPTH {
        check_source_depth(yaml)?;
    }
    check_expansion(yaml)?;
    serde_yaml_ng::from_str(yaml).map_err(|e| Error::Yaml(e.to_string()))
}

/// Streams the events of every document and stops at the first one nested
/// deeper than [`MAX_DEPTH`]. granit-parser is linear here (its simple-key
/// lookahead is capped), so libyaml only ever sees shallow files.
///
/// A file granit-parser rejects is refused with its message: libyaml cannot
/// be run on it safely, since nothing is then known about its depth.
fn check_source_depth(yaml: &str) -> Result<()> {
    use granit_parser::{ErrorKind, Event, Options, Parser};

    let mut options = Options::default();
    options.set_emit_comments(false);
    // Its scanner runs ahead of the events (simple-key lookahead), so its
    // own nesting limits must be ours too.
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    let mut parser = Parser::new_from_str_with_options(yaml, options);
    let mut depth = 0usize;
    while let Some(event) = parser.next_event() {
        let (event, _span) = event.map_err(|e| match e.kind() {
            ErrorKind::RecursionLimitExceeded => too_deep(),
            _ => Error::Yaml(e.to_string()),
        })?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep());
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => break,
            _ => {}
        }
    }
    Ok(())
}

/// Walks the alias-expanded tree through serde_yaml_ng without building it.
/// Work is bounded by the budgets: the walk stops at the first node over.
fn check_expansion(yaml: &str) -> Result<()> {
    let mut tally = Tally::default();
    let walked = Node {
        tally: &mut tally,
        depth: 0,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_str(yaml));
    if let Some(exceeded) = tally.exceeded {
        return Err(exceeded);
    }
    walked.map_err(|e| {
        // serde_yaml_ng's own guards, reached first on some inputs (its
        // alias-jump limit on the nested billion laughs): same refusal.
        let message = e.to_string();
        if message.starts_with("repetition limit exceeded") {
            too_many_nodes()
        } else if message.starts_with("recursion limit exceeded") {
            too_deep()
        } else {
            Error::Yaml(message)
        }
    })
}

#[derive(Default)]
struct Tally {
    nodes: usize,
    text_bytes: usize,
    /// The budget that stopped the walk (serde errors carry only text).
    exceeded: Option<Error>,
}

/// One node of the walk, at `depth` collections below the root.
struct Node<'t> {
    tally: &'t mut Tally,
    depth: usize,
}

impl Node<'_> {
    fn stop<E: de::Error>(&mut self, error: Error) -> Result<(), E> {
        let message = error.to_string();
        self.tally.exceeded = Some(error);
        Err(E::custom(message))
    }

    fn scalar<E: de::Error>(&mut self, text_bytes: usize) -> Result<(), E> {
        self.tally.nodes += 1;
        self.tally.text_bytes = self.tally.text_bytes.saturating_add(text_bytes);
        if self.tally.nodes > MAX_NODES {
            return self.stop(too_many_nodes());
        }
        if self.tally.text_bytes > MAX_TEXT_BYTES {
            return self.stop(too_much_text());
        }
        Ok(())
    }

    fn collection<E: de::Error>(&mut self) -> Result<(), E> {
        if self.depth >= MAX_DEPTH {
            return self.stop(too_deep());
        }
        self.scalar(0)
    }

    fn child(&mut self) -> Node<'_> {
        Node {
            tally: self.tally,
            depth: self.depth + 1,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Mirrors what `serde_yaml_ng::Value`'s visitor reads, counting instead of
/// storing.
impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_i128<E: de::Error>(mut self, _: i128) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_u128<E: de::Error>(mut self, _: u128) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_str<E: de::Error>(mut self, s: &str) -> Result<(), E> {
        self.scalar(s.len())
    }

    fn visit_bytes<E: de::Error>(mut self, b: &[u8]) -> Result<(), E> {
        self.scalar(b.len())
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_none<E: de::Error>(mut self) -> Result<(), E> {
        self.scalar(0)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.collection()?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.collection()?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }

    /// A tagged node (`!tag value`): the tag, then the value.
    fn visit_enum<A: EnumAccess<'de>>(mut self, data: A) -> Result<(), A::Error> {
        self.collection()?;
        let ((), variant) = data.variant_seed(self.child())?;
        de::VariantAccess::newtype_variant_seed(variant, self.child())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn limit(yaml: &str) -> String {
        match load(yaml) {
            Err(Error::Limit(message)) => message,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn anchors_within_budget_load_like_serde_yaml_ng() {
        let yaml = "a: &a {x: [1, 2, {y: z}]}\nb: *a\nc: !t {<<: *a}\n";
        let expected: Value = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(load(yaml).unwrap(), expected);
    }

    #[test]
    fn depth_is_bounded_with_and_without_the_source_check() {
        // Few brackets: the expansion walk refuses it.
        let block = format!("a:\n  {}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert!(limit(&block).contains("64 levels"));
        // Many brackets: the streaming check refuses it.
        let flow = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(limit(&flow).contains("64 levels"));
        // Exactly the limit is fine.
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(load(&ok).is_ok());
        // Through an alias: shallow source, deep expansion.
        let mut aliased = format!("a: &a {}{}\n", "[".repeat(40), "]".repeat(40));
        aliased.push_str(&format!("b: {}*a{}\n", "[".repeat(30), "]".repeat(30)));
        assert!(limit(&aliased).contains("64 levels"));
    }

    #[test]
    fn node_and_text_budgets() {
        let nodes = format!(
            "a: &a [{}]\nb: [{}]\n",
            ["0"; 1000].join(","),
            ["*a"; 100].join(",")
        );
        assert!(limit(&nodes).contains("YAML nodes"));
        let text = format!(
            "a: &a {}\nb: [{}]\n",
            "x".repeat(100_000),
            ["*a"; 50].join(",")
        );
        assert!(limit(&text).contains("MiB of text"));
        let big = "#".repeat(MAX_BYTES + 1);
        assert!(limit(&big).contains("256 KiB"));
    }

    #[test]
    fn serde_yaml_ng_guards_map_to_the_same_refusal() {
        // serde_yaml_ng's alias-jump limit (100 per event) is hit before the
        // node budget on this narrow, deep fan-out (2^14 copies, ~33 000
        // nodes); the message is pinned so an upgrade that rewords it is
        // noticed.
        let mut yaml = String::from("l0: &l0 [x, x]\n");
        for i in 1..14 {
            yaml.push_str(&format!("l{i}: &l{i} [*l{0}, *l{0}]\n", i - 1));
        }
        let mut tally = Tally::default();
        let raw = Node {
            tally: &mut tally,
            depth: 0,
        }
        .deserialize(serde_yaml_ng::Deserializer::from_str(&yaml));
        assert!(tally.exceeded.is_none());
        assert!(
            raw.unwrap_err()
                .to_string()
                .starts_with("repetition limit exceeded")
        );
        assert!(limit(&yaml).contains("YAML nodes"));
    }

    #[test]
    fn syntax_errors_stay_yaml_errors() {
        assert!(matches!(load("a: ["), Err(Error::Yaml(_))));
        let many = format!("a: [{}\n", "[x], ".repeat(100));
        assert!(matches!(load(&many), Err(Error::Yaml(_))));
        assert!(matches!(load("a: 1\na: 2\n"), Err(Error::Yaml(_))));
    }
}
