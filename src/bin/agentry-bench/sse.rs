//! Server-Sent Events framing: the events of a `text/event-stream` body, fed as it arrives.

/// One event: its `event:` name ("message" when absent), `id:` and `data:` (lines joined with `\n`).
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub id: Option<String>,
    pub data: String,
}

/// Collects body bytes and cuts them into events at blank lines; comment-only frames (`: keepalive`) are
/// skipped.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes received that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole event, consumed.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        loop {
            let Some((frame_len, consumed)) = frame_end(&self.buf) else {
                return Ok(None);
            };
            let frame = std::str::from_utf8(&self.buf[..frame_len])
                .map_err(|_| "a non-UTF-8 event".to_owned())?;
            let (mut kind, mut id, mut data, mut any) = (None, None, None::<String>, false);
            for line in frame.lines() {
                if line.is_empty() || line.starts_with(':') {
                    continue;
                }
                any = true;
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => kind = Some(value.to_owned()),
                    "id" => id = Some(value.to_owned()),
                    "data" => match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => data = Some(value.to_owned()),
                    },
                    _ => {}
                }
            }
            self.buf.drain(..consumed);
            if any {
                return Ok(Some(Event {
                    kind: kind.unwrap_or_else(|| "message".to_owned()),
                    id,
                    data: data.unwrap_or_default(),
                }));
            }
        }
    }
}

/// The length of the first frame (up to its blank line) and the bytes it takes with the blank line.
fn frame_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + i];
        if line.is_empty() || line == b"\r" {
            return Some((start, start + i + 1));
        }
        start += i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_pieces() {
        let mut p = Parser::default();
        let stream = ": keepalive\n\nevent: run_queued\nid: 1\ndata: {\"seq\":\"1\"}\n\n\
                      event: run_completed\r\nid: 2\r\ndata: a\r\ndata: b\r\n\r\n";
        let mut got = Vec::new();
        for piece in stream.as_bytes().chunks(5) {
            p.buffer().extend_from_slice(piece);
            while let Some(e) = p.next_event().unwrap() {
                got.push(e);
            }
        }
        assert_eq!(p.pending(), 0);
        assert_eq!(
            got,
            [
                Event {
                    kind: "run_queued".into(),
                    id: Some("1".into()),
                    data: "{\"seq\":\"1\"}".into()
                },
                Event {
                    kind: "run_completed".into(),
                    id: Some("2".into()),
                    data: "a\nb".into()
                },
            ]
        );
    }
}
