//! Compose resource units to Kubernetes quantities.

use crate::{Error, Result};

const KI: u64 = 1024;
const MI: u64 = KI * 1024;
const GI: u64 = MI * 1024;
const TI: u64 = GI * 1024;
const PI: u64 = TI * 1024;

/// Compose memory (`512m`, `1.5g`, `1GiB`, `300000` bytes; docker's binary
/// `go-units` semantics: `m` = MiB) to a Kubernetes quantity in the largest
/// exact binary unit (`512Mi`, `1536Mi`, `2Gi`).
pub(crate) fn memory(input: &str, path: &str) -> Result<String> {
    let bad = || Error::Invalid {
        path: path.to_owned(),
        message: format!(
            "invalid memory size `{input}` (expected e.g. 512m, 1g, 1.5g or a byte count)"
        ),
    };
    let s = input.trim();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let unit = unit.trim_start().to_ascii_lowercase();
    // Same grammar as go-units RAMInBytes: optional prefix, optional `i`, optional `b`.
    let prefix = unit.strip_suffix('b').unwrap_or(&unit);
    let prefix = prefix.strip_suffix('i').unwrap_or(prefix);
    if prefix.len() > 1
        || (prefix.is_empty() && unit.len() > 1)
        || (unit.contains('i') && prefix.is_empty())
    {
        return Err(bad());
    }
    let mult = match prefix {
        "" => 1,
        "k" => KI,
        "m" => MI,
        "g" => GI,
        "t" => TI,
        "p" => PI,
        _ => return Err(bad()),
    };
    let bytes = scaled(number, mult).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(Error::Invalid {
            path: path.to_owned(),
            message: format!("memory size `{input}` is zero"),
        });
    }
    Ok(for_bytes(bytes))
}

fn for_bytes(bytes: u64) -> String {
    for (unit, suffix) in [(PI, "Pi"), (TI, "Ti"), (GI, "Gi"), (MI, "Mi"), (KI, "Ki")] {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// `number * mult` for a non-negative decimal `number`, rounded to an
/// integer, computed without floats so that `0.5` and `1.5g` are exact.
fn scaled(number: &str, mult: u64) -> Option<u64> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let total = (int * scale + frac).checked_mul(u128::from(mult))?;
    u64::try_from((total + scale / 2) / scale).ok()
}

/// Compose `cpus` (`"0.5"`, `2`, `1.25`) to a Kubernetes CPU quantity:
/// whole cores as `"2"`, anything else in millicores (`"500m"`).
/// `0` means "no limit" in compose and yields `None`.
pub(crate) fn cpus(input: &str, path: &str) -> Result<Option<String>> {
    let millis = scaled(input.trim(), 1000).ok_or_else(|| Error::Invalid {
        path: path.to_owned(),
        message: format!("invalid cpus `{input}` (expected a number of cores, e.g. 0.5)"),
    })?;
    Ok(match millis {
        0 => None,
        m if m.is_multiple_of(1000) => Some((m / 1000).to_string()),
        m => Some(format!("{m}m")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn mem(s: &str) -> String {
        memory(s, "p").unwrap()
    }

    #[test]
    fn memory_units() {
        assert_eq!(mem("512m"), "512Mi");
        assert_eq!(mem("512M"), "512Mi");
        assert_eq!(mem("512mb"), "512Mi");
        assert_eq!(mem("512MiB"), "512Mi");
        assert_eq!(mem("1g"), "1Gi");
        assert_eq!(mem("1gb"), "1Gi");
        assert_eq!(mem("1.5g"), "1536Mi");
        assert_eq!(mem("2048m"), "2Gi");
        assert_eq!(mem("64k"), "64Ki");
        assert_eq!(mem("64kb"), "64Ki");
        assert_eq!(mem("1024"), "1Ki");
        assert_eq!(mem("1000"), "1000");
        assert_eq!(mem("100b"), "100");
        assert_eq!(mem("268435456"), "256Mi");
        assert_eq!(mem("1 g"), "1Gi");
        assert_eq!(mem("0.5g"), "512Mi");
        assert_eq!(mem("1t"), "1Ti");
    }

    #[test]
    fn memory_errors() {
        for bad in [
            "",
            "m",
            "abc",
            "1x",
            "1.2.3g",
            "-1g",
            "1mm",
            "1ib",
            "0",
            "0m",
            "1 gigabyte",
            "1mbb",
        ] {
            assert!(memory(bad, "p").is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn cpu_units() {
        let c = |s: &str| cpus(s, "p").unwrap();
        assert_eq!(c("0.5").as_deref(), Some("500m"));
        assert_eq!(c("0.25").as_deref(), Some("250m"));
        assert_eq!(c("1").as_deref(), Some("1"));
        assert_eq!(c("2.0").as_deref(), Some("2"));
        assert_eq!(c("1.5").as_deref(), Some("1500m"));
        assert_eq!(c(".1").as_deref(), Some("100m"));
        assert_eq!(c("0.0005").as_deref(), Some("1m"));
        assert_eq!(c("0"), None);
        assert!(cpus("-1", "p").is_err());
        assert!(cpus("half", "p").is_err());
        assert!(cpus("", "p").is_err());
    }
}
