//! The work of parsing is bounded: files that expand (YAML aliases, variable
//! interpolation) or nest too much are refused with `Error::Limit`, quickly
//! and before the expanded tree is built; real files with anchors and merge
//! keys still parse.
//!
//! The time assertions are loose guards (debug builds, a shared CI machine):
//! the proof is the `Error::Limit` itself, which the parser only returns
//! when it stopped at a budget instead of building the tree. Without the
//! budgets these inputs take seconds to minutes and gigabytes (see the
//! crate README).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_compose::limits::{MAX_BYTES, MAX_DEPTH, MAX_NODES, MAX_TEXT_BYTES};
use ferry_compose::{Error, parse};

const SERVICES: &str = "services:\n  web: {image: nginx}\n";

/// Guard only; refusals measure a few ms in release and tens in debug.
const QUICK: Duration = Duration::from_secs(1);

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Parses and expects a quick `Error::Limit` whose message contains `what`.
fn refused(yaml: &str, env: &BTreeMap<String, String>, what: &str) -> String {
    let start = Instant::now();
    let result = parse(yaml, env);
    let elapsed = start.elapsed();
    let message = match result {
        Err(Error::Limit(message)) => message,
        other => panic!("expected Error::Limit, got {other:?}"),
    };
    assert!(
        message.contains(what),
        "{message:?} should mention {what:?}"
    );
    eprintln!("refused in {elapsed:?}: {message}");
    assert!(elapsed < QUICK, "refused in {elapsed:?}, guard {QUICK:?}");
    message
}

fn list(item: &str, n: usize) -> String {
    format!("[{}]", vec![item; n].join(", "))
}

/// The classic "billion laughs": nine levels of nine aliases to the level
/// below, 9^9 (387 million) strings from 500 bytes.
fn billion_laughs() -> String {
    let mut yaml = format!("x-l0: &l0 {}\n", list("lol", 9));
    for i in 1..9 {
        yaml.push_str(&format!(
            "x-l{i}: &l{i} {}\n",
            list(&format!("*l{}", i - 1), 9)
        ));
    }
    yaml + SERVICES
}

#[test]
fn nested_alias_fan_out_is_refused() {
    let message = refused(&billion_laughs(), &BTreeMap::new(), "YAML nodes");
    assert!(message.contains(&MAX_NODES.to_string()), "{message}");
    assert!(message.contains("alias `*x`") && message.contains("anchor `&x`"));
}

#[test]
fn wide_alias_fan_out_is_refused() {
    // One level: 3000 aliases of a 3000-item list, 15 KB of YAML for 9
    // million nodes. serde_yaml_ng's own alias limit (100 jumps per event)
    // does not catch this shape.
    let yaml = format!(
        "x-a: &a {}\nx-b: {}\n{SERVICES}",
        list("0", 3000),
        list("*a", 3000)
    );
    refused(&yaml, &BTreeMap::new(), "YAML nodes");
}

#[test]
fn alias_fan_out_inside_a_service_is_refused() {
    // Where the expansion lands in used keys rather than an `x-` field.
    let yaml = format!(
        "x-a: &a {}\nservices:\n  web:\n    image: nginx\n    command: {}\n",
        list("\"--flag\"", 2000),
        list("*a", 2000)
    );
    refused(&yaml, &BTreeMap::new(), "YAML nodes");
}

#[test]
fn text_fan_out_is_refused() {
    // Few nodes, many bytes: a 100 KB string aliased 2000 times is 200 MB.
    let yaml = format!(
        "x-a: &a {}\nx-b: {}\n{SERVICES}",
        "x".repeat(100_000),
        list("*a", 2000)
    );
    refused(&yaml, &BTreeMap::new(), "MiB of text");
}

