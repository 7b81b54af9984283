//! A minimal HTTP/1.1 keep-alive client on a plain `TcpStream`, for the REST shim. It writes a request,
//! reads the answer's head up to the blank line, then its body: `content-length` bytes, chunked
//! (`transfer-encoding: chunked`, decoded piece by piece as it arrives, for Server-Sent Events), or up to
//! the end of the connection. One request at a time per connection; it reconnects after an error or a
//! `connection: close`.

use std::ops::Range;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::Res;

/// Longest head or chunk-size line accepted.
const MAX_HEAD: usize = 64 << 10;

/// A request's bytes: `method path`, host, the bearer key, `accept`, and a JSON body if any.
pub fn request(
    method: &str,
    path: &str,
    addr: &str,
    key: &str,
    accept: &str,
    json: Option<&str>,
) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\naccept: {accept}\r\n"
    );
    if let Some(body) = json {
        r.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

/// The error for an answer other than 200: its status and the start of its body.
pub fn status_error(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("HTTP {status}: {}...", &text[..i]),
        None if text.is_empty() => format!("HTTP {status}"),
        None => format!("HTTP {status}: {text}"),
    }
}

/// Where the reading of a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `content-length`: this many bytes left.
    Length(usize),
    /// Chunked: before a chunk-size line.
    ChunkSize,
    /// Chunked: this many bytes left of the current chunk.
    ChunkData(usize),
    /// Chunked: before the CRLF that closes a chunk.
    ChunkEnd,
    /// Chunked: after the last (empty) chunk, before the blank line that ends the trailers.
    Trailers,
    /// Neither length nor chunked: the body ends with the connection.
    UntilClose,
    Done,
}

/// An answer whose head has been read; its body is read with [`HttpConn::read_body`].
pub struct Response {
    pub status: u16,
    close: bool,
    body: Body,
}

pub struct HttpConn {
    addr: String,
    stream: Option<TcpStream>,
    /// Bytes read; those before `pos` are consumed.
    buf: Vec<u8>,
    pos: usize,
}

impl HttpConn {
    pub fn new(addr: &str) -> HttpConn {
        HttpConn {
            addr: addr.to_owned(),
            stream: None,
            buf: Vec::with_capacity(4096),
            pos: 0,
        }
    }

    /// Writes `request` (connecting first if needed) and reads the head of the answer. After an error the
    /// connection is dropped, here and in the other methods: the next request opens a new one.
    pub async fn send(&mut self, request: &[u8]) -> Res<Response> {
        let res = self.send_inner(request).await;
        if res.is_err() {
            self.disconnect();
        }
        res
    }

