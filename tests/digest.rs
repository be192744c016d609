//! The input digest (`imgbuild::digest`): the same inputs give the same
//! digest in any checkout, any directory and any run; any changed byte of
//! any input gives another one; build id, `auto` and `--set-version` do not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use imgbuild::digest::{InputDigest, input_digest};
use imgbuild::source::Fetcher;
use imgbuild::template::{self, LoadOptions, VarInputs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEMPLATE: &str = r#"// digest test template
{
  "name": "digest-web",
  "version": "auto",
  "variables": {
    "role": { "default": "web" },
    "token": { "default": "not-a-real-secret-1", "sensitive": true }
  },
  "source": {
    "type": "cloud-image",
    "url": "../base/base.qcow2",
    "checksum": "file:../base/SHA256SUMS"
  },
  "builder": { "type": "qemu", "memory": "512M", "ssh": { "username": "root" } },
  "provisioners": [
    { "type": "shell", "inline": [
        "echo '{{ build.name }} {{ build.version }} {{ build.id }}' > /etc/motd",
        "echo {{ var.role }} {{ var.token }}",
        "echo built from {{ template_dir }}/files"
    ] },
    { "type": "shell", "script": "files/setup.sh", "env": { "ROLE": "{{ var.role }}" } },
    { "type": "shell", "scripts": ["../provisioners/common.sh"] },
    { "type": "file", "source": "files/site", "destination": "/srv/site" },
    { "type": "file", "source": "/etc/hostname", "destination": "out/hostname", "direction": "download" },
    { "type": "shell-local", "script": "{{ template_dir }}/files/local.sh" }
  ],
  "export": { "publish": [ { "type": "local", "path": "../artifacts" } ] }
}
"#;

const BASE_HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// A checkout: `templates/web.json` and everything it reads.
fn write_tree(root: &Path) {
    let files: [(&str, &str); 8] = [
        ("templates/web.json", TEMPLATE),
        ("templates/files/setup.sh", "#!/bin/sh\necho setup \"$ROLE\"\n"),
        ("templates/files/local.sh", "#!/bin/sh\nuname -a\n"),
        ("templates/files/site/index.html", "<h1>hello</h1>\n"),
        ("templates/files/site/conf.d/site.conf", "listen = 8080\n"),
        ("provisioners/common.sh", "#!/bin/sh\necho common\n"),
        ("vars/prod.json", "{ \"role\": \"db\" }\n"),
        ("base/SHA256SUMS", ""),
    ];
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    std::fs::write(root.join("base/SHA256SUMS"), format!("{BASE_HEX}  base.qcow2\n")).unwrap();
    set_exec(&root.join("templates/files/setup.sh"), true);
}

fn set_exec(path: &Path, exec: bool) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 })).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn fetcher(cache: &Path) -> Fetcher {
    Fetcher::new(cache.to_path_buf(), Arc::new(|_| {})).unwrap()
}

struct Opts {
    var_files: Vec<PathBuf>,
    cli: Vec<(String, String)>,
    build_id: String,
    version: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { var_files: Vec::new(), cli: Vec::new(), build_id: "20260101T000000Z-abcdef".into(), version: None }
    }
}

async fn digest_with(template: &Path, opts: Opts) -> InputDigest {
    let options = LoadOptions {
        vars: VarInputs { cli: opts.cli, files: opts.var_files.clone(), use_env: false },
        build_id: opts.build_id,
        version_override: opts.version,
        ssh_public_key: String::new(),
    };
    let loaded = template::load(template, &options).unwrap();
    let cache = tempfile::tempdir().unwrap();
    input_digest(&loaded, &opts.var_files, &fetcher(cache.path())).await.unwrap()
}

async fn digest(root: &Path) -> InputDigest {
    digest_with(&root.join("templates/web.json"), Opts::default()).await
}

