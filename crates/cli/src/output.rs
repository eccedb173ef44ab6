//! Output: aligned tables for people, `-o json|yaml` with the proto JSON
//! field names for scripts, `-q` for ids only.

use std::io::{IsTerminal as _, Write as _};
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

use crate::error::{CliError, Result};

/// The `-o` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON (proto JSON field names, every field present).
    Json,
    /// YAML (same fields as JSON).
    Yaml,
}

/// A message the CLI prints: its proto name, table columns and id.
pub trait Resource: prost::Message + Sized {
    /// Full proto name, e.g. `ferry.v1.Project`.
    const TYPE: &'static str;
    /// Table column headers.
    const HEADERS: &'static [&'static str];
    /// The id printed by `-q`.
    fn id(&self) -> String;
    /// The table cells, one per header.
    fn row(&self) -> Vec<String>;
}

/// Implements [`Resource`]: `resource!(Type, "ProtoName", |x| id_expr, ["HEADER" => cell_expr, ...])`.
#[macro_export]
macro_rules! resource {
    ($ty:ty, $name:literal, |$s:ident| $id:expr, [$($h:literal => $v:expr),* $(,)?]) => {
        impl $crate::output::Resource for $ty {
            const TYPE: &'static str = concat!("ferry.v1.", $name);
            const HEADERS: &'static [&'static str] = &[$($h),*];
            fn id(&self) -> String {
                let $s = self;
                ($id).to_string()
            }
            fn row(&self) -> Vec<String> {
                let $s = self;
                vec![$(($v).to_string()),*]
            }
        }
    };
}

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// `-o`.
    pub format: Format,
    /// `-q`: ids only.
    pub quiet: bool,
    /// ANSI colour (stdout is a terminal and `NO_COLOR` is unset).
    pub color: bool,
}

/// True when stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn pool() -> Result<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(ferry_proto::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
        .ok_or_else(|| CliError::msg("the built-in API descriptors do not decode"))
}

/// `message` as JSON with the proto JSON names and every field present.
pub fn to_json<T: Resource>(message: &T) -> Result<Value> {
    let descriptor = pool()?
        .get_message_by_name(T::TYPE)
        .ok_or_else(|| CliError::msg(format!("unknown message type {}", T::TYPE)))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| CliError::msg(format!("cannot decode {}: {e}", T::TYPE)))?;
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CliError::msg(format!("cannot encode {}: {e}", T::TYPE)))
}

impl Out {
    /// Prints a list of resources.
    pub fn list<T: Resource>(&self, items: &[T]) -> Result<()> {
        match self.format {
            Format::Json | Format::Yaml => {
                let values = items.iter().map(to_json).collect::<Result<Vec<_>>>()?;
                self.value(&Value::Array(values))
            }
            Format::Table if self.quiet => {
                let ids: Vec<String> = items.iter().map(Resource::id).collect();
                print_lines(&ids)
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = items.iter().map(Resource::row).collect();
                self.table(T::HEADERS, &rows)
            }
        }
    }

    /// Prints one resource.
    pub fn one<T: Resource>(&self, item: &T) -> Result<()> {
        match self.format {
            Format::Json | Format::Yaml => self.value(&to_json(item)?),
            Format::Table if self.quiet => print_lines(&[item.id()]),
            Format::Table => self.table(T::HEADERS, &[item.row()]),
        }
    }

    /// Prints a JSON value as JSON or YAML.
    pub fn value(&self, value: &Value) -> Result<()> {
        let text = match self.format {
            Format::Yaml => serde_yaml_ng::to_string(value)
                .map_err(|e| CliError::msg(format!("cannot encode YAML: {e}")))?,
            _ => {
                let mut text = serde_json::to_string_pretty(value)
                    .map_err(|e| CliError::msg(format!("cannot encode JSON: {e}")))?;
                text.push('\n');
                text
            }
        };
        write_out(&text)
    }

    /// True for `-o json|yaml`.
    pub fn structured(&self) -> bool {
        self.format != Format::Table
    }

    /// A human message (suppressed by `-q` and structured output), to stdout.
    pub fn note(&self, text: impl AsRef<str>) -> Result<()> {
        if self.quiet || self.structured() {
            return Ok(());
        }
        write_out(&format!("{}\n", text.as_ref()))
    }

    /// A progress line: stdout for people, stderr under `-o json|yaml`
    /// (stdout stays parseable), nothing under `-q`.
    pub fn progress(&self, text: &str) {
        if self.quiet {
        } else if self.structured() {
            eprintln!("{text}");
        } else {
            let _ = write_out(&format!("{text}\n"));
        }
    }

    /// An aligned table (the last column is not padded).
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
        write_out(&render_table(headers, rows, self.color))
    }

    /// `text` in ANSI colour `code` when colour is on.
    pub fn paint(&self, code: &str, text: &str) -> String {
        paint(self.color, code, text)
    }
}

/// `text` in ANSI colour `code` when `color`.
pub fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The table as text.
pub fn render_table(headers: &[&str], rows: &[Vec<String>], color: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 3));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = paint(color, "1", line(&mut headers.iter().copied()).trim_end());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn print_lines(lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_out(&text)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// How long ago `ts` was, kubectl style (`45s`, `3m`, `5h`, `2d`); `-` when unset.
pub fn age(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secs = (now - ts.seconds).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A proto enum value name without its type prefix, lowercased
/// (`DEPLOYMENT_STATUS_RUNNING` → `running`).
pub fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// `-` for an empty cell.
pub fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let rows = vec![
            vec!["1".to_string(), "web".to_string(), "x".to_string()],
            vec!["22".to_string(), "w".to_string(), "y".to_string()],
        ];
        let text = render_table(&["ID", "NAME", "X"], &rows, false);
        assert_eq!(text, "ID   NAME   X\n1    web    x\n22   w      y\n");
    }

    #[test]
    fn enum_words() {
        assert_eq!(
            enum_word("DEPLOYMENT_STATUS_RUNNING", "DEPLOYMENT_STATUS_"),
            "running"
        );
    }
}
