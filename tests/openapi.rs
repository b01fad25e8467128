//! The OpenAPI spec and the routes the local gateway serves (the template's
//! events) stay the same set.

use std::collections::BTreeSet;

use ledger_local::template::Template;

#[test]
fn openapi_and_template_routes_agree() {
    let root = ledger_local::project_root();
    let template = Template::load(&root.join("template.yaml")).unwrap();
    let served: BTreeSet<String> = template
        .routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.path != "$default")
        .map(|r| r.key())
        .collect();

    let spec: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("openapi.yaml")).unwrap()).unwrap();
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let methods = ["get", "put", "post", "delete", "patch"];
    let documented: BTreeSet<String> = spec["paths"]
        .as_mapping()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            let path = path.as_str().unwrap().to_string();
            ops.as_mapping()
                .unwrap()
                .keys()
                .filter_map(|m| m.as_str())
                .filter(|m| methods.contains(m))
                .map(move |m| format!("{} {path}", m.to_uppercase()))
                .collect::<Vec<_>>()
        })
        .collect();

    assert!(!served.is_empty());
    // Every operation says what API Gateway's authorizer answers without a
    // valid token, and every one that takes a body the 415 for a body not
    // sent as JSON.
    for (path, ops) in spec["paths"].as_mapping().unwrap() {
        for (method, op) in ops.as_mapping().unwrap() {
            if !methods.contains(&method.as_str().unwrap_or_default()) {
                continue;
            }
            let responses = &op["responses"];
            let what = format!("{method:?} {path:?}");
            assert!(responses.get("401").is_some(), "{what} documents no 401");
            if op.get("requestBody").is_some() {
                assert!(responses.get("415").is_some(), "{what} documents no 415");
            }
        }
    }
    assert_eq!(
        documented, served,
        "openapi.yaml and template.yaml must describe the same routes"
    );
}
