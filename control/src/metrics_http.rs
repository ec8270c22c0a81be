//! `iked --metrics ADDR:PORT`: answers Prometheus scrapes (`GET /metrics`) from iked's poll
//! loop. One non-blocking listener, no thread: each loop turn accepts at most one waiting
//! connection, reads its request head with a short deadline, writes one HTTP/1.1 response
//! and closes (RFC 9112; `Connection: close`, so no keep-alive state to hold). A client that
//! sends nothing within [`READ_DEADLINE`] gets `408` and costs the loop at most that long.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::metrics::{MetricsInput, CONTENT_TYPE};

/// How long a scraper may take to send its request head (the poll loop waits this long at
/// most; Prometheus sends its request at once).
pub const READ_DEADLINE: Duration = Duration::from_millis(200);
/// A request head longer than this is refused (`431`).
pub const MAX_HEAD: usize = 8 * 1024;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (`head`: a `HEAD` request, headers only).
    Metrics { head: bool },
    /// Any other path.
    NotFound,
    /// Another method on /metrics.
    MethodNotAllowed,
    /// Not an HTTP request line.
    BadRequest,
}

/// Route a request by its request line (RFC 9112 §3: `method SP request-target SP
/// HTTP-version`). A query string is ignored.
pub fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

/// One complete HTTP/1.1 response: status line, Content-Type, Content-Length,
/// `Connection: close`, and the body (left out for HEAD).
pub fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

/// The metrics listener.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Listen on `addr` (non-blocking).
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("metrics {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("metrics {addr}: {e}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        info!("Prometheus metrics at http://{bound}/metrics");
        Ok(MetricsServer { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answer one waiting scrape, if there is one; `render` makes the body and is called
    /// only for `/metrics`. Returns whether a client was served.
    pub fn poll(&self, render: impl FnOnce() -> String) -> bool {
        let (stream, peer) = match self.listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // EMFILE and the like: the next turn tries again; say why at debug level
                // (a scraper sees its own error).
                debug!("metrics: accept: {e}");
                return false;
            }
        };
        if let Err(e) = serve(stream, render) {
            debug!(%peer, "metrics: {e}");
        }
        true
    }
}

/// Read the request head of `stream`, answer, close.
fn serve(mut stream: TcpStream, render: impl FnOnce() -> String) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let reply = match read_head(&mut stream, Instant::now() + READ_DEADLINE)? {
        Head::Complete(head) => match route(&head) {
            Route::Metrics { head } => response("200 OK", CONTENT_TYPE, &render(), head),
            Route::NotFound => response(
                "404 Not Found",
                "text/plain",
                "not found: metrics are at /metrics\n",
                false,
            ),
            Route::MethodNotAllowed => response(
                "405 Method Not Allowed",
                "text/plain",
                "GET or HEAD\n",
                false,
            ),
            Route::BadRequest => response("400 Bad Request", "text/plain", "bad request\n", false),
        },
        Head::TooLong => response(
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too long\n",
            false,
        ),
        Head::TimedOut => response("408 Request Timeout", "text/plain", "too slow\n", false),
        Head::Closed => return Ok(()),
    };
    stream.write_all(&reply)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

enum Head {
    Complete(String),
    TooLong,
    TimedOut,
    Closed,
}

/// Bytes up to the blank line that ends a request head, until `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(&buf) {
            return Ok(Head::Complete(
                String::from_utf8_lossy(&buf[..end]).into_owned(),
            ));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::TooLong);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Ok(if buf.is_empty() {
                    Head::Closed
                } else {
                    Head::Complete(String::from_utf8_lossy(&buf).into_owned())
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The end of a request head: CRLF CRLF, or (tolerated, RFC 9112 §2.2) LF LF.
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What iked shows in one scrape: its status and connections, and the dataplane's counters
/// of `ring` (absent, with the reason at debug level, when the counters file cannot be read).
pub fn iked_input(d: &crate::daemon::Daemon, now: u64, ring: &str) -> MetricsInput {
    let stats = match crate::vpnctl::stats::snapshot(ring) {
        Ok(s) => Some(s),
        Err(e) => {
            debug!(ring, "metrics: no dataplane counters: {}", e.message);
            None
        }
    };
    let iked = d.status_report(now);
    MetricsInput {
        now_unix_ms: iked.now_unix_ms,
        list: Some(d.list_report(now, None)),
        iked: Some(iked),
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> MetricsServer {
        MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    /// Send `request` from a client thread, serve it, return the whole answer.
    fn exchange(s: &MetricsServer, request: &'static [u8]) -> (String, bool) {
        let addr = s.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(request).unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        });
        let mut rendered = false;
        // The listener is non-blocking: poll until the client's connection is there.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.poll(|| {
            rendered = true;
            "xdpipsec_up{daemon=\"iked\"} 1\n".to_string()
        }) {
            assert!(Instant::now() < deadline, "no connection");
            std::thread::yield_now();
        }
        (client.join().unwrap(), rendered)
    }

    fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
        let head = resp.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn get_metrics_is_answered_with_the_text_format_and_its_length() {
        let s = server();
        let (resp, rendered) = exchange(
            &s,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
        );
        assert!(rendered);
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert_eq!(
            header(&resp, "content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(header(&resp, "connection"), Some("close"));
        let body = resp.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body, "xdpipsec_up{daemon=\"iked\"} 1\n");
        assert_eq!(
            header(&resp, "content-length"),
            Some(&*body.len().to_string())
        );
    }

    #[test]
    fn other_paths_get_404_without_rendering() {
        let s = server();
        let (resp, rendered) = exchange(&s, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");
        assert!(!rendered, "the metrics were rendered for a 404");
        let (resp, _) = exchange(&s, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
        assert_eq!(header(&resp, "allow"), Some("GET, HEAD"));
        let (resp, _) = exchange(&s, b"hello\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    }

    #[test]
    fn head_gets_the_headers_only() {
        let s = server();
        let (resp, rendered) = exchange(&s, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(rendered);
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert_eq!(body, "");
        // The length of the body a GET would get.
        assert_eq!(header(&resp, "content-length"), Some("29"));
    }

    #[test]
    fn a_silent_client_costs_the_loop_at_most_the_read_deadline() {
        let s = server();
        let addr = s.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // Send half a request line and wait for the answer.
            c.write_all(b"GET /met").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        });
        let t0 = Instant::now();
        while !s.poll(String::new) {
            assert!(t0.elapsed() < Duration::from_secs(5), "no connection");
            std::thread::yield_now();
        }
        let took = t0.elapsed();
        assert!(took < READ_DEADLINE + Duration::from_secs(1), "{took:?}");
        let resp = client.join().unwrap();
        assert!(resp.starts_with("HTTP/1.1 408 "), "{resp}");
    }

    #[test]
    fn nobody_waiting_is_not_a_scrape() {
        let s = server();
        assert!(!s.poll(|| unreachable!("rendered without a client")));
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(route("GET /metrics/ HTTP/1.1"), Route::NotFound);
        assert_eq!(route("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route("GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(route("GET /metrics"), Route::BadRequest);
        assert_eq!(route(""), Route::BadRequest);
        assert_eq!(route("DELETE /metrics HTTP/1.1"), Route::MethodNotAllowed);
    }
}
