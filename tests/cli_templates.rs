//! The real binary against valid and malformed templates.

mod common;

use common::{imgbuild, repo_root, run};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const BASE: &str = r#"{
  "name": "t",
  "version": "1.0.0",
  "variables": { "user": { "default": "root" } },
  "source": { "type": "cloud-image", "url": "base.qcow2", "checksum": "sha256:0000000000000000000000000000000000000000000000000000000000000000" },
  "builder": {
    "type": "qemu",
    "memory": "512M",
    "ssh": { "username": "{{ var.user }}", "timeout": "5m" }
  },
  "provisioners": [ { "type": "shell", "inline": ["true"] } ]
}"#;

/// (case, template text, JSON path expected in the message, text at the expected line:column)
fn malformed() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let r = |from: &str, to: &str| BASE.replacen(from, to, 1);
    vec![
        ("bad json", r(r#""version": "1.0.0","#, r#""version": "1.0.0""#), "", "\"variables\""),
        ("unknown top-level field", r(r#""name": "t","#, r#""name": "t", "nmae": 1,"#), "nmae", "\"nmae\""),
        ("unknown builder field", r(r#""memory": "512M","#, r#""memroy": "512M","#), "builder.memroy", "\"memroy\""),
        ("unknown ssh field", r(r#""username":"#, r#""usernme":"#), "builder.ssh.usernme", "\"usernme\""),
        ("wrong type", r(r#""memory": "512M","#, r#""memory": "512M", "cpus": "two","#), "builder.cpus", "\"two\""),
        ("missing required field", r(r#""url": "base.qcow2", "#, ""), "source.url", "{ \"type\": \"cloud-image\""),
        ("bad duration", r(r#""timeout": "5m""#, r#""timeout": "5 minutes""#), "builder.ssh.timeout", "\"5 minutes\""),
        ("bad size", r(r#""memory": "512M""#, r#""memory": "512""#), "builder.memory", "\"512\""),
        ("bad checksum", r("sha256:0000", "sha256:zz00"), "source.checksum", "\"sha256:zz"),
        ("undefined variable", r("var.user", "var.usr"), "builder.ssh.username", "\"{{ var.usr }}\""),
        (
            "required variable unset",
            r(r#""user": { "default": "root" }"#, r#""user": { "required": true }"#),
            "variables.user",
            "{ \"required\": true }",
        ),
        ("empty provisioner", r(r#"{ "type": "shell", "inline": ["true"] }"#, "{}"), "provisioners[0]", "{}"),
        ("unknown provisioner type", r(r#""type": "shell""#, r#""type": "shel""#), "provisioners[0].type", "\"shel\""),
        ("shell without commands", r(r#", "inline": ["true"]"#, ""), "provisioners[0]", "{ \"type\": \"shell\" }"),
        ("unknown builder type", r(r#""type": "qemu""#, r#""type": "qmeu""#), "builder.type", "\"qmeu\""),
    ]
}

const EC2_BASE: &str = r#"{
  "name": "t",
  "version": "1.0.0",
  "source": { "type": "ami", "ami": "ami-0123456789abcdef0" },
  "builder": {
    "type": "ec2",
    "region": "eu-west-1",
    "temporary_sg_cidrs": ["10.0.0.0/8"],
    "ssh": { "username": "admin", "interface": "private_ip" },
    "ami_name": "golden-{{ build.version }}"
  }
}"#;

fn malformed_ec2() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let r = |from: &str, to: &str| EC2_BASE.replacen(from, to, 1);
    vec![
        ("unknown ec2 field", r(r#""region":"#, r#""regoin":"#), "builder.regoin", "\"regoin\""),
        ("bad AMI name", r("golden-{{", "golden*{{"), "builder.ami_name", "\"golden*"),
        ("bad CIDR", r("10.0.0.0/8", "10.0.0.0/33"), "builder.temporary_sg_cidrs[0]", "[\"10.0.0.0/33\"]"),
        ("bad SSH interface", r("private_ip", "private"), "builder.ssh.interface", "\"private\""),
        (
            "missing ami_name",
            r(
                r#",
    "ami_name": "golden-{{ build.version }}""#,
                "",
            ),
            "builder.ami_name",
            "{\n    \"type\": \"ec2\"",
        ),
        (
            "ami and filter",
            r(r#""ami": "ami-0123456789abcdef0""#, r#""ami": "ami-1", "filter": { "name": "x-*" }"#),
            "source",
            "{ \"type\": \"ami\"",
        ),
        ("filter without name", r(r#""ami": "ami-0123456789abcdef0""#, r#""filter": {}"#), "source.filter.name", "{}"),
    ]
}

#[test]
fn base_ec2_template_is_valid_and_ami_sources_need_ec2() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "t.json", EC2_BASE);
    let out = run({
        let mut c = imgbuild(dir.path());
        c.arg("validate").arg(&file);
        c
    });
    assert_eq!(out.code, 0, "{}", out.stderr);
    let qemu_with_ami = EC2_BASE.replacen(
        r#""type": "ec2",
    "region": "eu-west-1",
    "temporary_sg_cidrs": ["10.0.0.0/8"],
    "ssh": { "username": "admin", "interface": "private_ip" },
    "ami_name": "golden-{{ build.version }}""#,
        r#""type": "qemu""#,
        1,
    );
    let file = write(dir.path(), "t.json", &qemu_with_ami);
    let out = run({
        let mut c = imgbuild(dir.path());
        c.arg("validate").arg(&file);
        c
    });
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("an `ami` source needs the `ec2` builder"), "{}", out.stderr);
}

/// `line:column` (1-based, in characters) of the first occurrence of `needle`.
fn position_of(text: &str, needle: &str) -> String {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle} not in template"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{line}:{column}")
}

#[test]
fn malformed_templates_exit_2_with_path_and_position() {
    let dir = tempfile::tempdir().unwrap();
    for (case, text, path, needle) in malformed().into_iter().chain(malformed_ec2()) {
        let position = position_of(&text, needle);
        let file = write(dir.path(), "t.json", &text);
        let out = run({
            let mut c = imgbuild(dir.path());
            c.arg("validate").arg(&file);
            c
        });
        assert_eq!(out.code, 2, "{case}: exit code; stderr:\n{}", out.stderr);
        assert!(out.stderr.contains(&format!("t.json:{position}")), "{case}: position {position} in:\n{}", out.stderr);
        if !path.is_empty() {
            assert!(out.stderr.contains(&format!("(at {path})")), "{case}: path {path} in:\n{}", out.stderr);
        }
        assert!(!out.stderr.contains("panicked"), "{case}: panic:\n{}", out.stderr);
        assert!(!out.stderr.contains("RUST_BACKTRACE"), "{case}");
    }
}

#[test]
fn all_errors_are_reported_at_once_with_suggestions() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        BASE.replacen(r#""username":"#, r#""usernme":"#, 1).replacen(r#""memory": "512M""#, r#""memory": "1X""#, 1);
    let file = write(dir.path(), "t.json", &text);
    let out = run({
        let mut c = imgbuild(dir.path());
        c.arg("validate").arg(&file);
        c
    });
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("did you mean `username`?"), "{}", out.stderr);
    assert!(out.stderr.contains("invalid size `1X`"), "{}", out.stderr);
    assert!(out.stderr.contains("2 errors"), "{}", out.stderr);
}

#[test]
fn base_template_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "t.json", BASE);
    let out = run({
        let mut c = imgbuild(dir.path());
        c.arg("validate").arg(&file);
        c
    });
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn examples_validate() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_root().join("templates")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let mut c = imgbuild(dir.path());
        // Examples that boot the test fixture name its directory in a variable.
        c.arg("validate")
            .arg(&path)
            .env("IMGBUILD_VAR_fixture_dir", "/nonexistent")
            .env("IMGBUILD_VAR_installer_dir", "/nonexistent");
        let out = run(c);
        assert_eq!(out.code, 0, "{}: {}", path.display(), out.stderr);
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn unknown_var_on_command_line_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "t.json", BASE);
    let out = run({
        let mut c = imgbuild(dir.path());
        c.args(["validate", "--var", "usr=x"]).arg(&file);
        c
    });
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("did you mean `user`?"), "{}", out.stderr);
}

#[test]
fn var_file_errors_point_into_the_var_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "t.json", BASE);
    let vars = write(dir.path(), "vars.json", "{\n  \"usr\": \"admin\"\n}");
    let out = run({
        let mut c = imgbuild(dir.path());
        c.arg("validate").arg("--var-file").arg(&vars).arg(&file);
        c
    });
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("vars.json:2:3"), "{}", out.stderr);
}

#[test]
fn variable_precedence_is_default_env_file_cli() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "t.json", BASE);
    let vars = write(dir.path(), "vars.json", r#"{ "user": "from-file" }"#);
    let inspect = |env: bool, var_file: bool, cli: bool| {
        let mut c = imgbuild(dir.path());
        c.arg("inspect").arg(&file);
        if env {
            c.env("IMGBUILD_VAR_user", "from-env");
        }
        if var_file {
            c.arg("--var-file").arg(&vars);
        }
        if cli {
            c.args(["--var", "user=from-cli"]);
        }
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["template"]["builder"]["ssh"]["username"].as_str().unwrap().to_string()
    };
    assert_eq!(inspect(false, false, false), "root");
    assert_eq!(inspect(true, false, false), "from-env");
    assert_eq!(inspect(true, true, false), "from-file");
    assert_eq!(inspect(true, true, true), "from-cli");
}

#[test]
fn help_lists_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run({
        let mut c = imgbuild(dir.path());
        c.arg("--help");
        c
    });
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("130  interrupted"), "{}", out.stdout);
}
