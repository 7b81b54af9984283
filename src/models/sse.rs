//! A server-sent-events parser (the WHATWG `text/event-stream` format) fed with raw body chunks.
//!
//! Hand-written rather than a crate because the providers need what generic SSE clients hide: the
//! exact end of the stream (an OpenAI stream that closes without `data: [DONE]` was cut short), and
//! a bound on memory when an endpoint sends garbage without line breaks. Lines are split on bytes
//! (`\n`, `\r\n`, `\r`), which never occur inside a multi-byte UTF-8 sequence, so a chunk boundary
//! in the middle of a character is harmless.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, empty when absent (the spec's "message").
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The longest line accepted; beyond it the stream is garbage.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a leading `\n` in the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

/// The stream broke the format in a way that cannot be a model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseError(pub String);

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let is_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out);
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            return Err(SseError(format!(
                "a line of the event stream exceeds {MAX_LINE} bytes"
            )));
        }
        Ok(out)
    }

    /// The body ended: dispatches what is pending. Lenient: an event without its closing blank line
    /// (a server that closes right after `data: [DONE]\n`) still counts.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out);
        }
        self.line_done(b"", &mut out);
        out.pop()
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                if self.data.ends_with('\n') {
                    self.data.pop();
                }
                out.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // a comment (keep-alive)
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields do not matter here
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_events_split_anywhere() {
        let body =
            "event: a\ndata: {\"x\":1}\n\n: keep-alive\n\ndata: one\ndata:two\n\ndata: [DONE]\n\n";
        let expected = vec![ev("a", "{\"x\":1}"), ev("", "one\ntwo"), ev("", "[DONE]")];
        for split in 0..body.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&body.as_bytes()[..split]).unwrap();
            got.extend(p.feed(&body.as_bytes()[split..]).unwrap());
            assert_eq!(p.finish(), None);
            assert_eq!(got, expected, "split at {split}");
        }
    }

    #[test]
    fn handles_crlf_and_cr_across_chunks() {
        let mut p = SseParser::new();
        let mut got = p.feed(b"data: a\r").unwrap();
        got.extend(p.feed(b"\n\r").unwrap());
        got.extend(p.feed(b"\ndata: b\r\r").unwrap());
        assert_eq!(got, vec![ev("", "a"), ev("", "b")]);
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let body = "data: h\u{e9}llo \u{1F600}\n\n".as_bytes();
        let mut p = SseParser::new();
        let mut got = p.feed(&body[..9]).unwrap();
        got.extend(p.feed(&body[9..]).unwrap());
        assert_eq!(got, vec![ev("", "h\u{e9}llo \u{1F600}")]);
    }

    #[test]
    fn finish_dispatches_an_unterminated_event_and_nothing_else() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: [DONE]").unwrap().is_empty());
        assert_eq!(p.finish(), Some(ev("", "[DONE]")));
        let mut p = SseParser::new();
        assert!(p.feed(b"event: x\n").unwrap().is_empty());
        assert_eq!(p.finish(), None, "an event without data is not dispatched");
    }

    #[test]
    fn garbage_without_newlines_is_bounded() {
        let mut p = SseParser::new();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut failed = false;
        for _ in 0..20 {
            if p.feed(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
