//! Serving the management API: newline-delimited JSON on a Unix socket (and optionally a TCP
//! address), and `/metrics` + `/healthz` over HTTP.
//!
//! API and HTTP threads own the sockets. They read and parse requests ([`parse_request`],
//! with the size and batch limits), then hand each one to the control thread as a [`Call`]
//! over a crossbeam channel, with a reply channel of capacity one: the control thread answers
//! with a `try_send` that cannot block, so a slow or vanished client never holds it up. The
//! control thread does all the work ([`handle_call`]: commits, listings, snapshots), one call
//! at a time, so requests are serialised exactly as transactions are.
//!
//! `monitor` subscribes the connection: the control thread pushes [`MonitorEvent`]s into a
//! bounded channel per subscriber ([`Monitors`]); a subscriber that reads too slowly loses
//! events and is told how many (`{"event":"dropped","count":N}`).
//!
//! Threads: one accept thread per listener, one thread per API connection (at most
//! [`MAX_CONNECTIONS`] at once), one HTTP thread. None of them touches the rule store.

use crate::api::{
    parse_request, Api, ApiError, DataSource, ErrorKind, Limits, MonitorEvent, Request, Response,
};
use crate::generation::Committer;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// API connections served at once; more are refused with an error line.
pub const MAX_CONNECTIONS: usize = 64;
/// Events a monitor subscriber may have queued before it loses some.
pub const MONITOR_QUEUE: usize = 4096;

/// What an API or HTTP thread asks the control thread.
pub enum Call {
    /// Handle a request; answer on `reply`.
    Request {
        request: Request,
        reply: Sender<Response>,
    },
    /// Render `/metrics`.
    Metrics { reply: Sender<String> },
    /// Say you are alive.
    Health { reply: Sender<()> },
    /// Send monitor events here until it is closed.
    Subscribe { events: Sender<MonitorEvent> },
}

/// The control thread's monitor subscribers.
#[derive(Default)]
pub struct Monitors {
    /// Each subscriber and the events it has lost since its last delivered one.
    subs: Vec<(Sender<MonitorEvent>, u64)>,
}

