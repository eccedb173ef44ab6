//! Column types shared by the generated entities (hand-written).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, ValueType, ValueTypeErr};
use sea_orm::sqlx::postgres::PgValueFormat;
use sea_orm::sqlx::{Row as _, ValueRef as _};
use sea_orm::{ColIdx, DbErr, IntoActiveValue, QueryResult, TryGetError, TryGetable, Value};

/// An IP address column: `INET` on PostgreSQL, text on SQLite.
///
/// It is bound as text and the entities cast it with
/// `save_as = "inet_text"` (a PostgreSQL domain over `inet`; a plain text
/// cast on SQLite), so inserts, updates and filters work unchanged on both
/// backends. Reading decodes PostgreSQL's INET wire format directly (sqlx's
/// `String` refuses INET, and a text cast would append `/32`), and parses the
/// text on SQLite. Only host addresses are stored (a CHECK enforces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpAddress(pub IpAddr);

impl fmt::Display for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for IpAddress {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl From<IpAddr> for IpAddress {
    fn from(ip: IpAddr) -> Self {
        Self(ip)
    }
}

impl From<IpAddress> for Value {
    fn from(ip: IpAddress) -> Self {
        Value::String(Some(ip.0.to_string()))
    }
}

impl Nullable for IpAddress {
    fn null() -> Value {
        Value::String(None)
    }
}

impl IntoActiveValue<IpAddress> for IpAddress {
    fn into_active_value(self) -> sea_orm::ActiveValue<IpAddress> {
        sea_orm::ActiveValue::Set(self)
    }
}

impl ValueType for IpAddress {
    fn try_from(v: Value) -> Result<Self, ValueTypeErr> {
        match v {
            Value::String(Some(s)) => s.parse().map_err(|_| ValueTypeErr),
            _ => Err(ValueTypeErr),
        }
    }

    fn type_name() -> String {
        "IpAddress".to_owned()
    }

    fn array_type() -> ArrayType {
        ArrayType::String
    }

    fn column_type() -> ColumnType {
        ColumnType::Inet
    }
}

fn bad(msg: impl Into<String>) -> TryGetError {
    TryGetError::DbErr(DbErr::Type(msg.into()))
}

/// PostgreSQL's binary INET: family (2 = v4, 3 = v6), mask bits, is_cidr,
/// address length, address bytes.
fn decode_pg_inet(bytes: &[u8]) -> Result<IpAddr, TryGetError> {
    match bytes {
        [2, _, _, 4, a, b, c, d] => Ok(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d))),
        [3, _, _, 16, rest @ ..] if rest.len() == 16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(rest);
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(bad("malformed INET value")),
    }
}

fn parse_text(s: &str) -> Result<IpAddr, TryGetError> {
    // PostgreSQL's text form may carry a mask ("10.0.0.1/32").
    let host = s.split('/').next().unwrap_or(s);
    host.parse()
        .map_err(|_| bad("stored IP address does not parse"))
}

impl TryGetable for IpAddress {
    fn try_get_by<I: ColIdx>(res: &QueryResult, idx: I) -> Result<Self, TryGetError> {
        if let Some(row) = res.try_as_pg_row() {
            let value = row
                .try_get_raw(idx.as_sqlx_postgres_index())
                .map_err(|e| bad(e.to_string()))?;
            if value.is_null() {
                return Err(TryGetError::Null(format!("{idx:?}")));
            }
            let bytes = value.as_bytes().map_err(|e| bad(e.to_string()))?;
            let ip = match value.format() {
                PgValueFormat::Binary => decode_pg_inet(bytes)?,
                PgValueFormat::Text => {
                    parse_text(std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?)?
                }
            };
            return Ok(Self(ip));
        }
        let text = String::try_get_by(res, idx)?;
        parse_text(&text).map(Self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_postgres_binary_inet() {
        assert_eq!(
            decode_pg_inet(&[2, 32, 0, 4, 10, 1, 2, 3]).unwrap(),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        let mut v6 = vec![3, 128, 0, 16];
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            decode_pg_inet(&v6).unwrap(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        assert!(decode_pg_inet(&[2, 32, 0, 4, 10]).is_err());
        assert_eq!(
            parse_text("::1/128").unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        );
    }
}
