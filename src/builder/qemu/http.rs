//! The build's HTTP server for installer answer files: `http_content` and
//! the files under `http_directory`, nothing else. The guest reaches it at
//! 10.0.2.2 (QEMU user networking maps that address to the host's loopback).
//!
//! Deliberately tiny: GET/HEAD of whole files, no listings, and every path is
//! checked after percent-decoding and after resolving symlinks, so `../`,
//! `%2e%2e%2f` and links pointing outside the directory get 403/404.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where the guest finds the host (QEMU slirp).
pub const GUEST_HOST_IP: &str = "10.0.2.2";
const MAX_REQUEST: usize = 8192;

pub struct HttpServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Site {
    root: Option<PathBuf>,
    content: BTreeMap<String, Vec<u8>>,
}

impl HttpServer {
    /// Binds 127.0.0.1 on a port the kernel picks (no race with other builds),
    /// then renders `content` with the real `{{ http.* }}` values.
    pub async fn start(root: Option<&Path>, content: &BTreeMap<String, String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let root = match root {
            Some(dir) => Some(tokio::fs::canonicalize(dir).await?),
            None => None,
        };
        let content = content
            .iter()
            .map(|(path, body)| {
                let key = format!("/{}", path.trim_start_matches('/'));
                let body = crate::template::interp::render_http(body, GUEST_HOST_IP, port);
                (key, body.into_bytes())
            })
            .collect();
        let site = Arc::new(Site { root, content });
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let site = site.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &site).await {
                        tracing::debug!("http: {peer}: {e}");
                    }
                });
            }
        });
        Ok(HttpServer { port, task })
    }
}

async fn serve(mut stream: TcpStream, site: &Site) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return respond(&mut stream, 400, "bad request", b"", false).await;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&buf);
    let mut words = request.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(&mut stream, 405, "method not allowed", b"", head).await;
    }
    let (status, body) = match lookup(site, target).await {
        Ok(body) => (200, body),
        Err(status) => (status, Vec::new()),
    };
    tracing::debug!("http: {method} {target} -> {status}");
    let reason = match status {
        200 => "OK",
        403 => "forbidden",
        _ => "not found",
    };
    respond(&mut stream, status, reason, &body, head).await
}

async fn respond(stream: &mut TcpStream, status: u16, reason: &str, body: &[u8], head: bool) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

/// The body for a request target, or the HTTP status that refuses it.
async fn lookup(site: &Site, target: &str) -> Result<Vec<u8>, u16> {
    let segments = clean_segments(target)?;
    let key = format!("/{}", segments.join("/"));
    if let Some(body) = site.content.get(&key) {
        return Ok(body.clone());
    }
    let root = site.root.as_ref().ok_or(404u16)?;
    let candidate = segments.iter().fold(root.clone(), |p, s| p.join(s));
    // Resolving symlinks first means a link pointing outside is caught here.
    let real = tokio::fs::canonicalize(&candidate).await.map_err(|_| 404u16)?;
    if !real.starts_with(root) {
        return Err(403);
    }
    if !real.is_file() {
        return Err(404);
    }
    tokio::fs::read(&real).await.map_err(|_| 404)
}

/// Percent-decodes the path and splits it; `..` anywhere is refused.
fn clean_segments(target: &str) -> Result<Vec<String>, u16> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    // Absolute-form targets (`http://host/path`) carry the path after the authority.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    };
    let decoded = percent_decode(path).ok_or(400u16)?;
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(403),
            s if s.contains('\0') || s.contains('\\') => return Err(403),
            s => segments.push(s.to_string()),
        }
    }
    Ok(segments)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        assert_eq!(clean_segments("/a/b.cfg").unwrap(), ["a", "b.cfg"]);
        for bad in ["/../etc/passwd", "/%2e%2e%2fetc%2fpasswd", "/a/%2E%2E/%2E%2E/x", "/a\\..\\b", "/%00"] {
            assert!(clean_segments(bad).is_err(), "{bad}");
        }
        assert_eq!(clean_segments("http://10.0.2.2:80/ks.cfg?x=1").unwrap(), ["ks.cfg"]);
    }
}