impl Monitors {
    pub fn add(&mut self, events: Sender<MonitorEvent>) {
        self.subs.push((events, 0));
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Sends `ev` to every subscriber without waiting: a full queue loses the event (and
    /// the subscriber hears how many it lost), a closed one is forgotten.
    pub fn publish(&mut self, ev: &MonitorEvent) {
        self.subs.retain_mut(|(tx, lost)| {
            if *lost > 0 {
                match tx.try_send(MonitorEvent::Dropped { count: *lost }) {
                    Ok(()) => *lost = 0,
                    Err(TrySendError::Full(_)) => {
                        *lost += 1;
                        return true;
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            match tx.try_send(ev.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    *lost += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        })
    }
}

/// Handles one call on the control thread. Never blocks: replies go into channels of
/// capacity one that only this call writes.
pub fn handle_call(
    call: Call,
    api: &mut Api,
    c: &mut Committer,
    data: &dyn DataSource,
    monitors: &mut Monitors,
) {
    match call {
        Call::Request { request, reply } => {
            let r = api.handle(request, c, data);
            let _ = reply.try_send(r);
            for ev in api.take_events() {
                monitors.publish(&ev);
            }
        }
        Call::Metrics { reply } => {
            let _ = reply.try_send(api.metrics_text(c, data));
        }
        Call::Health { reply } => {
            let _ = reply.try_send(());
        }
        Call::Subscribe { events } => monitors.add(events),
    }
}

/// Where to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The API's Unix socket (created mode 0660; a stale socket file is replaced).
    pub unix_socket: Option<PathBuf>,
    /// The API on TCP too (newline-delimited JSON, no authentication: keep it on a
    /// management network).
    pub api_tcp: Option<SocketAddr>,
    /// `/metrics` and `/healthz`.
    pub metrics: Option<SocketAddr>,
    pub limits: Limits,
    /// How long an API thread waits for the control thread's answer.
    pub reply_timeout: Duration,
}

/// The running listeners; dropping it stops accepting and removes the socket file.
pub struct Servers {
    unix: Option<PathBuf>,
    api_tcp: Option<SocketAddr>,
    http: Option<Arc<tiny_http::Server>>,
    http_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("management socket {path}: {reason}")]
    Unix { path: String, reason: String },
    #[error("management API address {addr}: {reason}")]
    Tcp { addr: SocketAddr, reason: String },
    #[error("metrics address {addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
}

struct Shared {
    calls: Sender<Call>,
    limits: Limits,
    reply_timeout: Duration,
    generation: Arc<AtomicU64>,
    connections: AtomicUsize,
    stop: Arc<AtomicBool>,
}

impl Servers {
    /// Binds every configured listener and starts its threads; calls arrive on `calls`.
    pub fn start(cfg: &ServerConfig, calls: Sender<Call>) -> Result<Servers, ServeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            calls,
            limits: cfg.limits,
            reply_timeout: cfg.reply_timeout,
            generation: generation.clone(),
            connections: AtomicUsize::new(0),
            stop: stop.clone(),
        });
        let mut s = Servers {
            unix: None,
            api_tcp: None,
            http: None,
            http_addr: None,
            stop,
            generation,
            threads: Vec::new(),
        };
        if let Some(path) = &cfg.unix_socket {
            let l = bind_unix(path).map_err(|reason| ServeError::Unix {
                path: path.display().to_string(),
                reason,
            })?;
            s.unix = Some(path.clone());
            let sh = shared.clone();
            s.threads.push(spawn("levee-api-unix", move || {
                for conn in l.incoming() {
                    if sh.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let Ok(w) = conn.try_clone() else { continue };
                    start_connection(&sh, Box::new(conn), Box::new(w));
                }
            }));
        }
        if let Some(addr) = cfg.api_tcp {
            let l = TcpListener::bind(addr).map_err(|e| ServeError::Tcp {
                addr,
                reason: e.to_string(),
            })?;
            let bound = l.local_addr().unwrap_or(addr);
            s.api_tcp = Some(bound);
            let sh = shared.clone();
            s.threads.push(spawn("levee-api-tcp", move || {
                for conn in l.incoming() {
                    if sh.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let _ = conn.set_nodelay(true);
                    let Ok(w) = conn.try_clone() else { continue };
                    start_connection(&sh, Box::new(conn), Box::new(w));
                }
            }));
        }
        if let Some(addr) = cfg.metrics {
            let server = tiny_http::Server::http(addr).map_err(|e| ServeError::Http {
                addr,
                reason: e.to_string(),
            })?;
            let server = Arc::new(server);
            s.http_addr = server.server_addr().to_ip();
            s.http = Some(server.clone());
            let sh = shared.clone();
            s.threads.push(spawn("levee-metrics", move || {
                for req in server.incoming_requests() {
                    serve_http(&sh, req);
                }
            }));
        }
        Ok(s)
    }

    /// The generation the API threads report in errors they answer themselves; the control
    /// thread keeps it current.
    pub fn generation(&self) -> Arc<AtomicU64> {
        self.generation.clone()
    }

    /// The bound API TCP address (with the real port when 0 was asked for).
    pub fn api_tcp_addr(&self) -> Option<SocketAddr> {
        self.api_tcp
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = &self.http {
            h.unblock();
        }
        // Wake the accept loops so they see the stop flag.
        if let Some(p) = &self.unix {
            let _ = UnixStream::connect(p);
            let _ = std::fs::remove_file(p);
        }
        if let Some(a) = self.api_tcp {
            let _ = TcpStream::connect_timeout(&a, Duration::from_millis(100));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn a management thread")
}

fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        // A socket nobody answers on is left over from a crash: replace it. One that answers
        // belongs to a running levee.
        if UnixStream::connect(path).is_ok() {
            return Err("another process is serving on it (is levee already running?)".into());
        }
        std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))?;
    }
    let l = UnixListener::bind(path).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| e.to_string())?;
    Ok(l)
}

fn start_connection(sh: &Arc<Shared>, r: Box<dyn Read + Send>, mut w: Box<dyn Write + Send>) {
    if sh.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        sh.connections.fetch_sub(1, Ordering::AcqRel);
        let e = ApiError::new(
            ErrorKind::Unavailable,
            format!("too many API connections (at most {MAX_CONNECTIONS})"),
        );
        let _ = writeln!(
            w,
            "{}",
            Response::err(sh.generation.load(Ordering::Relaxed), e).to_line()
        );
        return;
    }
    let sh = sh.clone();
    spawn("levee-api-conn", move || {
        let _ = serve_connection(&sh, r, w);
        sh.connections.fetch_sub(1, Ordering::AcqRel);
    });
}

/// What reading one line gave.
enum Line {
    Got,
    /// Longer than the limit (its length so far); the rest of the line was skipped.
    TooLong(usize),
    Eof,
}

/// Reads one `\n`-terminated line into `buf` (without the newline), keeping at most `limit`
/// bytes in memory.
fn read_line_limited(r: &mut impl BufRead, buf: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
    buf.clear();
    let mut seen = 0usize;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if seen == 0 {
                Line::Eof
            } else if seen > limit {
                Line::TooLong(seen)
            } else {
                Line::Got
            });
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        seen += part.len();
        if seen <= limit {
            buf.extend_from_slice(part);
        } else {
            buf.clear();
        }
        let used = done.unwrap_or(part.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if seen > limit {
                Line::TooLong(seen)
            } else {
                Line::Got
            });
        }
    }
}

