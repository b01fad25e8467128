//! hyper refuses a request whose header value holds a control character
//! with a bare 400 (no body, no content type) before the gateway sees it,
//! so a client sending such an Idempotency-Key would not get the problem
//! every other invalid key gets. This reader, between the socket and hyper,
//! turns each control byte inside a header value into 0xFF: obs-text, which
//! hyper lets through and no valid value holds. The gateway then hands the
//! value on as API Gateway hands on any other it cannot read, and the
//! function refuses it as it refuses any invalid value (a key: 400
//! idempotency-key-invalid). Request lines and bodies pass untouched: each
//! body is skipped by its Content-Length; after a chunked one the rest of
//! the connection passes as it is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a control byte in a header value becomes.
const REPLACEMENT: u8 = 0xFF;

/// Where the reader is in the inbound stream.
#[derive(Debug)]
enum At {
    /// In a request line (the first line of a head).
    RequestLine,
    /// In a header line, before its colon (the name, lower-cased, kept
    /// while short enough to be one the framing depends on).
    Name(Vec<u8>),
    /// In a header value; `framing` keeps the value of Content-Length.
    Value { framing: Option<Vec<u8>> },
    /// That many body bytes to pass.
    Body(u64),
    /// Framing this reader does not follow: everything passes.
    Opaque,
}

pub struct HeaderBytes<S> {
    inner: S,
    at: At,
    /// The current line holds nothing but a CR so far (an empty line ends the head).
    blank_line: bool,
    content_length: Option<u64>,
    chunked: bool,
}

impl<S> HeaderBytes<S> {
    pub fn new(inner: S) -> Self {
        HeaderBytes {
            inner,
            at: At::RequestLine,
            blank_line: true,
            content_length: None,
            chunked: false,
        }
    }

    /// Moves the state on by one inbound byte, replacing it if it is a
    /// control character inside a header value.
    fn scan(&mut self, byte: &mut u8) {
        match &mut self.at {
            At::Opaque => return,
            At::Body(left) => {
                *left -= 1;
                if *left == 0 {
                    self.at = At::RequestLine;
                }
                return;
            }
            _ => {}
        }
        if *byte == b'\n' {
            self.end_line();
            return;
        }
        if *byte != b'\r' {
            self.blank_line = false;
        }
        match &mut self.at {
            At::Name(name) if *byte == b':' => {
                let framing = (name.as_slice() == b"content-length").then(Vec::new);
                if name.as_slice() == b"transfer-encoding" {
                    self.chunked = true;
                }
                self.at = At::Value { framing };
            }
            At::Name(name) => {
                if name.len() < 32 {
                    name.push(byte.to_ascii_lowercase());
                }
            }
            At::Value { framing } => {
                if (*byte < 0x20 && *byte != b'\t' && *byte != b'\r') || *byte == 0x7f {
                    *byte = REPLACEMENT;
                }
                if let Some(text) = framing {
                    if text.len() < 32 {
                        text.push(*byte);
                    }
                }
            }
            At::RequestLine | At::Body(_) | At::Opaque => {}
        }
    }

    fn end_line(&mut self) {
        let blank = std::mem::replace(&mut self.blank_line, true);
        match std::mem::replace(&mut self.at, At::Name(Vec::new())) {
            // Empty lines before a request line are allowed and skipped.
            At::RequestLine if blank => self.at = At::RequestLine,
            At::Name(_) if blank => self.end_head(),
            At::Value { framing: Some(text) } => {
                let text = String::from_utf8_lossy(&text);
                match (self.content_length, text.trim().parse::<u64>()) {
                    (None, Ok(n)) => self.content_length = Some(n),
                    (Some(m), Ok(n)) if m == n => {}
                    // An invalid or conflicting length: hyper refuses it;
                    // nothing after it can be framed here.
                    _ => self.chunked = true,
                }
            }
            _ => {}
        }
    }

    fn end_head(&mut self) {
        self.at = match (self.chunked, self.content_length.take()) {
            (true, _) => At::Opaque,
            (false, Some(n)) if n > 0 => At::Body(n),
            (false, _) => At::RequestLine,
        };
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeaderBytes<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                for byte in &mut buf.filled_mut()[before..] {
                    this.scan(byte);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeaderBytes<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(chunks: &[&[u8]]) -> Vec<u8> {
        let mut reader = HeaderBytes::new(());
        let mut out = Vec::new();
        for chunk in chunks {
            for &b in *chunk {
                let mut b = b;
                reader.scan(&mut b);
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn control_bytes_in_header_values_become_obs_text_and_nothing_else_changes() {
        let head = b"POST /a\x01 HTTP/1.1\r\nIdempotency-Key: a\x01b\x7f\tc\r\nContent-Length: 5\r\n\r\n";
        let body = b"{\x01\"}\n";
        let next = b"GET / HTTP/1.1\r\nX: \x02\r\n\r\n";
        let out = scanned(&[head, &body[..2], &body[2..], next]);
        let expected_head = b"POST /a\x01 HTTP/1.1\r\nIdempotency-Key: a\xffb\xff\tc\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(&out[..head.len()], expected_head);
        assert_eq!(&out[head.len()..head.len() + 5], body, "the body passes as it is");
        assert_eq!(
            &out[head.len() + 5..],
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
            "the next request's head is read too"
        );
    }

    #[test]
    fn after_a_chunked_body_everything_passes() {
        let out = scanned(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\x01\r\n0\r\n\r\nGET / HTTP/1.1\r\nX: \x02\r\n\r\n"]);
        assert!(out.ends_with(b"X: \x02\r\n\r\n"));
    }
}
