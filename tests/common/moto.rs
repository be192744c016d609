//! A real moto S3/EC2 server for the integration tests: one `moto_server`
//! per [`Moto`] on a free loopback port, killed on drop.
//!
//! moto comes from the venv made by `scripts/setup.sh`
//! (`${IMGBUILD_VENV:-~/.cache/imgbuild-venv}`), or `MOTO_SERVER=/path/to/moto_server`
//! (the `python` beside it is used). It runs through
//! `scripts/moto_serialized.py`, which handles one request at a time so that
//! conditional writes are atomic as in S3 (see that file).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `moto_server` child process, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts a fresh server (empty state) and waits until it answers HTTP.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// [`Moto::start`] with extra environment for the server, e.g.
    /// `IMGBUILD_MOTO_PENDING_AMIS=1` (see scripts/moto_serialized.py).
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let python = moto_exe().with_file_name("python");
        // Found from either package of the workspace (this file is shared by
        // the root tests and crates/imgbuild-aws/tests through `#[path]`).
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("scripts/moto_serialized.py"))
            .find(|p| p.is_file())
            .expect("scripts/moto_serialized.py above CARGO_MANIFEST_DIR");
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&python)
                .arg(&script)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if answers(port) {
                    return Moto { child, port };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not come up");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs Python `code` with `s3`, a boto3 client of this server (boto3
    /// comes with moto), and `a`, the `args`; returns its stdout. S3 seen
    /// from the outside, the way any other consumer of the bucket sees it.
    pub fn s3py(&self, code: &str, args: &[&str]) -> String {
        let script = format!(
            "import sys, json, boto3\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             a = sys.argv[2:]\n{code}\n"
        );
        let python = moto_exe().with_file_name("python");
        let out = Command::new(python).arg("-c").arg(&script).arg(self.url()).args(args).output().unwrap();
        assert!(out.status.success(), "boto3 failed: {code}\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_exe() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = std::env::var_os("IMGBUILD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/imgbuild-venv"));
    let exe = venv.join("bin/moto_server");
    assert!(exe.is_file(), "{} is missing: run scripts/setup.sh (or `scripts/moto-server.sh install`)", exe.display());
    exe
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real HTTP answer, not just an open port.
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