#[tokio::test]
async fn same_inputs_give_the_same_digest_in_any_checkout_and_run() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_tree(a.path());
    let elsewhere = b.path().join("some/other/checkout");
    std::fs::create_dir_all(&elsewhere).unwrap();
    copy_tree(a.path(), &elsewhere);
    set_exec(&elsewhere.join("templates/files/setup.sh"), true);

    let first = digest(a.path()).await;
    assert!(first.digest.starts_with("sha256:") && first.digest.len() == 71, "{first:?}");
    assert_eq!(digest(a.path()).await, first, "a second run");
    let copied = digest(&elsewhere).await;
    assert_eq!(copied, first, "a checkout in another directory");

    let labels: Vec<&str> = first.parts.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "template",
            "source",
            "provisioners[1].script files/setup.sh",
            "provisioners[2].script ../provisioners/common.sh",
            "provisioners[3].source files/site",
            "provisioners[5].script {{ template_dir }}/files/local.sh",
        ],
        "the download's guest path is not a host input"
    );
    assert_eq!(first.parts[1].1, format!("sha256:{BASE_HEX}"), "the digest from the checksum list");
    let text = first.render_text();
    for dir in [a.path(), b.path()] {
        assert!(!text.contains(&*dir.to_string_lossy()), "{text}");
    }
    let json = first.to_json();
    assert_eq!(json["digest"], first.digest.as_str());
    assert_eq!(json["parts"]["source"], format!("sha256:{BASE_HEX}"));
}

#[tokio::test]
async fn build_id_auto_version_and_set_version_do_not_change_it() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path());
    let template = dir.path().join("templates/web.json");
    let base = digest(dir.path()).await;
    let other_id = Opts { build_id: "20270707T070707Z-123456".into(), ..Opts::default() };
    assert_eq!(digest_with(&template, other_id).await, base, "build id");
    // What `build` does with `auto`: reload with the next free version.
    let resolved = Opts { version: Some("2026.11.27.3".into()), ..Opts::default() };
    assert_eq!(digest_with(&template, resolved).await, base, "auto resolved to a date version");
    let set = Opts { version: Some("9.9.9".into()), ..Opts::default() };
    assert_eq!(digest_with(&template, set).await, base, "--set-version");

    // A version written in the template is part of the template.
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, text.replace("\"auto\"", "\"1.0.0\"")).unwrap();
    let v1 = digest(dir.path()).await;
    std::fs::write(&template, text.replace("\"auto\"", "\"1.0.1\"")).unwrap();
    let v2 = digest(dir.path()).await;
    assert_ne!(v1.digest, base.digest);
    assert_ne!(v1.digest, v2.digest);
}

/// Changes one input, checks the digest and the part that changed, then restores it.
async fn assert_change_detected(
    root: &Path,
    base: &InputDigest,
    file: &str,
    edit: impl FnOnce(&str) -> String,
    part: &str,
) {
    let path = root.join(file);
    let before = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&before)).unwrap();
    let after = digest(root).await;
    assert_ne!(after.digest, base.digest, "editing {file} must change the digest");
    let changed = imgbuild::digest::changed_parts(&base.parts, &after.parts);
    assert_eq!(changed, [part], "editing {file}");
    std::fs::write(&path, before).unwrap();
    assert_eq!(&digest(root).await, base, "restoring {file}");
}

#[tokio::test]
async fn any_changed_byte_of_any_input_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tree(root);
    let base = digest(root).await;
    let flip_last = |s: &str| format!("{}X\n", s.trim_end());
    assert_change_detected(root, &base, "templates/web.json", |s| s.replace("512M", "513M"), "template").await;
    assert_change_detected(root, &base, "templates/web.json", |s| s.replace("\"web\"", "\"wab\""), "template").await;
    assert_change_detected(root, &base, "templates/files/setup.sh", flip_last, "provisioners[1].script files/setup.sh")
        .await;
    assert_change_detected(
        root,
        &base,
        "provisioners/common.sh",
        |s| s.replacen('c', "C", 1),
        "provisioners[2].script ../provisioners/common.sh",
    )
    .await;
    assert_change_detected(
        root,
        &base,
        "templates/files/site/conf.d/site.conf",
        |s| s.replace("8080", "8081"),
        "provisioners[3].source files/site",
    )
    .await;
    assert_change_detected(root, &base, "base/SHA256SUMS", |s| s.replacen('1', "2", 1), "source").await;

    // A new file in an uploaded directory, and the executable bit.
    let extra = root.join("templates/files/site/new.txt");
    std::fs::write(&extra, "").unwrap();
    assert_ne!(digest(root).await.digest, base.digest, "a new (empty) file in a directory");
    std::fs::remove_file(&extra).unwrap();
    set_exec(&root.join("templates/files/setup.sh"), false);
    let no_exec = digest(root).await;
    set_exec(&root.join("templates/files/setup.sh"), true);
    assert_eq!(digest(root).await, base);
    // A single file's executable bit is not hashed, only a directory's entries'.
    assert_eq!(no_exec, base);
    set_exec(&root.join("templates/files/site/index.html"), true);
    assert_ne!(digest(root).await.digest, base.digest, "the executable bit of an uploaded file");
    set_exec(&root.join("templates/files/site/index.html"), false);
    assert_eq!(digest(root).await, base);
}

