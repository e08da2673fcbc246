//! `--http-route` patterns: what a pattern may be, and the `HTTP_ROUTES` entries (LPM trie
//! keys) that make the kernel match it (`collector-ebpf/src/http.rs`, `route_of`).
use collector_common::http::ROUTE_BYTES;

/// `HTTP_ROUTES`' keys: the bytes a path must start with (the data of an LPM trie key, whose
/// prefix length is in bits). A pattern ending in `*` is its bytes before the `*`; any other
/// is matched whole, as the pattern followed by the space that ends a request target or by
/// the `?` of a query: one entry each.
pub fn prefixes(pattern: &str) -> Vec<Vec<u8>> {
    match pattern.strip_suffix('*') {
        Some(prefix) => vec![prefix.as_bytes().to_vec()],
        None => [b' ', b'?']
            .iter()
            .map(|&end| [pattern.as_bytes(), &[end]].concat())
            .collect(),
    }
}

/// The `http_route` label of the kernel's route number `route` (1-based into `routes`, the
/// `--http-route`s in order): `other` for a path that matched none, `None` when no route was
/// given (requests then have no route at all).
pub fn label(routes: &[String], route: u16) -> Option<&str> {
    if routes.is_empty() {
        return None;
    }
    let matched = usize::from(route).checked_sub(1).and_then(|i| routes.get(i));
    Some(matched.map_or("other", String::as_str))
}

/// Checks a `--http-route` pattern: a path from `/`, a `*` at the end only, no space, `?`
/// or `#`, at most `ROUTE_BYTES - 1` bytes.
pub fn check(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err(format!("{pattern:?}: a route is a path, starting with /"));
    }
    if pattern.trim_end_matches('*').contains('*') || pattern.ends_with("**") {
        return Err(format!(
            "{pattern:?}: `*` may only end a route (it matches the rest of the path), e.g. /api/users/*"
        ));
    }
    if let Some(c) = pattern.chars().find(|c| matches!(c, ' ' | '?' | '#') || c.is_control()) {
        return Err(format!(
            "{pattern:?}: a route has no {c:?}: it is matched against the path alone"
        ));
    }
    if pattern.len() >= ROUTE_BYTES {
        return Err(format!(
            "{pattern:?}: a route is at most {} bytes (the kernel compares the first {ROUTE_BYTES} of a path)",
            ROUTE_BYTES - 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_a_prefix_when_it_ends_in_a_star_and_else_the_whole_path() {
        assert_eq!(prefixes("/api/users/*"), [b"/api/users/".to_vec()]);
        assert_eq!(prefixes("/health"), [b"/health ".to_vec(), b"/health?".to_vec()]);
        assert_eq!(prefixes("/*"), [b"/".to_vec()]);
        for good in ["/", "/*", "/api/users/*", "/a/b.html"] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("api/*", "starting with /"),
            ("/api/*/orders", "may only end"),
            ("/api/**", "may only end"),
            ("/a b", "no ' '"),
            ("/a?x=1", "no '?'"),
            (&format!("/{}", "a".repeat(ROUTE_BYTES - 1)), "at most 63 bytes"),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(check(&format!("/{}", "a".repeat(ROUTE_BYTES - 2))), Ok(()));
    }
}
