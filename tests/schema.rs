//! The generated template schema: committed copy up to date, every example
//! template valid under a real validator (check-jsonschema), mistakes rejected.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn generated_schema() -> String {
    let out = Command::new(bin()).arg("schema").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Templates are JSON with comments; validators read plain JSON.
fn plain_json(template: &Path, out: &Path) {
    let text = std::fs::read_to_string(template).unwrap();
    let node = imgbuild::template::jsonc::parse(&text).unwrap();
    std::fs::write(out, serde_json::to_string_pretty(&node.to_json()).unwrap()).unwrap();
}

fn check_jsonschema(schema: &Path, documents: &[std::path::PathBuf]) -> std::process::Output {
    let validator = venv_python().parent().unwrap().join("check-jsonschema");
    Command::new(validator).arg("--schemafile").arg(schema).args(documents).output().unwrap()
}

#[test]
fn committed_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string(repo_root().join("docs/imgbuild.schema.json")).unwrap();
    assert_eq!(committed.trim(), generated_schema().trim(), "run `imgbuild schema > docs/imgbuild.schema.json`");
}

/// A change that makes a valid template invalid.
type Mutation = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn every_example_template_validates_and_mistakes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, generated_schema()).unwrap();
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("templates")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let out = dir.path().join(path.file_name().unwrap());
            plain_json(&path, &out);
            documents.push(out);
        }
    }
    documents.sort();
    assert!(documents.len() >= 2);
    let out = check_jsonschema(&schema, &documents);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let example = std::fs::read_to_string(&documents[0]).unwrap();
    let value: serde_json::Value = serde_json::from_str(&example).unwrap();
    let mistakes: Vec<(&str, Mutation)> = vec![
        ("unknown top-level field", Box::new(|v| v["nmae"] = "x".into())),
        ("unknown builder field", Box::new(|v| v["builder"]["memroy"] = "1G".into())),
        ("bad size", Box::new(|v| v["builder"]["memory"] = "1X".into())),
        ("bad accelerator", Box::new(|v| v["builder"]["accelerator"] = "fast".into())),
        ("missing builder", Box::new(|v| drop(v.as_object_mut().unwrap().remove("builder")))),
        (
            "unknown provisioner type",
            Box::new(|v| v["provisioners"] = serde_json::json!([{ "type": "shel", "inline": [] }])),
        ),
    ];
    for (case, mutate) in mistakes {
        let mut bad = value.clone();
        mutate(&mut bad);
        let doc = dir.path().join("bad.json");
        std::fs::write(&doc, bad.to_string()).unwrap();
        let out = check_jsonschema(&schema, &[doc]);
        assert!(!out.status.success(), "{case}: the schema accepted it");
    }
}
