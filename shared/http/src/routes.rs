//! The API's routes, for the `$default` route's answer: API Gateway sends
//! there whatever no route matched, a known path with another method
//! included, and only a list of the routes tells a 405 from a 404. It is
//! template.yaml's events written out (tests/security.rs holds the two
//! equal): the function reads no template at run time.

/// Every route key of the HTTP API but `$default`.
pub const ROUTES: [&str; 38] = [
    "GET /v1/catalog",
    "PUT /v1/orgs/{org}/subscription",
    "DELETE /v1/orgs/{org}/subscription",
    "POST /v1/orgs/{org}/renewals",
    "POST /v1/orgs/{org}/spend",
    "POST /v1/orgs/{org}/contacts",
    "POST /v1/orgs/{org}/contacts/removals",
    "POST /v1/orgs/{org}/reservations",
    "POST /v1/orgs/{org}/reservations/{transition}",
    "POST /v1/orgs/{org}/purchases",
    "POST /v1/orgs/{org}/reversals",
    "GET /v1/orgs/{org}/members",
    "PUT /v1/orgs/{org}/members/{user}",
    "DELETE /v1/orgs/{org}/members/{user}",
    "PUT /v1/orgs/{org}/members/{user}/limits",
    "PUT /v1/orgs/{org}/campaigns/{campaign}/budget",
    "DELETE /v1/orgs/{org}/campaigns/{campaign}/budget",
    "GET /v1/orgs/{org}/alerts",
    "PUT /v1/orgs/{org}/alerts/{alert}",
    "DELETE /v1/orgs/{org}/alerts/{alert}",
    "GET /v1/orgs/{org}/notifications",
    "POST /v1/orgs/{org}/notifications/{notification}/read",
    "POST /v1/orgs/{org}/outcomes",
    "PUT /v1/orgs/{org}/top-up",
    "DELETE /v1/orgs/{org}/top-up",
    "PUT /v1/orgs/{org}/overdraft",
    "GET /v1/orgs/{org}/approvals",
    "PUT /v1/orgs/{org}/approvals/threshold",
    "DELETE /v1/orgs/{org}/approvals/threshold",
    "POST /v1/orgs/{org}/approvals/{approval}/approve",
    "POST /v1/orgs/{org}/approvals/{approval}/deny",
    "POST /v1/orgs/{org}/results/resume",
    "GET /v1/orgs/{org}/balance",
    "GET /v1/orgs/{org}/ledger",
    "GET /v1/orgs/{org}/usage",
    "GET /v1/orgs/{org}/roi",
    "POST /v1/orgs/{org}/exports",
    "GET /v1/orgs/{org}/exports/{export}",
];

/// The path parameters `path` gives the route path `template`
/// (`/v1/orgs/{org}/spend`), by name and as sent (still percent-encoded),
/// or none if it does not match: a parameter stands for one segment, never
/// an empty one. The local gateway routes by it too.
pub fn path_parameters<'t, 'p>(template: &'t str, path: &'p str) -> Option<Vec<(&'t str, &'p str)>> {
    let have: Vec<&str> = template.trim_matches('/').split('/').collect();
    let want: Vec<&str> = path.trim_matches('/').split('/').collect();
    if have.len() != want.len() {
        return None;
    }
    let mut params = Vec::new();
    for (h, w) in have.into_iter().zip(want) {
        match h.strip_prefix('{').and_then(|h| h.strip_suffix('}')) {
            Some(name) if !w.is_empty() => params.push((name, w)),
            Some(_) => return None,
            None if h == w => {}
            None => return None,
        }
    }
    Some(params)
}

/// The methods the API takes on `path` (as requested, parameters filled
/// in), in `ROUTES` order; none for a path no route has.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = Vec::new();
    for (method, template) in ROUTES.iter().filter_map(|r| r.split_once(' ')) {
        if path_parameters(template, path).is_some() && !methods.contains(&method) {
            methods.push(method);
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_path_has_the_methods_of_its_routes() {
        assert_eq!(allowed_methods("/v1/orgs/acme/spend"), vec!["POST"]);
        assert_eq!(allowed_methods("/v1/orgs/acme/members/bob"), vec!["PUT", "DELETE"]);
        assert_eq!(
            allowed_methods("/v1/orgs/acme/approvals/threshold"),
            vec!["PUT", "DELETE"]
        );
        assert_eq!(allowed_methods("/v1/catalog"), vec!["GET"]);
        assert!(allowed_methods("/v1/orgs/acme/teleport").is_empty());
        assert!(allowed_methods("/v1/orgs//spend").is_empty());
        assert!(allowed_methods("/v1/orgs/acme/spend/more").is_empty());
    }

    #[test]
    fn path_parameters_are_named_segments_as_sent() {
        assert_eq!(
            path_parameters("/v1/orgs/{org}/members/{user}", "/v1/orgs/acme/members/b%40x"),
            Some(vec![("org", "acme"), ("user", "b%40x")])
        );
        assert_eq!(path_parameters("/v1/orgs/{org}/spend", "/v1/orgs//spend"), None);
        assert_eq!(path_parameters("/v1/orgs/{org}/spend", "/v1/orgs/acme/ledger"), None);
    }
}