    /// Appends the next piece of the body to `out`: Ok(false) once the body is over, and the connection is
    /// then ready for the next request (or closed, if the server said so).
    pub async fn read_body(&mut self, resp: &mut Response, out: &mut Vec<u8>) -> Res<bool> {
        match self.body_step(&mut resp.body, out).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                if resp.close {
                    self.disconnect();
                }
                Ok(false)
            }
            Err(e) => {
                self.disconnect();
                Err(e)
            }
        }
    }

    /// Sends `request` and reads its whole body into `out` (cleared first); returns the status.
    pub async fn exchange(&mut self, request: &[u8], out: &mut Vec<u8>) -> Res<u16> {
        out.clear();
        let mut resp = self.send(request).await?;
        while self.read_body(&mut resp, out).await? {}
        Ok(resp.status)
    }

    pub fn disconnect(&mut self) {
        self.stream = None;
        self.buf.clear();
        self.pos = 0;
    }

    async fn send_inner(&mut self, request: &[u8]) -> Res<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
            self.pos = 0;
        } else if self.pos < self.buf.len() {
            return Err("bytes left over from the previous answer".into());
        }
        let s = self.stream.as_mut().ok_or("not connected")?;
        s.write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let end = loop {
            if let Some(i) = self.buf[self.pos..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break self.pos + i;
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err("an answer head over 64 KiB".into());
            }
            self.fill("before the end of the head").await?;
        };
        let resp = parse_head(&self.buf[self.pos..end])?;
        self.pos = end + 4;
        Ok(resp)
    }

    async fn body_step(&mut self, body: &mut Body, out: &mut Vec<u8>) -> Res<bool> {
        loop {
            let avail = self.buf.len() - self.pos;
            match *body {
                Body::Done => return Ok(false),
                Body::Length(0) => *body = Body::Done,
                Body::Length(n) | Body::ChunkData(n) => {
                    if avail == 0 {
                        self.fill("in the body").await?;
                        continue;
                    }
                    let take = n.min(avail);
                    out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
                    self.pos += take;
                    *body = match *body {
                        Body::Length(_) => Body::Length(n - take),
                        _ if take == n => Body::ChunkEnd,
                        _ => Body::ChunkData(n - take),
                    };
                    return Ok(true);
                }
                Body::ChunkEnd => {
                    if !self.line().await?.is_empty() {
                        return Err("a chunk longer than its size".into());
                    }
                    *body = Body::ChunkSize;
                }
                Body::ChunkSize => {
                    let line = self.line().await?;
                    let text = std::str::from_utf8(&self.buf[line]).unwrap_or("?");
                    let hex = text.split(';').next().unwrap_or("").trim();
                    let n = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("a bad chunk size line {text:?}"))?;
                    *body = if n == 0 {
                        Body::Trailers
                    } else {
                        Body::ChunkData(n)
                    };
                }
                Body::Trailers => {
                    if self.line().await?.is_empty() {
                        *body = Body::Done;
                    }
                }
                Body::UntilClose => {
                    if avail == 0 {
                        if self.read_more().await? == 0 {
                            *body = Body::Done;
                            self.disconnect();
                            return Ok(false);
                        }
                        continue;
                    }
                    out.extend_from_slice(&self.buf[self.pos..]);
                    self.pos = self.buf.len();
                    return Ok(true);
                }
            }
        }
    }

    /// The next CRLF-terminated line (without its CRLF), consumed.
    async fn line(&mut self) -> Res<Range<usize>> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = self.pos..self.pos + i;
                self.pos += i + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err("a chunk-size or trailer line over 64 KiB".into());
            }
            self.fill("in a chunk-size or trailer line").await?;
        }
    }

    /// Reads more bytes; an error if the connection ended (`when` says where we were).
    async fn fill(&mut self, when: &str) -> Res<()> {
        match self.read_more().await? {
            0 => Err(format!("the server closed the connection {when}")),
            _ => Ok(()),
        }
    }

    async fn read_more(&mut self) -> Res<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        let s = self.stream.as_mut().ok_or("not connected")?;
        s.read_buf(&mut self.buf)
            .await
            .map_err(|e| format!("read: {e}"))
    }
}

fn parse_head(head: &[u8]) -> Res<Response> {
    let head = std::str::from_utf8(head).map_err(|_| "a non-UTF-8 head")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
    let (mut length, mut chunked, mut close) = (None, false, version == "HTTP/1.0");
    for l in lines {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse().map_err(|_| "a bad content-length")?);
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            if !v.eq_ignore_ascii_case("chunked") {
                return Err(format!("an unsupported transfer-encoding {v:?}"));
            }
            chunked = true;
        }
    }
    let body = match (chunked, length) {
        (true, _) => Body::ChunkSize,
        (false, Some(n)) => Body::Length(n),
        (false, None) => {
            close = true;
            Body::UntilClose
        }
    };
    Ok(Response {
        status,
        close,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request with the next of `answers`, written a few bytes at a time.
    async fn serve(answers: Vec<&'static str>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            for answer in answers {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    s.read_buf(&mut req).await.unwrap();
                }
                req.clear();
                for piece in answer.as_bytes().chunks(3) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn chunked_then_length_on_one_connection() {
        let addr = serve(vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope",
        ])
        .await;
        let mut c = HttpConn::new(&addr);
        let req = request("GET", "/", &addr, "k", "*/*", None);
        let mut out = Vec::new();
        assert_eq!(c.exchange(&req, &mut out).await.unwrap(), 200);
        assert_eq!(out, b"hello, world");
        assert_eq!(c.exchange(&req, &mut out).await.unwrap(), 404);
        assert_eq!(status_error(404, &out), "HTTP 404: nope");
    }

    #[tokio::test]
    async fn a_cut_chunked_body_is_an_error() {
        let addr = serve(vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
        ])
        .await;
        let mut c = HttpConn::new(&addr);
        let req = request("GET", "/", &addr, "k", "*/*", None);
        let err = c.exchange(&req, &mut Vec::new()).await.unwrap_err();
        assert!(err.contains("closed the connection"), "{err}");
    }

    #[test]
    fn post_request_bytes() {
        let r = request(
            "POST",
            "/v1/runs",
            "h:1",
            "k",
            "application/json",
            Some("{}"),
        );
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /v1/runs HTTP/1.1\r\nhost: h:1\r\nauthorization: Bearer k\r\naccept: application/json\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
    }
}