#[test]
fn merge_key_fan_out_is_refused() {
    // `<<` lists repeating an anchor, nested: every level copies the one
    // below nine times before the merge collapses them.
    let keys: Vec<String> = (0..9).map(|k| format!("k{k}: v")).collect();
    let mut yaml = format!("x-m0: &m0 {{{}}}\n", keys.join(", "));
    for i in 1..9 {
        yaml.push_str(&format!(
            "x-m{i}: &m{i} {{<<: {}, k{i}: w}}\n",
            list(&format!("*m{}", i - 1), 9)
        ));
    }
    yaml.push_str("services:\n  web:\n    <<: *m8\n    image: nginx\n");
    refused(&yaml, &BTreeMap::new(), "YAML nodes");

    // One level, wide: a 1000-key mapping merged 200 times into a service.
    let keys: Vec<String> = (0..1000).map(|k| format!("k{k}: v")).collect();
    let yaml = format!(
        "x-m: &m {{{}}}\nservices:\n  web:\n    <<: {}\n    image: nginx\n",
        keys.join(", "),
        list("*m", 200)
    );
    refused(&yaml, &BTreeMap::new(), "YAML nodes");
}

#[test]
fn aliases_in_keys_are_refused() {
    // Mapping keys are nodes too: 300 keys each holding a 1000-item alias.
    let keys: Vec<String> = (0..300).map(|i| format!("[*a, {i}]: x")).collect();
    let yaml = format!(
        "x-a: &a {}\nx-b: {{{}}}\n{SERVICES}",
        list("0", 1000),
        keys.join(", ")
    );
    refused(&yaml, &BTreeMap::new(), "YAML nodes");
    // Block-style complex keys (`? *a`) with nested fan-out.
    let mut yaml = format!("x-l0: &l0 {}\n", list("lol", 9));
    for i in 1..9 {
        yaml.push_str(&format!(
            "x-l{i}: &l{i} {}\n",
            list(&format!("*l{}", i - 1), 9)
        ));
    }
    yaml.push_str("x-k:\n  ? *l8\n  : value\n");
    yaml.push_str(SERVICES);
    refused(&yaml, &BTreeMap::new(), "YAML nodes");
}

#[test]
fn deep_nesting_is_refused() {
    let levels = |n: usize| format!("x: {}{}\n{SERVICES}", "[".repeat(n), "]".repeat(n));
    // 128 000 levels of flow nesting: libyaml alone would take minutes.
    let message = refused(&levels(120_000), &BTreeMap::new(), "levels");
    assert!(message.contains(&MAX_DEPTH.to_string()), "{message}");
    // Just over the limit (the `x:` mapping is the first level).
    refused(&levels(MAX_DEPTH), &BTreeMap::new(), "levels");
    // Unclosed.
    refused(
        &format!("x: {}", "{a: ".repeat(50_000)),
        &BTreeMap::new(),
        "levels",
    );
    // Block nesting, and nesting reached only through an alias.
    let block = format!("x:\n  {}y\n{SERVICES}", "- ".repeat(100_000));
    refused(&block, &BTreeMap::new(), "levels");
    let aliased = format!(
        "x-a: &a {}{}\nx-b: {}*a{}\n{SERVICES}",
        "[".repeat(40),
        "]".repeat(40),
        "[".repeat(40),
        "]".repeat(40)
    );
    refused(&aliased, &BTreeMap::new(), "levels");
}

#[test]
fn nested_interpolation_defaults_are_refused_not_a_stack_overflow() {
    // Each `${A:-` level was a recursive call: 20 000 of them overflowed the
    // stack and aborted the whole process.
    let yaml = format!(
        "services:\n  web:\n    image: \"{}x{}\"\n",
        "${A:-".repeat(20_000),
        "}".repeat(20_000)
    );
    refused(&yaml, &BTreeMap::new(), "nest more than");
    // A reasonable nesting still works.
    let yaml = "services:\n  web:\n    image: \"${A:-${B:-${C:-nginx}}}\"\n";
    assert_eq!(
        parse(yaml, &BTreeMap::new()).unwrap().services[0].image,
        "nginx"
    );
}

