//! Client-side routes: the path in the address bar ↔ the page shown. The server answers
//! every non-API path with `index.html` (functions' SPA fallback), so each route is also a
//! shareable link.

/// A page of the storefront.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/`: the catalogue.
    Catalogue,
    /// `/models/{nft}`: a model, its lineage and quote.
    Model(String),
    /// `/account`: the connected wallet's balances and jobs.
    Account,
    /// `/publish`: an owner publishes a model (its files, price and reward scheme).
    Publish,
    /// `/jobs?consumer=0x…` (`None`: the connected wallet's, or ask for an address).
    Jobs(Option<String>),
    /// `/jobs/{id}`: a job's status and live progress.
    Job(String),
    /// `/jobs/{id}/receipt`: the receipt, verified in the browser.
    Receipt(String),
    NotFound(String),
}

/// One path segment or query value as typed by a user: ids and addresses only, so anything
/// outside `[A-Za-z0-9_-]` (and the `0x` of addresses) is refused rather than escaped.
fn clean(s: &str) -> Option<String> {
    (!s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| s.to_string())
}

impl Route {
    /// Parses `path` (and `query`, without the `?`) from `window.location`.
    pub fn parse(path: &str, query: &str) -> Route {
        let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let found = match segs.as_slice() {
            [] => Some(Route::Catalogue),
            ["account"] => Some(Route::Account),
            ["publish"] => Some(Route::Publish),
            ["models", nft] => clean(nft).map(Route::Model),
            ["jobs"] => Some(Route::Jobs(
                query.split('&').find_map(|kv| kv.strip_prefix("consumer=")).and_then(clean),
            )),
            ["jobs", id] => clean(id).map(Route::Job),
            ["jobs", id, "receipt"] => clean(id).map(Route::Receipt),
            _ => None,
        };
        found.unwrap_or_else(|| Route::NotFound(path.to_string()))
    }

    /// The page's title (`document.title`): what it is, then the site, so that tabs, history
    /// and screen readers tell pages apart.
    pub fn title(&self) -> String {
        let what = match self {
            Route::Catalogue => "Models".to_string(),
            Route::Account => "My account".into(),
            Route::Publish => "Publish a model".into(),
            Route::Model(nft) => format!("Model {}", crate::format::short(nft)),
            Route::Jobs(None) => "Jobs".into(),
            Route::Jobs(Some(c)) => format!("Jobs of {}", crate::format::short(c)),
            Route::Job(id) => format!("Job {id}"),
            Route::Receipt(id) => format!("Receipt of job {id}"),
            Route::NotFound(_) => "Not found".into(),
        };
        format!("{what} · Posthuman")
    }

    /// The path (and query) that shows this page.
    pub fn to_path(&self) -> String {
        match self {
            Route::Catalogue => "/".into(),
            Route::Account => "/account".into(),
            Route::Publish => "/publish".into(),
            Route::Model(nft) => format!("/models/{nft}"),
            Route::Jobs(None) => "/jobs".into(),
            Route::Jobs(Some(c)) => format!("/jobs?consumer={c}"),
            Route::Job(id) => format!("/jobs/{id}"),
            Route::Receipt(id) => format!("/jobs/{id}/receipt"),
            Route::NotFound(p) => p.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_round_trips_through_its_path() {
        let routes = [
            Route::Catalogue,
            Route::Account,
            Route::Publish,
            Route::Model("0xAbC123".into()),
            Route::Jobs(None),
            Route::Jobs(Some("0xdef".into())),
            Route::Job("job-1".into()),
            Route::Receipt("job-1".into()),
        ];
        for r in routes {
            let p = r.to_path();
            let (path, query) = p.split_once('?').unwrap_or((&p, ""));
            assert_eq!(Route::parse(path, query), r, "{p}");
        }
    }

    #[test]
    fn every_page_has_its_own_title() {
        assert_eq!(Route::Catalogue.title(), "Models · Posthuman");
        assert_eq!(Route::Receipt("j-1".into()).title(), "Receipt of job j-1 · Posthuman");
        let routes = [Route::Catalogue, Route::Account, Route::Jobs(None), Route::Job("j".into())];
        let titles: std::collections::BTreeSet<String> = routes.iter().map(Route::title).collect();
        assert_eq!(titles.len(), routes.len());
    }

    #[test]
    fn hostile_or_unknown_paths_are_not_found() {
        for p in ["/jobs/a%2Fb/receipt", "/models/<script>", "/jobs/x/y", "/admin", "/models/"] {
            assert!(matches!(Route::parse(p, ""), Route::NotFound(_) | Route::Jobs(_)), "{p}");
        }
        assert_eq!(Route::parse("/models/", ""), Route::NotFound("/models/".into()));
        assert_eq!(Route::parse("/jobs", "consumer=<x>"), Route::Jobs(None));
        assert_eq!(Route::parse("/jobs/", "x=1&consumer=0xab"), Route::Jobs(Some("0xab".into())));
    }
}
