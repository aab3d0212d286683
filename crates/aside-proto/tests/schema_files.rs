//! The JSON Schemas in `docs/schema/` are the documented contract of `--json` output: this test
//! fails when the wire types change without them. Regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p aside-proto --test schema_files`.

use std::path::PathBuf;

#[test]
fn documented_schemas_match_the_wire_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in aside_proto::schemas() {
        let path = dir.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (regenerate with UPDATE_SCHEMAS=1 cargo test -p aside-proto --test schema_files): {stale:?}"
    );
}
