//! The query string of `GET /v1/revocations`: a pure parser, so the HTTP
//! handler stays thin and the fuzz target exercises exactly this code.

use super::MAX_FEED_PAGE;

/// Longest query string accepted; a valid one is under 60 bytes.
pub const MAX_QUERY_BYTES: usize = 256;

/// Where a feed page starts and how long it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedQuery {
    /// The cursor: entries after it are returned (0 = from the start).
    pub since: i64,
    /// Most entries on the page, from 1 to [`MAX_FEED_PAGE`].
    pub limit: i64,
}

/// Why a feed query was refused; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

impl FeedQuery {
    /// Parses `since=CURSOR&limit=N`. Unknown, repeated or non-numeric
    /// parameters are refused rather than ignored: a client that misspells
    /// `since` would otherwise silently re-read the whole feed.
    pub fn parse(query: &str) -> Result<FeedQuery, QueryError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(QueryError(format!(
                "the query string is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        let mut since = None;
        let mut limit = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "since" => &mut since,
                "limit" => &mut limit,
                other => {
                    return Err(QueryError(format!(
                        "unknown parameter {}; use since and limit",
                        crate::tokens::form::printable(other)
                    )));
                }
            };
            if slot.is_some() {
                return Err(QueryError(format!("parameter {name} is repeated")));
            }
            // Digits only: `+5`, ` 5` and `5.0` are not cursors we issued.
            let parsed = (!value.is_empty()
                && value.len() <= 18
                && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<i64>().ok())
            .flatten();
            *slot = Some(parsed.ok_or_else(|| {
                QueryError(format!("{name} must be a non-negative whole number"))
            })?);
        }
        let limit = match limit {
            None => MAX_FEED_PAGE,
            Some(n) if (1..=MAX_FEED_PAGE).contains(&n) => n,
            Some(_) => {
                return Err(QueryError(format!(
                    "limit must be from 1 to {MAX_FEED_PAGE}"
                )));
            }
        };
        Ok(FeedQuery {
            since: since.unwrap_or(0),
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        FeedQuery::parse(q).unwrap_err().0
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            FeedQuery::parse("").unwrap(),
            FeedQuery {
                since: 0,
                limit: MAX_FEED_PAGE
            }
        );
        assert_eq!(
            FeedQuery::parse("since=42&limit=7").unwrap(),
            FeedQuery {
                since: 42,
                limit: 7
            }
        );
        assert_eq!(FeedQuery::parse("limit=1000").unwrap().limit, 1000);
    }

    #[test]
    fn refuses_what_is_not_a_cursor() {
        for q in [
            "since=-1",
            "since=+5",
            "since=%205",
            "since=5.0",
            "since=",
            "since=99999999999999999999",
            "since=%FF",
            "limit=0x10",
        ] {
            assert!(err(q).contains("non-negative whole number"), "{q}");
        }
        assert!(err("limit=0").contains("from 1 to"));
        assert!(err("limit=1001").contains("from 1 to"));
    }

    #[test]
    fn refuses_unknown_and_repeated_parameters() {
        assert_eq!(
            err("sinse=1"),
            "unknown parameter sinse; use since and limit"
        );
        assert_eq!(err("since=1&since=2"), "parameter since is repeated");
        // The name is echoed only in a printable, bounded form.
        let e = err("%0A%1B[31mx=1");
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
        assert!(err(&"x".repeat(MAX_QUERY_BYTES + 1)).contains("longer than"));
    }
}