fn serve_connection(sh: &Shared, r: Box<dyn Read + Send>, mut w: Box<dyn Write + Send>) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut line = Vec::new();
    loop {
        let generation = || sh.generation.load(Ordering::Relaxed);
        let parsed = match read_line_limited(&mut r, &mut line, sh.limits.max_request_bytes)? {
            Line::Eof => return Ok(()),
            Line::TooLong(n) => Err(ApiError::new(
                ErrorKind::TooLarge,
                format!(
                    "request of more than {} bytes (read {n}); at most {} bytes",
                    sh.limits.max_request_bytes, sh.limits.max_request_bytes
                ),
            )),
            Line::Got if line.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Got => parse_request(&line, &sh.limits),
        };
        let request = match parsed {
            Ok(r) => r,
            Err(e) => {
                writeln!(w, "{}", Response::err(generation(), e).to_line())?;
                continue;
            }
        };
        let monitor = matches!(request, Request::Monitor {});
        let (tx, rx) = crossbeam_channel::bounded(1);
        let gone = || {
            Response::err(
                generation(),
                ApiError::new(ErrorKind::Unavailable, "levee is shutting down"),
            )
        };
        if sh.calls.send(Call::Request { request, reply: tx }).is_err() {
            writeln!(w, "{}", gone().to_line())?;
            return Ok(());
        }
        let resp = match rx.recv_timeout(sh.reply_timeout) {
            Ok(r) => r,
            Err(_) => Response::err(
                generation(),
                ApiError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the control thread did not answer within {} ms (a commit may still complete; check the generation)",
                        sh.reply_timeout.as_millis()
                    ),
                ),
            ),
        };
        writeln!(w, "{}", resp.to_line())?;
        w.flush()?;
        if monitor && resp.ok {
            return stream_monitor(sh, w);
        }
    }
}

fn stream_monitor(sh: &Shared, mut w: Box<dyn Write + Send>) -> io::Result<()> {
    let (tx, rx): (Sender<MonitorEvent>, Receiver<MonitorEvent>) = crossbeam_channel::bounded(MONITOR_QUEUE);
    if sh.calls.send(Call::Subscribe { events: tx }).is_err() {
        return Ok(());
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(ev) => {
                writeln!(w, "{}", ev.to_line())?;
                w.flush()?;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if sh.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

fn serve_http(sh: &Shared, req: tiny_http::Request) {
    use tiny_http::{Header, Method, Response as HttpResponse};
    let text = |code: u16, body: String, ctype: &str| {
        HttpResponse::from_string(body)
            .with_status_code(code)
            .with_header(Header::from_bytes("Content-Type", ctype).expect("valid header"))
    };
    let plain = "text/plain; charset=utf-8";
    if !matches!(req.method(), Method::Get | Method::Head) {
        let _ = req.respond(text(405, "only GET\n".into(), plain));
        return;
    }
    let path = req.url().split('?').next().unwrap_or("").to_owned();
    let resp = match path.as_str() {
        "/metrics" => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            match sh
                .calls
                .send(Call::Metrics { reply: tx })
                .ok()
                .and_then(|_| rx.recv_timeout(sh.reply_timeout).ok())
            {
                Some(body) => text(200, body, "text/plain; version=0.0.4; charset=utf-8"),
                None => text(503, "the control thread did not answer\n".into(), plain),
            }
        }
        "/healthz" => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            match sh
                .calls
                .send(Call::Health { reply: tx })
                .ok()
                .and_then(|_| rx.recv_timeout(sh.reply_timeout.min(Duration::from_secs(2))).ok())
            {
                Some(()) => text(200, "ok\n".into(), plain),
                None => text(503, "the control thread did not answer\n".into(), plain),
            }
        }
        _ => text(404, "not found: try /metrics or /healthz\n".into(), plain),
    };
    let _ = req.respond(resp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_within_the_limit() {
        let mut r = BufReader::with_capacity(4, &b"ab\nabcdefgh\n\nxyz"[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::Got
        ));
        assert_eq!(buf, b"ab");
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::TooLong(8)
        ));
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::Got
        ));
        assert_eq!(buf, b"");
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::Got
        ));
        assert_eq!(buf, b"xyz");
        assert!(matches!(
            read_line_limited(&mut r, &mut buf, 5).unwrap(),
            Line::Eof
        ));
    }

    #[test]
    fn a_slow_monitor_loses_events_and_hears_how_many() {
        let mut m = Monitors::default();
        let (tx, rx) = crossbeam_channel::bounded(2);
        m.add(tx);
        let ev = |g| MonitorEvent::Generation {
            generation: g,
            owner: None,
            ops: vec![],
        };
        for g in 0..5 {
            m.publish(&ev(g));
        }
        assert_eq!(rx.try_recv().unwrap(), ev(0));
        assert_eq!(rx.try_recv().unwrap(), ev(1));
        m.publish(&ev(5));
        assert_eq!(rx.try_recv().unwrap(), MonitorEvent::Dropped { count: 3 });
        assert_eq!(rx.try_recv().unwrap(), ev(5));
        drop(rx);
        m.publish(&ev(6));
        assert!(m.is_empty());
    }
}
