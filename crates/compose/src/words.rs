//! A small POSIX-ish word splitter for string `command:` / `entrypoint:` /
//! healthcheck values. Compose splits these with shell-words rules but never
//! runs a shell; neither do we (no expansion, no globbing, no operators).

use crate::{Error, Result};

/// Splits `input` into words: whitespace separates, `'...'` is literal,
/// `"..."` allows `\"`, `\\`, `\$`, `` \` `` and line continuations, and a
/// backslash outside quotes escapes the next character.
pub(crate) fn split(input: &str, path: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once anything (even `''`) has been seen for it.
    let mut in_word = false;
    let mut chars = input.chars();
    let unterminated = |what: &str| Error::Invalid {
        path: path.to_owned(),
        message: format!("unterminated {what} in `{input}`"),
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unterminated("single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unterminated("double quote")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unterminated("double quote")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(unterminated("backslash escape")),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn s(input: &str) -> Vec<String> {
        split(input, "p").unwrap()
    }

    #[test]
    fn whitespace() {
        assert_eq!(s("npm run start"), ["npm", "run", "start"]);
        assert_eq!(s("  a \t b\n c  "), ["a", "b", "c"]);
        assert!(s("").is_empty());
        assert!(s("   ").is_empty());
    }

    #[test]
    fn quotes() {
        assert_eq!(
            s(r#"sh -c "echo hello world""#),
            ["sh", "-c", "echo hello world"]
        );
        assert_eq!(
            s("sh -c 'echo $HOME \"x\"'"),
            ["sh", "-c", "echo $HOME \"x\""]
        );
        assert_eq!(s(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(s(r#"--name='' x"#), ["--name=", "x"]);
        assert_eq!(s(r#"'' """#), ["", ""]);
        assert_eq!(s(r#""a \"q\" \\ \$x \n""#), [r#"a "q" \ $x \n"#]);
    }

    #[test]
    fn backslashes() {
        assert_eq!(s(r"a\ b c"), ["a b", "c"]);
        assert_eq!(s("a \\\n b"), ["a", "b"]);
        assert_eq!(s(r"\'x"), ["'x"]);
    }

    #[test]
    fn no_shell_semantics() {
        assert_eq!(
            s("echo $HOME && rm -rf *"),
            ["echo", "$HOME", "&&", "rm", "-rf", "*"]
        );
        assert_eq!(s("a;b|c"), ["a;b|c"]);
    }

    #[test]
    fn unterminated() {
        assert!(split("echo 'oops", "p").is_err());
        assert!(split("echo \"oops", "p").is_err());
        assert!(split("echo oops\\", "p").is_err());
    }
}
