//! The answer-file HTTP server over real TCP: serves only http_directory and
//! http_content; traversal in every spelling and symlink escapes get 403/404.

use std::collections::BTreeMap;

use imgbuild::builder::qemu::http::HttpServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn serves_only_what_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("http");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("preseed.cfg"), "d-i passwd").unwrap();
    std::fs::write(root.join("sub/ks.cfg"), "kickstart").unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "SECRET").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("escape")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), root.join("updir")).unwrap();
    let mut content = BTreeMap::new();
    content.insert("answers.cfg".to_string(), "url={{ http.url }}/sub/ks.cfg ip={{ http.ip }}".to_string());
    let server = HttpServer::start(Some(&root), &content).await.unwrap();
    let port = server.port;

    assert_eq!(get(port, "/preseed.cfg").await, (200, "d-i passwd".into()));
    assert_eq!(get(port, "/sub/ks.cfg").await, (200, "kickstart".into()));
    assert_eq!(get(port, "/answers.cfg").await, (200, format!("url=http://10.0.2.2:{port}/sub/ks.cfg ip=10.0.2.2")));
    for escape in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "//etc/passwd",
        "/etc/passwd",
        "http://10.0.2.2/../secret.txt",
        "/escape",
        "/updir/secret.txt",
        "/sub",
        "/",
    ] {
        let (status, body) = get(port, escape).await;
        assert!(status == 403 || status == 404, "{escape}: {status}");
        assert!(!body.contains("SECRET") && !body.contains("root:"), "{escape} leaked: {body}");
    }
    server.stop();
}

#[tokio::test]
async fn only_get_and_head() {
    let server = HttpServer::start(None, &BTreeMap::from([("a".to_string(), "x".to_string())])).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    stream.write_all(b"DELETE /a HTTP/1.1\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
}