#[tokio::test]
async fn var_files_are_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tree(root);
    let template = root.join("templates/web.json");
    let var_file = root.join("vars/prod.json");
    let with = || Opts { var_files: vec![var_file.clone()], ..Opts::default() };
    let base = digest_with(&template, with()).await;
    assert!(base.parts.iter().any(|(l, _)| l == "var-file[0] prod.json"), "{:?}", base.parts);
    assert_ne!(base.digest, digest(root).await.digest, "with and without the var-file");
    // A byte that changes no value (whitespace) still counts: the file is an input.
    std::fs::write(&var_file, "{ \"role\": \"db\" } \n").unwrap();
    let spaced = digest_with(&template, with()).await;
    assert_ne!(spaced.digest, base.digest);
    assert_eq!(imgbuild::digest::changed_parts(&base.parts, &spaced.parts), ["var-file[0] prod.json"]);
    std::fs::write(&var_file, "{ \"role\": \"dc\" }\n").unwrap();
    let changed = digest_with(&template, with()).await;
    assert_eq!(
        imgbuild::digest::changed_parts(&base.parts, &changed.parts),
        ["template", "var-file[0] prod.json"],
        "the value is interpolated into the template too"
    );
    // The var-file's directory does not matter, only its bytes.
    let moved = tempfile::tempdir().unwrap();
    let copy = moved.path().join("prod.json");
    std::fs::write(&var_file, "{ \"role\": \"db\" }\n").unwrap();
    std::fs::copy(&var_file, &copy).unwrap();
    assert_eq!(digest_with(&template, Opts { var_files: vec![copy], ..Opts::default() }).await, base);
}

#[tokio::test]
async fn a_changed_secret_alone_does_not_change_it() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path());
    let template = dir.path().join("templates/web.json");
    let base = digest(dir.path()).await;
    let other = Opts { cli: vec![("token".into(), "another-secret-value-2".into())], ..Opts::default() };
    assert_eq!(digest_with(&template, other).await, base, "secrets are masked (documented)");
    let role = Opts { cli: vec![("role".into(), "cache".into())], ..Opts::default() };
    assert_ne!(digest_with(&template, role).await.digest, base.digest, "a plain variable counts where it is used");
}

#[tokio::test]
async fn written_digests_and_none_sources() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path());
    let template = dir.path().join("templates/web.json");
    let text = std::fs::read_to_string(&template).unwrap();
    let with_checksum = |c: &str| text.replace("file:../base/SHA256SUMS", c);

    std::fs::write(&template, with_checksum(&format!("sha256:{BASE_HEX}"))).unwrap();
    let written = digest(dir.path()).await;
    assert_eq!(written.parts[1].1, format!("sha256:{BASE_HEX}"));
    let from_list = {
        std::fs::write(&template, &text).unwrap();
        digest(dir.path()).await
    };
    assert_eq!(written, from_list, "a list giving the same digest is the same input");
    std::fs::write(&template, with_checksum(&format!("sha256:{}", "2".repeat(64)))).unwrap();
    assert_ne!(digest(dir.path()).await.digest, written.digest);

    std::fs::write(&template, with_checksum("none")).unwrap();
    let none = digest(dir.path()).await;
    std::fs::write(&template, with_checksum("none").replace("../base/base.qcow2", "../base/other.qcow2")).unwrap();
    assert_ne!(digest(dir.path()).await.digest, none.digest, "with `none` the URL stands for the content");
    // The URL moves with the checkout: still the same digest elsewhere.
    let b = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), b.path());
    std::fs::write(b.path().join("templates/web.json"), with_checksum("none")).unwrap();
    assert_eq!(digest(b.path()).await, none);
}

