//! The rules Kubernetes applies to names and quantities, shared by the
//! api's request validation and the renderer: what Create accepts renders.

use std::net::IpAddr;

/// RFC 1123 label: 1 to `max` of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_label(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// A CPU quantity: `250m`, `1`, `1.5`.
pub fn is_cpu(value: &str) -> bool {
    let number = value.strip_suffix('m').unwrap_or(value);
    is_decimal(number) && number.len() <= 12
}

/// A memory or storage quantity: `512Mi`, `1Gi`, `1G`, `1048576`.
pub fn is_memory(value: &str) -> bool {
    let number = ["Ki", "Mi", "Gi", "Ti", "K", "M", "G", "T"]
        .iter()
        .find_map(|s| value.strip_suffix(s))
        .unwrap_or(value);
    is_decimal(number) && number.len() <= 12
}

/// Bytes of a memory quantity (`512Mi`, `1G`, `9788Ki`, `1048576`);
/// `None` when it is not one or does not fit.
pub fn memory_bytes(value: &str) -> Option<i64> {
    const UNITS: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("", 1.0),
    ];
    scaled(value, &UNITS)
}

/// Millicores of a CPU quantity as metrics.k8s.io reports it (`3061254n`,
/// `120u`, `250m`, `1.5`).
pub fn cpu_millicores(value: &str) -> Option<i64> {
    const UNITS: [(&str, f64); 4] = [("n", 1e-6), ("u", 1e-3), ("m", 1.0), ("", 1000.0)];
    scaled(value, &UNITS)
}

fn scaled(value: &str, units: &[(&str, f64)]) -> Option<i64> {
    let (number, factor) = units
        .iter()
        .find_map(|(suffix, f)| Some((value.strip_suffix(suffix)?, *f)))?;
    if !is_decimal(number) || number.len() > 20 {
        return None;
    }
    let scaled = number.parse::<f64>().ok()? * factor;
    (scaled.is_finite() && scaled < i64::MAX as f64).then(|| scaled.round() as i64)
}

fn is_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// An IPv4 or IPv6 CIDR (`10.0.0.0/8`, `fc00::/7`); `Some(true)` for IPv6.
pub fn cidr_is_v6(value: &str) -> Option<bool> {
    let (addr, prefix) = value.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv6() { 128 } else { 32 };
    (prefix <= max).then_some(addr.is_ipv6())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_cidrs() {
        assert!(is_cpu("250m") && is_cpu("1.5") && !is_cpu("1.") && !is_cpu("-1"));
        assert!(is_memory("512Mi") && is_memory("100Gi") && !is_memory("1Pb"));
        assert_eq!(cidr_is_v6("10.0.0.0/8"), Some(false));
        assert_eq!(cidr_is_v6("fc00::/7"), Some(true));
        assert_eq!(cidr_is_v6("10.0.0.0/33"), None);
        assert_eq!(cidr_is_v6("10.0.0.0"), None);
        assert!(is_label("ferry-web-0123456789ab", 63) && !is_label("-a", 63));
        assert_eq!(memory_bytes("512Mi"), Some(536_870_912));
        assert_eq!(memory_bytes("9788Ki"), Some(10_022_912));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("1048576"), Some(1_048_576));
        assert_eq!(memory_bytes("1Pb"), None);
        assert_eq!(cpu_millicores("3061254n"), Some(3));
        assert_eq!(cpu_millicores("250m"), Some(250));
        assert_eq!(cpu_millicores("1.5"), Some(1500));
        assert_eq!(cpu_millicores("120u"), Some(0));
        assert_eq!(cpu_millicores("x"), None);
    }
}
