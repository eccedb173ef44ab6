//! Watch paths: which pushes a monorepo service builds for.
//!
//! Patterns are gitignore-like globs, relative to the repository root (not
//! the service's root directory):
//!
//! - `*` and `?` stay within one path segment, `**` spans any number,
//!   `[abc]` and `{a,b}` work as usual;
//! - a pattern without `/` matches at any depth (`*.md`, `Dockerfile`);
//!   one with `/` is anchored at the root (`apps/web/**`); a leading `/`
//!   anchors explicitly;
//! - a pattern also covers everything below what it names (`apps/web` is
//!   `apps/web/**` too);
//! - `!pattern` excludes. A path counts when it matches some include
//!   pattern (or there are none) and no exclude pattern.
//!
//! No patterns at all: every change counts.

use std::fmt;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// The most patterns a service may have.
pub const MAX_PATTERNS: usize = 50;
/// The longest pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 256;

/// The API field the errors name.
const FIELD: &str = "watchPaths";

/// Compiled watch paths.
#[derive(Debug, Clone)]
pub struct Matcher {
    include: Set,
    exclude: Set,
}

/// One side (include or exclude): the compiled globs and, for each, the
/// pattern it came from.
#[derive(Debug, Clone)]
struct Set {
    globs: GlobSet,
    origin: Vec<usize>,
    patterns: Vec<String>,
}

/// The first changed path that counts, and the pattern it matched (none
/// when there are no include patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub path: String,
    pub pattern: Option<String>,
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Some(pattern) => write!(f, "{} matched {pattern}", self.path),
            None => write!(f, "{} changed", self.path),
        }
    }
}

impl Matcher {
    /// Validates and compiles the patterns; errors name the pattern as
    /// `watchPaths[i]`.
    pub fn new(patterns: &[String]) -> Result<Matcher> {
        if patterns.len() > MAX_PATTERNS {
            return Err(Error::invalid(
                FIELD,
                format!(
                    "at most {MAX_PATTERNS} patterns are allowed, got {}",
                    patterns.len()
                ),
            ));
        }
        let mut include = SetBuilder::new();
        let mut exclude = SetBuilder::new();
        for (i, raw) in patterns.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            let (negated, body) = match raw.strip_prefix('!') {
                Some(body) => (true, body),
                None => (false, raw.as_str()),
            };
            let globs = compile(body).map_err(|reason| Error::invalid(&field, reason))?;
            let side = if negated { &mut exclude } else { &mut include };
            side.add(raw, globs);
        }
        Ok(Matcher {
            include: include.build()?,
            exclude: exclude.build()?,
        })
    }

    /// The first path that counts, in the order given.
    pub fn matches<S: AsRef<str>>(&self, paths: &[S]) -> Option<Hit> {
        paths.iter().find_map(|path| self.hit(path.as_ref()))
    }

    /// Whether one path counts, and why.
    pub fn hit(&self, path: &str) -> Option<Hit> {
        let candidate = Candidate::new(path);
        if self.exclude.globs.is_match_candidate(&candidate) {
            return None;
        }
        if self.include.patterns.is_empty() {
            return Some(Hit {
                path: path.to_owned(),
                pattern: None,
            });
        }
        let first = self.include.globs.matches_candidate(&candidate);
        let first = first.first()?;
        Some(Hit {
            path: path.to_owned(),
            pattern: Some(self.include.patterns[self.include.origin[*first]].clone()),
        })
    }
}

struct SetBuilder {
    builder: GlobSetBuilder,
    origin: Vec<usize>,
    patterns: Vec<String>,
}

impl SetBuilder {
    fn new() -> SetBuilder {
        SetBuilder {
            builder: GlobSetBuilder::new(),
            origin: Vec::new(),
            patterns: Vec::new(),
        }
    }

    fn add(&mut self, pattern: &str, globs: Vec<Glob>) {
        for glob in globs {
            self.builder.add(glob);
            self.origin.push(self.patterns.len());
        }
        self.patterns.push(pattern.to_owned());
    }

    fn build(self) -> Result<Set> {
        let globs = self
            .builder
            .build()
            .map_err(|e| Error::invalid(FIELD, format!("cannot be compiled: {e}")))?;
        Ok(Set {
            globs,
            origin: self.origin,
            patterns: self.patterns,
        })
    }
}

