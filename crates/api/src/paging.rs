//! Paging of every list RPC: one page-size policy and one opaque keyset
//! cursor.
//!
//! Each list has a stable sort key ([`Keyset`]: a few columns ending in the
//! unique `id`). A page token carries the last returned row's key and the
//! next page continues strictly after it, so rows added or removed between
//! pages never shift what follows (no OFFSET, no rescanning skipped rows).
//!
//! Tokens are base64url JSON `{"l": <list>, "k": [<key parts as text>]}`:
//! opaque to clients and bound to one list. Anything that does not decode
//! to this list's key shape is `InvalidArgument("pageToken: ...")`; a
//! well-formed token only positions the cursor, the query's own filters
//! (organization, project, caller) still decide what is visible.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use ferry_db::sea_orm::{
    ColumnTrait, Condition, Order, QueryFilter, QueryOrder, QuerySelect, Value,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result};

/// Rows per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page a request may ask for; more is refused, not clamped,
/// so a client never mistakes a short page for the end of the list.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Tokens we issue are far shorter; longer input is refused undecoded.
const MAX_TOKEN_LEN: usize = 2048;

/// The type of one sort column, which is how a token's text is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Id,
    Time,
    Flag,
}

/// One part of a row's sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Text(String),
    Id(Uuid),
    Time(DateTime<Utc>),
    Flag(bool),
}

impl Key {
    fn kind(&self) -> Kind {
        match self {
            Key::Text(_) => Kind::Text,
            Key::Id(_) => Kind::Id,
            Key::Time(_) => Kind::Time,
            Key::Flag(_) => Kind::Flag,
        }
    }

    fn to_text(&self) -> String {
        match self {
            Key::Text(s) => s.clone(),
            Key::Id(id) => id.to_string(),
            // Full precision: the row's stored value, compared exactly.
            Key::Time(t) => t.to_rfc3339_opts(SecondsFormat::Nanos, true),
            Key::Flag(b) => b.to_string(),
        }
    }

    fn parse(kind: Kind, text: &str) -> Option<Key> {
        match kind {
            Kind::Text => Some(Key::Text(text.to_owned())),
            Kind::Id => Uuid::parse_str(text).ok().map(Key::Id),
            Kind::Time => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| Key::Time(t.with_timezone(&Utc))),
            Kind::Flag => text.parse().ok().map(Key::Flag),
        }
    }

    fn value(&self) -> Value {
        match self {
            Key::Text(s) => s.clone().into(),
            Key::Id(id) => (*id).into(),
            Key::Time(t) => (*t).into(),
            Key::Flag(b) => (*b).into(),
        }
    }
}

/// One sort column of a [`Keyset`].
#[derive(Debug, Clone, Copy)]
pub struct Sort<C> {
    column: C,
    kind: Kind,
    descending: bool,
}

/// An ascending sort column.
pub const fn asc<C>(column: C, kind: Kind) -> Sort<C> {
    Sort {
        column,
        kind,
        descending: false,
    }
}

/// A descending sort column.
pub const fn desc<C>(column: C, kind: Kind) -> Sort<C> {
    Sort {
        column,
        kind,
        descending: true,
    }
}

/// The sort order of one list. The columns must end in a unique one (the
/// id), so the order is total and a key names exactly one position.
#[derive(Debug)]
pub struct Keyset<C: 'static> {
    /// Tokens carry it: a token of another list is refused.
    pub list: &'static str,
    pub columns: &'static [Sort<C>],
}

/// The token's JSON.
#[derive(Serialize, Deserialize)]
struct Token {
    l: String,
    k: Vec<String>,
}

impl<C: ColumnTrait + Copy> Keyset<C> {
    /// Reads a request's `page_size` and `page_token` for this list.
    pub fn page(&'static self, page_size: u32, page_token: &str) -> Result<Page<C>> {
        let size = page_size_of(page_size)?;
        let after = if page_token.is_empty() {
            None
        } else {
            Some(self.decode(page_token).ok_or_else(|| {
                Error::InvalidArgument(
                    "pageToken: not a page token of this list; send a nextPageToken back \
                     unchanged, or none for the first page"
                        .into(),
                )
            })?)
        };
        Ok(Page {
            keyset: self,
            size,
            after,
        })
    }

    /// Orders `query` by this key.
    pub fn order<Q: QueryOrder>(&self, mut query: Q) -> Q {
        for sort in self.columns {
            let order = if sort.descending {
                Order::Desc
            } else {
                Order::Asc
            };
            query = query.order_by(sort.column, order);
        }
        query
    }

    /// Rows strictly after `key` in this order: `(a, b) > (x, y)` spelled
    /// `a > x OR (a = x AND b > y)`, per column direction, which both
    /// backends plan on the same indexes as the ORDER BY.
    pub fn after(&self, key: &[Key]) -> Condition {
        let mut any = Condition::any();
        for (i, (sort, value)) in self.columns.iter().zip(key).enumerate() {
            let mut all = Condition::all();
            for (prefix, equal) in self.columns.iter().zip(key).take(i) {
                all = all.add(prefix.column.eq(equal.value()));
            }
            let beyond = if sort.descending {
                sort.column.lt(value.value())
            } else {
                sort.column.gt(value.value())
            };
            any = any.add(all.add(beyond));
        }
        any
    }

