//! Regression corpus: every file of tests/corpus is parsed; none may panic
//! or take long. `limit-*` files must be refused with `Error::Limit`, `ok-*`
//! files must parse; any other outcome is allowed for the rest (inputs found
//! by fuzzing are kept there). Add a file for every crash or hang found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_compose::{Error, parse};

#[test]
fn corpus_is_parsed_without_panic_within_bounds() {
    let dir = format!("{}/tests/corpus", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus missing: {files:?}");
    let env: BTreeMap<String, String> = [("A", "a"), ("B", "b"), ("TAG", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let yaml = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| parse(&yaml, &env));
        let elapsed = start.elapsed();
        let result = result.unwrap_or_else(|_| panic!("{name}: parse panicked"));
        // A guard, not a benchmark: the budgets keep these to milliseconds
        // in release builds.
        assert!(elapsed < Duration::from_secs(2), "{name}: {elapsed:?}");
        if name.starts_with("limit-") {
            assert!(
                matches!(result, Err(Error::Limit(_))),
                "{name}: expected Error::Limit, got {result:?}"
            );
        } else if name.starts_with("ok-") {
            assert!(result.is_ok(), "{name}: {result:?}");
        }
    }
}