/// One pattern (without its `!`) as the globs that implement it.
fn compile(body: &str) -> std::result::Result<Vec<Glob>, String> {
    if body.is_empty() {
        return Err("is empty".into());
    }
    if body.len() > MAX_PATTERN_LEN {
        return Err(format!("is longer than {MAX_PATTERN_LEN} bytes"));
    }
    if body.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let anchored = body.starts_with('/');
    let trimmed = body.trim_start_matches("./").trim_matches('/');
    if trimmed.is_empty() {
        return Err("names no path".into());
    }
    if trimmed.split('/').any(|part| part == "..") {
        return Err("must not contain '..' (paths are relative to the repository root)".into());
    }
    let base = if anchored || trimmed.contains('/') {
        trimmed.to_owned()
    } else {
        format!("**/{trimmed}")
    };
    let mut globs = vec![base.clone()];
    if !base.ends_with("**") {
        globs.push(format!("{base}/**"));
    }
    globs
        .iter()
        .map(|g| {
            GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("is not a valid glob ({})", e.kind()))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> Matcher {
        Matcher::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn counts(m: &Matcher, path: &str) -> bool {
        m.hit(path).is_some()
    }

    fn error(patterns: &[&str]) -> String {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Matcher::new(&patterns).unwrap_err().to_string()
    }

    #[test]
    fn globs_follow_gitignore_habits() {
        let m = matcher(&[
            "apps/web/**",
            "*.md",
            "/Dockerfile",
            "packages/ui",
            "src/*.rs",
        ]);
        assert!(counts(&m, "apps/web/src/x.ts"));
        assert!(counts(&m, "README.md"));
        assert!(counts(&m, "docs/deep/guide.md"));
        assert!(counts(&m, "Dockerfile"));
        assert!(!counts(&m, "apps/api/Dockerfile"), "leading / anchors");
        assert!(
            counts(&m, "packages/ui/button.tsx"),
            "a directory covers its contents"
        );
        assert!(counts(&m, "src/main.rs"));
        assert!(!counts(&m, "src/bin/main.rs"), "* stays within a segment");
        assert!(!counts(&m, "apps/api/main.go"));
        assert!(!counts(&m, "apps/webx/a.ts"));
    }

    #[test]
    fn negation_excludes() {
        let m = matcher(&["apps/web/**", "!apps/web/docs/**"]);
        assert!(counts(&m, "apps/web/page.tsx"));
        assert!(!counts(&m, "apps/web/docs/intro.md"));
        let only_excludes = matcher(&["!docs/**", "!*.md"]);
        assert!(counts(&only_excludes, "src/main.rs"));
        assert!(!counts(&only_excludes, "docs/a.txt"));
        assert!(!counts(&only_excludes, "src/notes.md"));
    }

    #[test]
    fn reports_the_first_matching_path_and_pattern() {
        let m = matcher(&["*.md", "apps/web/**"]);
        let paths = ["apps/api/x.go", "apps/web/src/x.ts", "README.md"];
        let hit = m.matches(&paths).unwrap();
        assert_eq!(hit.to_string(), "apps/web/src/x.ts matched apps/web/**");
        assert_eq!(m.matches(&["apps/api/x.go"]), None);
        let everything = matcher(&[]);
        let hit = everything.matches(&["a/b"]).unwrap();
        assert_eq!(hit.to_string(), "a/b changed");
        assert_eq!(everything.matches::<&str>(&[]), None);
    }

    #[test]
    fn validation_names_the_pattern() {
        assert_eq!(error(&["ok/**", ""]), "watchPaths[1]: is empty");
        assert_eq!(error(&["!"]), "watchPaths[0]: is empty");
        assert!(error(&["a", "b", "[z-a"]).starts_with("watchPaths[2]: is not a valid glob"));
        assert!(error(&["../x"]).starts_with("watchPaths[0]: must not contain '..'"));
        assert!(error(&["a\tb"]).contains("control"));
        assert!(error(&["/"]).contains("names no path"));
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert!(error(&[&long]).starts_with("watchPaths[0]: is longer than 256 bytes"));
        let many: Vec<&str> = vec!["a"; MAX_PATTERNS + 1];
        assert!(error(&many).starts_with("watchPaths: at most 50 patterns"));
        assert!(Matcher::new(&vec!["a".to_string(); MAX_PATTERNS]).is_ok());
    }
}
