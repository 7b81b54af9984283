//! The public surface that needs no key: gRPC health (with NOT_SERVING while stopping), reflection v1
//! and v1alpha, and HTTP `/healthz`.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

const AGENTRY_SERVICES: [&str; 4] = [
    "agentry.v1.AgentService",
    "agentry.v1.RunService",
    "agentry.v1.FlowService",
    "agentry.v1.AdminService",
];
const HEALTH: &str = "grpc.health.v1.Health";

async fn health_serving_without_a_key(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let mut h = HealthClient::new(srv.channel().await);
    for service in std::iter::once("").chain(AGENTRY_SERVICES) {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await;
        let r = r.unwrap_or_else(|e| panic!("{service:?}: {e:?}"));
        assert_eq!(
            r.into_inner().status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = h
        .check(HealthCheckRequest {
            service: "agentry.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // A watcher sees SERVING, then NOT_SERVING as soon as the server is asked to stop, then the end of
    // its stream: watchers left connected do not hold the drain open.
    let mut watch = h
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let agent_watch = h
        .watch(HealthCheckRequest {
            service: AGENTRY_SERVICES[0].into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.expect("a status").unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(srv.stop());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status while stopping");
    assert_eq!(
        next.expect("a status").unwrap().status,
        ServingStatus::NotServing as i32
    );
    let mut db = tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops although health watchers are connected")
        .expect("clean stop");
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(5), watch.collect::<Vec<_>>())
        .await
        .expect("the watch ends");
    assert!(
        rest.iter().all(|r| r.is_err()),
        "no status after NOT_SERVING: {rest:?}"
    );
    let statuses: Vec<i32> =
        tokio::time::timeout(Duration::from_secs(5), agent_watch.collect::<Vec<_>>())
            .await
            .expect("the watch ends")
            .into_iter()
            .filter_map(|r| r.ok().map(|r| r.status))
            .collect();
    assert_eq!(
        statuses,
        [
            ServingStatus::Serving as i32,
            ServingStatus::NotServing as i32
        ]
    );
    db.drop_db().await;
}

fn v1_list_request() -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    }
}

fn v1_symbol_request(symbol: &str) -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        ),
    }
}

async fn reflection_v1_and_v1alpha(backend: Backend) {
    let srv = TestServer::start(&backend).await;

    // v1: list, then look a service up, on one stream.
    let mut c = v1::server_reflection_client::ServerReflectionClient::new(srv.channel().await);
    let reqs = tokio_stream::iter(vec![
        v1_list_request(),
        v1_symbol_request("agentry.v1.AgentService"),
    ]);
    let mut responses = c
        .server_reflection_info(reqs)
        .await
        .expect("reflection v1 without a key")
        .into_inner();
    let listed = responses.next().await.expect("a response").unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("not a list: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in AGENTRY_SERVICES.iter().chain(&[HEALTH]) {
        assert!(
            names.iter().any(|n| n == want),
            "v1 lists {want}: {names:?}"
        );
    }
    let found = responses.next().await.expect("a response").unwrap();
    match found.message_response {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty());
        }
        other => panic!("AgentService is not described: {other:?}"),
    }

    // v1alpha: the same list.
    let mut c = v1alpha::server_reflection_client::ServerReflectionClient::new(srv.channel().await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let listed = responses.next().await.expect("a response").unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("not a list: {listed:?}");
    };
    let alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in AGENTRY_SERVICES.iter().chain(&[HEALTH]) {
        assert!(
            alpha_names.iter().any(|n| n == want),
            "v1alpha lists {want}: {alpha_names:?}"
        );
    }
    srv.finish().await;
}

/// A plain HTTP/1.1 request; returns (status code, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect HTTP");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status_line = head.lines().next().unwrap();
    let mut parts = status_line.split(' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let code = parts.next().unwrap().parse().unwrap();
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

async fn http_healthz(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    assert_eq!(
        http_get(srv.http_addr, "/healthz").await,
        (200, "ok".to_owned())
    );
    assert_eq!(http_get(srv.http_addr, "/no-such-path").await.0, 404);
    srv.finish().await;
}

on_both_backends!(
    health_serving_without_a_key,
    reflection_v1_and_v1alpha,
    http_healthz
);
