//! The OpenAPI document is part of the API's contract: it is generated from the routes that serve
//! and kept in `docs/openapi.json`, so a change to it shows in review as a diff of that file.
//! After an intended change, regenerate it with
//! `STAYOPEN_UPDATE_OPENAPI=1 cargo test -p stayopen-cloud --test openapi`.

use std::path::Path;

#[test]
fn the_openapi_document_matches_the_one_in_docs() {
    let generated = stayopen_cloud::http::openapi_document()
        .to_pretty_json()
        .expect("serialise the OpenAPI document");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var_os("STAYOPEN_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("docs/openapi.json");
    if generated != committed {
        let first_difference = generated
            .lines()
            .zip(committed.lines())
            .position(|(g, c)| g != c)
            .unwrap_or_else(|| generated.lines().count().min(committed.lines().count()));
        panic!(
            "the OpenAPI document differs from docs/openapi.json from line {} on:\n  generated: {:?}\n  committed: {:?}\n\
             If the change is intended, regenerate the file (see this test's module doc).",
            first_difference + 1,
            generated.lines().nth(first_difference),
            committed.lines().nth(first_difference),
        );
    }
}
