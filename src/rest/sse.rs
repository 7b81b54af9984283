//! Server-streaming RPCs as Server-Sent Events. Each message is one event: `event:` the name of the oneof
//! field set in it (`message_delta`, `run_completed`...), `id:` its `seq`, `data:` the message as JSON.
//! A comment (`: keepalive`) goes out every [`HEARTBEAT`] so that idle connections and proxies stay
//! open. A status the stream ends with, other than OK, is a last `event: error` carrying the JSON error
//! body. Resuming (`Last-Event-ID` or `?after_seq=`) is the request's `after_seq`, set by the transcoder.

use std::{convert::Infallible, time::Duration};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage as _, Value};
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at};

use super::{
    errors::{RestError, from_metadata},
    grpc::Frames,
    transcode,
};

pub(crate) const HEARTBEAT: Duration = Duration::from_secs(15);

struct State {
    body: tonic::body::Body,
    frames: Frames,
    output: MessageDescriptor,
    heartbeat: Interval,
    out: Vec<Bytes>,
    done: bool,
}

/// The SSE answer streaming `resp`'s messages (of type `output`).
pub(crate) fn respond(
    resp: http::Response<tonic::body::Body>,
    output: MessageDescriptor,
) -> Response {
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = State {
        body: resp.into_body(),
        frames: Frames::default(),
        output,
        heartbeat,
        out: Vec::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if !st.out.is_empty() {
                let chunk = st.out.remove(0);
                return Some((Ok::<_, Infallible>(chunk), st));
            }
            if st.done {
                return None;
            }
            tokio::select! {
                frame = st.body.frame() => st.on_frame(frame),
                _ = st.heartbeat.tick() => st.out.push(Bytes::from_static(b": keepalive\n\n")),
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

impl State {
    fn on_frame(&mut self, frame: Option<Result<http_body::Frame<Bytes>, tonic::Status>>) {
        match frame {
            None => self.done = true,
            Some(Err(status)) => self.fail(RestError::from_status(&status)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.frames.push(&data);
                    loop {
                        match self.frames.next() {
                            Ok(Some(msg)) => match event(&self.output, &msg) {
                                Ok(e) => self.out.push(e),
                                Err(e) => return self.fail(e),
                            },
                            Ok(None) => break,
                            Err(e) => return self.fail(e),
                        }
                    }
                }
                Err(frame) => {
                    if let Some(e) = frame.trailers_ref().and_then(from_metadata) {
                        self.fail(e);
                    }
                    self.done = true;
                }
            },
        }
    }

    fn fail(&mut self, e: RestError) {
        let mut chunk = b"event: error\ndata: ".to_vec();
        chunk.extend_from_slice(&e.body());
        chunk.extend_from_slice(b"\n\n");
        self.out.push(chunk.into());
        self.done = true;
    }
}

/// One SSE event for an encoded message.
fn event(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Bytes, RestError> {
    let msg = DynamicMessage::decode(desc.clone(), bytes).map_err(RestError::internal)?;
    let data = transcode::to_json(desc, bytes)?;
    let mut out = Vec::with_capacity(data.len() + 64);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind(&msg).as_bytes());
    out.push(b'\n');
    if let Some(seq) = msg.get_field_by_name("seq") {
        let id = match seq.as_ref() {
            Value::I64(n) => Some(n.to_string()),
            Value::U64(n) => Some(n.to_string()),
            Value::I32(n) => Some(n.to_string()),
            Value::U32(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(id) = id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
    }
    // Compact JSON has no raw newline: one data line.
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\n\n");
    Ok(out.into())
}

/// The name of the oneof field set in `msg`, or "message".
fn kind(msg: &DynamicMessage) -> String {
    let desc = msg.descriptor();
    for oneof in desc.oneofs().filter(|o| !o.is_synthetic()) {
        for f in oneof.fields() {
            if msg.has_field(&f) {
                return f.name().to_owned();
            }
        }
    }
    "message".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn run_event_frames() {
        let desc = transcode::message("agentry.v1.RunEvent").unwrap();
        let ev = crate::pb::RunEvent {
            run_id: "r1".into(),
            seq: 7,
            event: Some(crate::pb::run_event::Event::MessageDelta(
                crate::pb::MessageDelta {
                    text: "Hello\nworld".into(),
                },
            )),
            ..Default::default()
        };
        let e = event(&desc, &ev.encode_to_vec()).unwrap();
        let text = std::str::from_utf8(&e).unwrap();
        assert!(
            text.starts_with("event: message_delta\nid: 7\ndata: {"),
            "{text}"
        );
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains(r#""text":"Hello\nworld""#), "{text}");
        assert!(text.contains(r#""seq":"7""#), "{text}");
    }

    fn body(
        frames: Vec<Result<http_body::Frame<Bytes>, tonic::Status>>,
        then_pend: bool,
    ) -> tonic::body::Body {
        let items = futures_util::stream::iter(frames);
        if then_pend {
            let s = futures_util::StreamExt::chain(items, futures_util::stream::pending());
            tonic::body::Body::new(http_body_util::StreamBody::new(s))
        } else {
            tonic::body::Body::new(http_body_util::StreamBody::new(items))
        }
    }

    async fn next(b: &mut Body) -> String {
        let f = b.frame().await.expect("a frame").expect("no error");
        String::from_utf8(f.into_data().expect("data").to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_an_idle_stream_open() {
        let desc = transcode::message("agentry.v1.RunEvent").unwrap();
        let r = respond(http::Response::new(body(vec![], true)), desc);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut b = r.into_body();
        let start = Instant::now();
        assert_eq!(next(&mut b).await, ": keepalive\n\n");
        assert_eq!(start.elapsed(), HEARTBEAT);
        assert_eq!(next(&mut b).await, ": keepalive\n\n");
    }

    #[tokio::test]
    async fn an_error_after_the_start_is_a_last_error_event() {
        let desc = transcode::message("agentry.v1.RunEvent").unwrap();
        let ev = crate::pb::RunEvent {
            seq: 1,
            event: Some(crate::pb::run_event::Event::RunQueued(
                crate::pb::RunQueued {},
            )),
            ..Default::default()
        };
        let bytes = ev.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        framed.extend_from_slice(&bytes);
        // Split across two data frames, as the transport may do.
        let (a, rest) = framed.split_at(3);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().unwrap());
        trailers.insert("grpc-message", "going%20away".parse().unwrap());
        let frames = vec![
            Ok(http_body::Frame::data(Bytes::copy_from_slice(a))),
            Ok(http_body::Frame::data(Bytes::copy_from_slice(rest))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let mut b = respond(http::Response::new(body(frames, false)), desc).into_body();
        assert!(next(&mut b).await.starts_with("event: run_queued\nid: 1\n"));
        assert_eq!(
            next(&mut b).await,
            "event: error\ndata: {\"code\":14,\"message\":\"going away\",\"details\":[]}\n\n"
        );
        assert!(b.frame().await.is_none(), "the stream ends");
    }
}