    fn encode(&self, key: &[Key]) -> String {
        let token = Token {
            l: self.list.to_owned(),
            k: key.iter().map(Key::to_text).collect(),
        };
        // Serializing two plain strings cannot fail; an empty token would
        // only end the listing early, never leak or loop.
        serde_json::to_vec(&token)
            .map(|json| URL_SAFE_NO_PAD.encode(json))
            .unwrap_or_default()
    }

    fn decode(&self, token: &str) -> Option<Vec<Key>> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(token).ok()?;
        let token: Token = serde_json::from_slice(&json).ok()?;
        if token.l != self.list || token.k.len() != self.columns.len() {
            return None;
        }
        self.columns
            .iter()
            .zip(&token.k)
            .map(|(sort, text)| Key::parse(sort.kind, text))
            .collect()
    }
}

/// `page_size` as a row count: 0 means the default, above the maximum is
/// refused.
pub fn page_size_of(page_size: u32) -> Result<u64> {
    match page_size {
        0 => Ok(u64::from(DEFAULT_PAGE_SIZE)),
        n if n <= MAX_PAGE_SIZE => Ok(u64::from(n)),
        _ => Err(Error::InvalidArgument(format!(
            "pageSize: at most {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}); \
             follow nextPageToken for more"
        ))),
    }
}

/// One requested page of a list.
#[derive(Debug)]
pub struct Page<C: 'static> {
    keyset: &'static Keyset<C>,
    size: u64,
    after: Option<Vec<Key>>,
}

impl<C: ColumnTrait + Copy> Page<C> {
    /// Orders `query` by the list's key, continues after the token and
    /// fetches one row more than the page, which tells whether more follow.
    pub fn apply<Q: QueryFilter + QueryOrder + QuerySelect>(&self, query: Q) -> Q {
        let mut query = self.keyset.order(query);
        if let Some(key) = &self.after {
            query = query.filter(self.keyset.after(key));
        }
        query.limit(self.size + 1)
    }

    /// Drops the look-ahead row; returns the page and the token of the
    /// next one (empty on the last page). `key` is the row's sort key.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> Vec<Key>) -> (Vec<T>, String) {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() <= size {
            return (rows, String::new());
        }
        rows.truncate(size);
        let next = rows
            .last()
            .map(|row| self.token(&key(row)))
            .unwrap_or_default();
        (rows, next)
    }

    fn token(&self, key: &[Key]) -> String {
        debug_assert!(
            key.iter()
                .map(Key::kind)
                .eq(self.keyset.columns.iter().map(|s| s.kind)),
            "{}: the row key does not match the keyset",
            self.keyset.list
        );
        self.keyset.encode(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_db::entities::projects;

    static PROJECTS: Keyset<projects::Column> = Keyset {
        list: "projects",
        columns: &[
            asc(projects::Column::Name, Kind::Text),
            asc(projects::Column::CreatedAt, Kind::Time),
            desc(projects::Column::Id, Kind::Id),
        ],
    };
    static OTHER: Keyset<projects::Column> = Keyset {
        list: "other",
        columns: PROJECTS.columns,
    };

    fn key() -> Vec<Key> {
        vec![
            Key::Text("Shop ünïcode \"quoted\"".into()),
            Key::Time(DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default()),
            Key::Id(Uuid::now_v7()),
        ]
    }

    #[test]
    fn tokens_round_trip_exactly_and_only_for_their_list() {
        let key = key();
        let token = PROJECTS.encode(&key);
        assert_eq!(PROJECTS.decode(&token), Some(key));
        assert_eq!(OTHER.decode(&token), None);
    }

    #[test]
    fn tampered_tokens_are_refused_naming_the_field() {
        let token = PROJECTS.encode(&key());
        let mut flipped = token.clone().into_bytes();
        flipped[3] ^= 0x01;
        let bad_id =
            URL_SAFE_NO_PAD.encode(r#"{"l":"projects","k":["a","2024-01-01T00:00:00Z","nope"]}"#);
        let short = URL_SAFE_NO_PAD.encode(r#"{"l":"projects","k":["a"]}"#);
        for bad in [
            String::from_utf8(flipped).unwrap_or_default(),
            format!("{token}!"),
            "not base64 at all".to_owned(),
            bad_id,
            short,
            "A".repeat(MAX_TOKEN_LEN + 4),
        ] {
            match PROJECTS.page(0, &bad) {
                Err(Error::InvalidArgument(m)) => assert!(m.starts_with("pageToken: "), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn page_sizes_default_to_50_and_stop_at_500() {
        assert_eq!(page_size_of(0).ok(), Some(50));
        assert_eq!(page_size_of(1).ok(), Some(1));
        assert_eq!(page_size_of(500).ok(), Some(500));
        match page_size_of(501) {
            Err(Error::InvalidArgument(m)) => assert!(m.starts_with("pageSize: "), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finish_cuts_the_look_ahead_row_and_points_past_the_last_kept() {
        let page = PROJECTS.page(2, "").unwrap_or_else(|e| panic!("{e}"));
        let rows = vec![key(), key(), key()];
        let (kept, next) = page.finish(rows.clone(), Clone::clone);
        assert_eq!(kept.len(), 2);
        assert_eq!(PROJECTS.decode(&next), Some(rows[1].clone()));
        let (kept, next) = page.finish(rows[..2].to_vec(), Clone::clone);
        assert_eq!((kept.len(), next.as_str()), (2, ""));
    }
}