#[test]
fn interpolation_output_is_bounded() {
    // Variables come from the tenant as well: 50 000 `$A` of 1 MB each
    // would be 50 GB.
    let big = "x".repeat(1024 * 1024);
    let yaml = format!(
        "services:\n  web:\n    image: nginx\n    environment:\n      X: \"{}\"\n",
        "$A".repeat(50_000)
    );
    refused(
        &yaml,
        &env(&[("A", &big)]),
        "interpolation produces more than",
    );
    // Spread over many values, the budget is shared.
    let mut yaml = String::from("services:\n  web:\n    image: nginx\n    environment:\n");
    for i in 0..10 {
        yaml.push_str(&format!("      X{i}: $A\n"));
    }
    let half = "x".repeat(MAX_TEXT_BYTES / 8);
    refused(
        &yaml,
        &env(&[("A", &half)]),
        "interpolation produces more than",
    );
}

#[test]
fn oversized_file_is_refused() {
    let yaml = format!("{SERVICES}# {}\n", "x".repeat(MAX_BYTES));
    refused(&yaml, &BTreeMap::new(), "256 KiB");
}

#[test]
fn many_services_stay_fast() {
    // Dependency chain against alphabetical order, renamed services named in
    // environment values, ports ranges: linear (or n log n) now, quadratic
    // before (ordering, name checks, host warnings, port dedupe).
    let n = 3000;
    let mut yaml = String::from("services:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  s_{i:04}: {{image: x, depends_on: [s_{:04}], environment: {{H: \"s_{:04}:80\"}}}}\n",
            i + 1,
            i + 1
        ));
    }
    yaml.push_str(&format!(
        "  s_{n:04}: {{image: x, ports: {}}}\n",
        list("\"1000-1031\"", 2000)
    ));
    let start = Instant::now();
    let project = parse(&yaml, &BTreeMap::new()).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(project.services.len(), n + 1);
    assert_eq!(project.services[0].name, format!("s-{n:04}"));
    assert_eq!(project.services[0].ports.len(), 32);
    assert!(
        project
            .warnings
            .iter()
            .any(|w| w.message.contains("`s_0001`"))
    );
    // Guard only: about 0.1 s in release, under 2 s in debug.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn real_world_anchors_and_merge_keys_still_parse() {
    let path = format!(
        "{}/tests/fixtures/sentry-like.yml",
        env!("CARGO_MANIFEST_DIR")
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let project = parse(&yaml, &env(&[("SENTRY_IMAGE", "getsentry/sentry:24.5.0")])).unwrap();
    let service = |name: &str| {
        project
            .services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    };
    assert_eq!(project.services.len(), 15);
    // `<<: *sentry_defaults`, itself merging `*restart_policy` and `*logging`.
    let worker = service("worker");
    assert_eq!(worker.image, "getsentry/sentry:24.5.0");
    assert_eq!(worker.command, ["run", "worker"]);
    assert_eq!(worker.entrypoint, ["/etc/sentry/entrypoint.sh"]);
    assert_eq!(worker.replicas, Some(2));
    assert_eq!(
        worker.depends_on,
        ["kafka", "postgres", "redis", "snuba-api"]
    );
    assert!(
        worker
            .environment
            .contains(&("SENTRY_EVENT_RETENTION_DAYS".into(), "90".into()))
    );
    assert!(
        worker
            .environment
            .contains(&("SNUBA".into(), "http://snuba-api:1218".into()))
    );
    // A local key wins over the merged one.
    let replacer = service("snuba-replacer");
    assert!(
        replacer
            .environment
            .contains(&("SNUBA_REPLACER".into(), "1".into()))
    );
    assert_eq!(replacer.image, "getsentry/snuba:nightly");
    assert_eq!(service("web").healthcheck_port, Some(9000));
    assert_eq!(service("web").command, ["run", "web"]);
    // Dependencies first.
    let names: Vec<&str> = project.services.iter().map(|s| s.name.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("kafka") < pos("snuba-api") && pos("snuba-api") < pos("web"));
    assert!(
        project
            .volumes
            .iter()
            .any(|v| v.name == "sentry-data" && v.size_gb == Some(20))
    );
    // Logging (merged from `x-logging`) is warned, as written inline.
    assert!(
        project
            .warnings
            .iter()
            .any(|w| w.path == "services.web.logging")
    );
}
