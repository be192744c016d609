//! A small HTTP/1 server for download tests: static routes, `Range:
//! bytes=N-`, and faults (cut the connection or hang after N bytes, fail
//! with 503 first). Shared by tests/fetch.rs and tests/faults_e2e.rs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

const CHUNK: usize = 64 * 1024;

#[derive(Clone, Default)]
pub struct Route {
    pub body: Bytes,
    /// On the first request: send this many body bytes, then cut the connection.
    pub cut_first_after: Option<usize>,
    /// On the first request: send this many body bytes, then stall forever.
    pub hang_first_after: Option<usize>,
    /// Answer this many requests with 503 first.
    pub fail_first: usize,
    /// Pause between 64 KiB chunks.
    pub chunk_delay: Option<Duration>,
    /// Ignore `Range` (always answer 200).
    pub no_ranges: bool,
}

impl Route {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Route { body: body.into(), ..Route::default() }
    }
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, (Route, usize)>>,
    requests: AtomicUsize,
    full_gets: AtomicUsize,
    bytes_sent: Arc<AtomicU64>,
    ranges: Mutex<Vec<Option<String>>>,
}

pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        TestServer { addr, state, stop, task }
    }

    pub fn add(&self, path: &str, route: Route) {
        let mut routes = self.state.routes.lock().unwrap();
        routes.insert(path.to_string(), (route, 0));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests answered 200 with the whole body.
    pub fn full_gets(&self) -> usize {
        self.state.full_gets.load(Ordering::SeqCst)
    }

    /// Body bytes written to the socket.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }

    /// The `Range` header of each request, in order.
    pub fn ranges(&self) -> Vec<Option<String>> {
        self.state.ranges.lock().unwrap().clone()
    }

    /// Stops accepting and drops every open connection.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req)) }
        });
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
    conns.abort_all();
}

fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let range = req.headers().get(RANGE).and_then(|v| v.to_str().ok()).map(String::from);
    state.ranges.lock().unwrap().push(range.clone());
    let (route, nth) = {
        let mut routes = state.routes.lock().unwrap();
        let Some((route, count)) = routes.get_mut(req.uri().path()) else {
            return empty(StatusCode::NOT_FOUND);
        };
        *count += 1;
        (route.clone(), *count)
    };
    if nth <= route.fail_first {
        return empty(StatusCode::SERVICE_UNAVAILABLE);
    }
    let start = if route.no_ranges { None } else { range.as_deref().and_then(parse_range) };
    let len = route.body.len();
    match start {
        Some(s) if s >= len => empty(StatusCode::RANGE_NOT_SATISFIABLE),
        Some(s) => {
            let resp = body_response(state, &route, s, nth == 1);
            with_range(resp, s, len)
        }
        None => {
            state.full_gets.fetch_add(1, Ordering::SeqCst);
            body_response(state, &route, 0, nth == 1)
        }
    }
}

fn parse_range(v: &str) -> Option<usize> {
    v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()
}

fn empty(status: StatusCode) -> Response<Body> {
    let body = Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

fn with_range(mut resp: Response<Body>, start: usize, len: usize) -> Response<Body> {
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let value = format!("bytes {start}-{}/{len}", len - 1);
    resp.headers_mut().insert(CONTENT_RANGE, value.parse().unwrap());
    resp
}

/// Streams `body[start..]` in chunks, applying the first-request faults.
fn body_response(state: &State, route: &Route, start: usize, first: bool) -> Response<Body> {
    let data = route.body.slice(start..);
    let total = data.len();
    let (limit, tail) = match (first, route.cut_first_after, route.hang_first_after) {
        (true, Some(n), _) => (n.min(total), Tail::Cut),
        (true, None, Some(n)) => (n.min(total), Tail::Hang),
        _ => (total, Tail::End),
    };
    let chunks: Vec<Bytes> = (0..limit).step_by(CHUNK).map(|i| data.slice(i..(i + CHUNK).min(limit))).collect();
    let sent = state.bytes_sent.clone();
    let delay = route.chunk_delay;
    let head = futures::stream::iter(chunks).then(move |c| {
        let sent = sent.clone();
        async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            sent.fetch_add(c.len() as u64, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Frame::data(c))
        }
    });
    let stream = head.chain(tail.stream());
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    resp.headers_mut().insert(CONTENT_LENGTH, total.into());
    resp
}

enum Tail {
    End,
    Cut,
    Hang,
}

impl Tail {
    fn stream(self) -> futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>> {
        match self {
            Tail::End => futures::stream::empty().boxed(),
            Tail::Cut => {
                // Pause first so hyper flushes what was sent, then fail the
                // body, which makes hyper drop the connection.
                let cut = async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(std::io::Error::other("cut by test"))
                };
                futures::stream::once(cut).boxed()
            }
            Tail::Hang => futures::stream::pending().boxed(),
        }
    }
}
