//! Cursor pagination for every list: `?limit=&cursor=`. The cursor is the sort key of the last item
//! of the previous page, base64url-encoded JSON — opaque to clients, stable under inserts, and
//! cheap for PostgreSQL (`WHERE key > $cursor ORDER BY key LIMIT n + 1`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stayopen_shared::api::Page;

use crate::http::error::ApiFailure;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Checks `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and returns how many rows to
/// fetch: one more than the page, to know whether another page follows.
pub fn fetch_limit(limit: Option<u32>) -> Result<i64, ApiFailure> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiFailure::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(i64::from(limit) + 1)
}

/// Decodes a cursor this module produced.
pub fn decode_cursor<K: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<K>, ApiFailure> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiFailure::BadRequest("cursor is not one this API issued".into()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| ApiFailure::BadRequest("cursor is not one this API issued".into()))
}

fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

/// Cuts the extra row off `rows` (fetched with [`fetch_limit`]) and sets the next cursor from the
/// last row kept.
pub fn page<T, K: Serialize>(mut rows: Vec<T>, fetched: i64, key: impl Fn(&T) -> K) -> Page<T> {
    let page_size = usize::try_from(fetched - 1).unwrap_or(0);
    let next_cursor = if rows.len() > page_size {
        rows.truncate(page_size);
        rows.last().map(|last| encode_cursor(&key(last)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_has_a_cursor_that_decodes_to_its_last_key() {
        let fetched = fetch_limit(Some(2)).expect("limit");
        let page = page(vec![1, 2, 3], fetched, |n| *n);
        assert_eq!(page.items, vec![1, 2]);
        let key: Option<i32> = decode_cursor(page.next_cursor.as_deref()).expect("cursor");
        assert_eq!(key, Some(2));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let fetched = fetch_limit(Some(5)).expect("limit");
        assert_eq!(page(vec![1, 2], fetched, |n| *n).next_cursor, None);
    }

    #[test]
    fn limits_outside_the_range_and_forged_cursors_are_bad_requests() {
        assert!(fetch_limit(Some(0)).is_err());
        assert!(fetch_limit(Some(MAX_LIMIT + 1)).is_err());
        assert!(decode_cursor::<i32>(Some("%%%")).is_err());
        assert!(decode_cursor::<i32>(Some("bm90IGpzb24")).is_err());
    }
}