/// A tiny HTTP server whose one document can be replaced.
async fn serve(body: Arc<Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_republished_upstream_image_changes_it() {
    let body = Arc::new(Mutex::new(format!("{BASE_HEX}  debian-12-genericcloud-amd64.qcow2\n")));
    let url = serve(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path());
    let template = dir.path().join("templates/web.json");
    let text = std::fs::read_to_string(&template).unwrap();
    let text = text
        .replace("../base/base.qcow2", &format!("{url}/images/debian-12-genericcloud-amd64.qcow2"))
        .replace("file:../base/SHA256SUMS", &format!("file:{url}/images/SHA256SUMS"));
    std::fs::write(&template, text).unwrap();

    let first = digest(dir.path()).await;
    assert_eq!(first.parts[1], ("source".to_string(), format!("sha256:{BASE_HEX}")));
    assert_eq!(digest(dir.path()).await, first, "the list is read again, same answer");
    *body.lock().unwrap() =
        format!("{}  debian-12-genericcloud-amd64.qcow2\n{BASE_HEX}  other.qcow2\n", "3".repeat(64));
    let patched = digest(dir.path()).await;
    assert_ne!(patched.digest, first.digest);
    assert_eq!(imgbuild::digest::changed_parts(&first.parts, &patched.parts), ["source"]);
}

#[tokio::test]
async fn a_missing_script_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path());
    std::fs::remove_file(dir.path().join("templates/files/setup.sh")).unwrap();
    let loaded = template::load(&dir.path().join("templates/web.json"), &LoadOptions::default()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = input_digest(&loaded, &[], &fetcher(cache.path())).await.unwrap_err();
    assert!(err.to_string().contains("setup.sh"), "{err}");
}

#[tokio::test]
async fn installer_inputs_count_and_the_per_build_key_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tree(root);
    let template = root.join("templates/installer.json");
    let text = TEMPLATE
        .replace(r#""ssh": { "username": "root" } }"#, r#""http_directory": "http", "cloud_init": false }"#)
        .replace(
            "echo {{ var.role }} {{ var.token }}",
            "echo '{{ build.ssh_public_key }}' >> /root/.ssh/authorized_keys",
        );
    assert!(text.contains("http_directory") && text.contains("ssh_public_key"), "{text}");
    std::fs::write(&template, text).unwrap();
    std::fs::create_dir_all(root.join("templates/http")).unwrap();
    std::fs::write(root.join("templates/http/preseed.cfg"), "d-i debian-installer/locale string en_US\n").unwrap();
    let with_key = |key: &str| {
        let options = LoadOptions {
            vars: VarInputs::default(),
            build_id: "b".into(),
            version_override: None,
            ssh_public_key: key.to_string(),
        };
        template::load(&template, &options).unwrap()
    };
    let cache = tempfile::tempdir().unwrap();
    let fetcher = fetcher(cache.path());
    let one = input_digest(&with_key("ssh-ed25519 AAAAone build-1"), &[], &fetcher).await.unwrap();
    let two = input_digest(&with_key("ssh-ed25519 AAAAtwo build-2"), &[], &fetcher).await.unwrap();
    assert_eq!(one, two, "a new key every build");
    assert_eq!(one.parts[2].0, "builder.http_directory http");
    std::fs::write(root.join("templates/http/preseed.cfg"), "d-i debian-installer/locale string de_DE\n").unwrap();
    let edited = input_digest(&with_key("ssh-ed25519 AAAAone build-3"), &[], &fetcher).await.unwrap();
    assert_eq!(imgbuild::digest::changed_parts(&one.parts, &edited.parts), ["builder.http_directory http"]);
}

#[test]
fn manifest_field() {
    let hex = "ab".repeat(32);
    let manifest = serde_json::json!({ "name": "x", "input_digest": format!("sha256:{hex}") });
    assert_eq!(imgbuild::digest::manifest_digest(&manifest), Some(format!("sha256:{hex}")));
    assert_eq!(imgbuild::digest::manifest_digest(&serde_json::json!({ "name": "x" })), None);
}
