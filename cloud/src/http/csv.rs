//! CSV exports of the lists (fleet, appliances, alerts, incidents, audit log) with the list's own
//! filters: `GET /api/v1/<list>.csv?<the list's query>`. Rows are streamed a page at a time with
//! the list's keyset cursor, so an export of 10,000 appliances holds 500 in memory, and each page
//! is read in its own short transaction under the caller's row-level security, like the list.
//!
//! Cells are quoted as RFC 4180 says, and a cell that a spreadsheet would run as a formula (one
//! starting with `=`, `+`, `-`, `@`, a tab or a carriage return: a serial or a note is the
//! caller's text, not ours) is prefixed with `'`, as OWASP's CSV-injection advice has it.

use std::future::Future;

use actix_web::HttpResponse;
use actix_web::http::header;
use actix_web::web::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::http::error::ApiFailure;

/// What is left to stream: the header and first page (until sent), the cursor of the next page,
/// and how many rows have gone out.
struct Export<C, F> {
    head: Option<String>,
    cursor: Option<C>,
    next_page: F,
    rows: usize,
}

/// Rows per page read from the database.
pub const EXPORT_PAGE: usize = 500;
/// Rows to ask the database for: one more than a page, to learn whether another follows.
pub const EXPORT_FETCH: i64 = EXPORT_PAGE as i64 + 1;

/// A page read with [`EXPORT_FETCH`]: its rows, and the cursor key of the next page (the last
/// row's) when the extra row showed that one follows.
pub fn rows_and_next<T, C>(mut items: Vec<T>, key: impl Fn(&T) -> C) -> (Vec<T>, Option<C>) {
    if items.len() > EXPORT_PAGE {
        items.truncate(EXPORT_PAGE);
        let next = items.last().map(key);
        (items, next)
    } else {
        (items, None)
    }
}

/// One CSV cell: quoted when it holds a comma, quote or line break; neutralised when a
/// spreadsheet would take it for a formula.
pub fn cell(value: &str) -> String {
    let neutralised = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if neutralised.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", neutralised.replace('"', "\"\""))
    } else {
        neutralised
    }
}

/// A time as people and spreadsheets read it: RFC 3339 in UTC, to the second.
pub fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// One line of cells, CRLF-terminated (RFC 4180).
pub fn line<S: AsRef<str>>(cells: &[S]) -> String {
    let mut out = cells
        .iter()
        .map(|c| cell(c.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    out.push_str("\r\n");
    out
}

/// Streams a CSV file named `name` (today's date is added): `header`, then `to_row` of every item
/// of every page `next_page` returns, from the first (`None`) until a page comes without a
/// cursor. The first page is read before answering, so a refused filter or a missing permission
/// is an ordinary error response; a failure later ends the stream abnormally (the client sees a
/// broken transfer, never a silently short file) and is logged.
pub async fn export<C, T, F, Fut>(
    name: &'static str,
    header: &'static [&'static str],
    mut next_page: F,
    to_row: fn(&T) -> Vec<String>,
) -> Result<HttpResponse, ApiFailure>
where
    C: 'static,
    T: 'static,
    F: FnMut(Option<C>) -> Fut + 'static,
    Fut: Future<Output = Result<(Vec<T>, Option<C>), ApiFailure>> + 'static,
{
    let (first, cursor) = next_page(None).await?;
    let mut head = line(header);
    for item in &first {
        head.push_str(&line(&to_row(item)));
    }
    let rows = first.len();
    if cursor.is_none() {
        tracing::info!(export = name, rows, "CSV export streamed");
    }
    let state = Export {
        head: Some(head),
        cursor,
        next_page,
        rows,
    };
    let body = futures_util::stream::unfold(state, move |mut state| async move {
        if let Some(head) = state.head.take() {
            return Some((Ok(Bytes::from(head)), state));
        }
        let after = state.cursor.take()?;
        match (state.next_page)(Some(after)).await {
            Ok((items, next)) => {
                state.rows += items.len();
                let mut chunk = String::new();
                for item in &items {
                    chunk.push_str(&line(&to_row(item)));
                }
                if next.is_none() {
                    tracing::info!(export = name, rows = state.rows, "CSV export streamed");
                }
                state.cursor = next;
                Some((Ok(Bytes::from(chunk)), state))
            }
            Err(e) => {
                tracing::warn!(export = name, rows = state.rows, error = %e, "CSV export broken off");
                Some((
                    Err(actix_web::error::ErrorInternalServerError(
                        "the export could not be completed",
                    )),
                    state,
                ))
            }
        }
    });
    let file = format!("{name}-{}.csv", Utc::now().format("%Y-%m-%d"));
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_with_commas_quotes_or_line_breaks_are_quoted_and_quotes_doubled() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(line(&["a", "b,c"]), "a,\"b,c\"\r\n");
    }

    #[test]
    fn a_cell_a_spreadsheet_would_run_as_a_formula_is_neutralised() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("SO-SIM-0001"), "SO-SIM-0001");
    }
}
