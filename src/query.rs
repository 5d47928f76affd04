//! The query string of `GET /v1/kv/...` (docs/api.md): a plain read, a
//! read that waits (`?wait=30s`), or a list (`?keys`, `?recurse`, with
//! `limit` and `after`). Unknown parameters are ignored, as etcd and Consul
//! do; a known one with a bad value is refused with a reason (400).

use std::time::Duration;

use axum::http::Uri;

use crate::config::parse_duration;
use crate::list::DEFAULT_LIST_LIMIT;
use crate::transport::list::MAX_LIST_LIMIT;
use crate::waiters::MAX_WAIT;

/// What a GET on `/v1/kv/...` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadQuery {
    /// `GET /v1/kv/{key}`: the linearizable read.
    Plain,
    /// `?wait=D`: wait up to the duration (capped at [`MAX_WAIT`]) for a value.
    Wait(Duration),
    /// `?keys` or `?recurse`: list the path as a prefix.
    List {
        /// Keys after this one (exclusive); `None` from the start.
        after: Option<String>,
        /// At most this many keys, 1..=[`MAX_LIST_LIMIT`].
        limit: usize,
        /// `?recurse`: with values.
        values: bool,
    },
}

/// Parses the query string of a GET on `uri`.
pub fn parse_read_query(uri: &Uri) -> Result<ReadQuery, String> {
    let pairs: Vec<(String, String)> = match uri.query() {
        None => Vec::new(),
        Some(_) => {
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                .map_err(|_| "the query string is malformed".to_string())?
                .0
        }
    };
    let param = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let list = param("keys").is_some() || param("recurse").is_some();
    let (limit, after, wait) = (param("limit"), param("after"), param("wait"));
    if list {
        if wait.is_some() {
            return Err("wait applies to one key, not to ?keys or ?recurse".into());
        }
        let limit = match limit {
            None => DEFAULT_LIST_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                .ok_or_else(|| {
                    format!("limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {text:?}")
                })?,
        };
        return Ok(ReadQuery::List {
            after: after.filter(|a| !a.is_empty()).map(str::to_owned),
            limit,
            values: param("recurse").is_some(),
        });
    }
    if limit.is_some() || after.is_some() {
        return Err("limit and after apply only to a list: add ?keys or ?recurse".into());
    }
    match wait {
        None => Ok(ReadQuery::Plain),
        Some(text) => parse_duration(text)
            .map(|d| ReadQuery::Wait(d.min(MAX_WAIT)))
            .map_err(|e| format!("wait: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: Option<&str>) -> Result<ReadQuery, String> {
        let uri = match query {
            Some(q) => format!("/v1/kv/k?{q}"),
            None => "/v1/kv/k".to_string(),
        };
        parse_read_query(&uri.parse().unwrap())
    }

    #[test]
    fn queries_parse_as_the_contract_says() {
        assert_eq!(parse(None), Ok(ReadQuery::Plain));
        assert_eq!(parse(Some("other=1")), Ok(ReadQuery::Plain));
        assert_eq!(
            parse(Some("wait=30s")),
            Ok(ReadQuery::Wait(Duration::from_secs(30)))
        );
        assert_eq!(
            parse(Some("wait=1h")).unwrap_err(),
            "wait: \"1h\" has unknown unit \"h\"; use ms, s or m"
        );
        assert_eq!(
            parse(Some("wait=60m")),
            Ok(ReadQuery::Wait(MAX_WAIT)),
            "capped at 10 minutes"
        );
        assert_eq!(
            parse(Some("keys")),
            Ok(ReadQuery::List {
                after: None,
                limit: 1000,
                values: false
            })
        );
        assert_eq!(
            parse(Some("recurse&limit=10000&after=app%2Fx%2By")),
            Ok(ReadQuery::List {
                after: Some("app/x+y".into()),
                limit: 10000,
                values: true
            })
        );
        for bad in [
            "keys&limit=0",
            "keys&limit=10001",
            "keys&limit=-1",
            "keys&limit=x",
        ] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(e.starts_with("limit must be"), "{bad}: {e}");
        }
        assert!(parse(Some("limit=5")).is_err());
        assert!(parse(Some("keys&wait=1s")).is_err());
    }
}
