//! The `agentry` binary itself (SQLite only): `migrate`, `keys create|generate`, and `serve` with its
//! bootstrap key, `AGENTRY_BOOTSTRAP_KEY`, and a clean exit on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use agentry::pb::{
    CreateAgentRequest, GetAgentRequest, ListAgentsRequest,
    agent_service_client::AgentServiceClient,
};
use common::{Auth, agent, expect_code};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const BIN: &str = env!("CARGO_BIN_EXE_agentry");
const BOOTSTRAP_LINE: &str = "Created workspace \"default\". Its admin key (shown once): ";

/// `agentry <args>` with a clean environment (no inherited `AGENTRY_*`).
fn agentry(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AGENTRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

fn run(args: &[&str]) -> Output {
    agentry(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agentry")
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("a.db").display())
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("UTF-8 output")
}

/// A well-formed key: "agk_" and 44 letters or digits.
fn assert_key(k: &str) {
    assert!(
        k.len() == 48 && k.starts_with("agk_") && k[4..].bytes().all(|b| b.is_ascii_alphanumeric()),
        "not a key: {k:?}"
    );
}

/// `keys create` on `url`; returns the key after checking stdout is that key alone.
fn keys_create(url: &str, workspace: &str, scopes: &str) -> String {
    let out = run(&[
        "keys",
        "create",
        "--workspace",
        workspace,
        "--scopes",
        scopes,
        "--name",
        "ci",
        "--database-url",
        url,
    ]);
    assert!(
        out.status.success(),
        "keys create failed: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {stdout:?}");
    assert_eq!(stdout, format!("{}\n", lines[0]), "nothing else on stdout");
    assert_key(lines[0]);
    lines[0].to_owned()
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap()
}

/// A running `agentry serve`; killed on drop if a test fails before stopping it.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    grpc: SocketAddr,
}

impl Serve {
    fn start(url: &str, bootstrap_key: Option<&str>) -> Serve {
        let (grpc, http) = (free_addr(), free_addr());
        let mut cmd = agentry(&[
            "serve",
            "--grpc-addr",
            &grpc.to_string(),
            "--http-addr",
            &http.to_string(),
            "--database-url",
            url,
        ]);
        if let Some(k) = bootstrap_key {
            cmd.env("AGENTRY_BOOTSTRAP_KEY", k);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve { child, lines, grpc }
    }

    /// The next stdout line, within 30 s.
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line on stdout from `agentry serve`")
    }

    /// Waits (30 s at most) until the health check answers SERVING.
    async fn ready(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = Channel::from_shared(format!("http://{}", self.grpc))
                .unwrap()
                .connect()
                .await
            {
                let mut h = HealthClient::new(ch.clone());
                if let Ok(r) = h
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    && r.into_inner().status == ServingStatus::Serving as i32
                {
                    return ch;
                }
            }
            assert!(
                Instant::now() < deadline,
                "`agentry serve` did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and returns the exit status (10 s at most) and the rest of stdout.
    async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "`agentry serve` did not exit within 10 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            rest.push(l);
        }
        (status, rest)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client(
    ch: Channel,
    key: &str,
) -> AgentServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>> {
    AgentServiceClient::with_interceptor(ch, Auth::bearer(key))
}

#[test]
fn migrate_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    for _ in 0..2 {
        let out = run(&["migrate", "--database-url", &url]);
        assert!(
            out.status.success(),
            "migrate failed: {}",
            text(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "migrate prints nothing on stdout: {:?}",
            text(&out.stdout)
        );
    }
    assert!(dir.path().join("a.db").exists());
}

#[test]
fn keys_create_prints_the_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let a = keys_create(&url, "acme", "agents:read,agents:write");
    let b = keys_create(&url, "acme", "admin");
    assert_ne!(a, b);
}

#[test]
fn keys_create_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    for (workspace, scopes, needle) in [
        ("acme", "agents:read,agents:fly", "agents:fly"),
        ("acme", "", "scope"),
        ("Not A Slug", "agents:read", "workspace"),
    ] {
        let out = run(&[
            "keys",
            "create",
            "--workspace",
            workspace,
            "--scopes",
            scopes,
            "--database-url",
            &url,
        ]);
        assert!(!out.status.success(), "{workspace}/{scopes}: should fail");
        assert!(
            out.stdout.is_empty(),
            "no key on stdout: {:?}",
            text(&out.stdout)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(needle),
            "{workspace}/{scopes}: stderr names the problem: {err:?}"
        );
    }
    // A missing required flag is a usage error.
    let out = run(&[
        "keys",
        "create",
        "--workspace",
        "acme",
        "--database-url",
        &url,
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--scopes"));
}

#[test]
fn keys_generate_prints_a_key() {
    let mut seen = Vec::new();
    for _ in 0..2 {
        let out = run(&["keys", "generate"]);
        assert!(out.status.success());
        let stdout = text(&out.stdout);
        assert!(
            stdout.ends_with('\n') && stdout.lines().count() == 1,
            "{stdout:?}"
        );
        let key = stdout.trim_end().to_owned();
        assert_key(&key);
        seen.push(key);
    }
    assert_ne!(seen[0], seen[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_its_admin_key_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let srv = Serve::start(&url, None);
    let line = srv.next_line();
    let key = line
        .strip_prefix(BOOTSTRAP_LINE)
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    assert_key(key);
    let ch = srv.ready().await;
    let mut c = client(ch.clone(), key);
    let created = c
        .create_agent(CreateAgentRequest {
            agent: Some(agent("first")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((created.id.as_str(), created.version), ("first", 1));

    // A key made by the CLI on the same database works against the running server.
    let acme = keys_create(&url, "acme", "agents:read,agents:write");
    let mut a = client(ch.clone(), &acme);
    a.create_agent(CreateAgentRequest {
        agent: Some(agent("theirs")),
    })
    .await
    .unwrap();
    let ids: Vec<String> = a
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(ids, ["theirs"], "the key belongs to workspace acme");
    expect_code(
        a.get_agent(GetAgentRequest { id: "first".into() }).await,
        Code::NotFound,
    );
    let mut bad = client(ch, "agk_00000000000000000000000000000000000000000000");
    expect_code(
        bad.list_agents(ListAgentsRequest::default()).await,
        Code::Unauthenticated,
    );

    let (status, rest) = srv.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(
        rest.iter().all(|l| !l.contains("agk_")),
        "the key is printed once: {rest:?}"
    );

    // Serving again on the same database prints no key, and the first key still works.
    let srv = Serve::start(&url, None);
    let ch = srv.ready().await;
    let mut c = client(ch, key);
    assert_eq!(
        c.get_agent(GetAgentRequest { id: "first".into() })
            .await
            .unwrap()
            .into_inner(),
        created
    );
    let (status, lines) = srv.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(
        lines.is_empty(),
        "nothing on stdout when the database has data: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_bootstrap_key_from_env() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let key = run(&["keys", "generate"]);
    let key = text(&key.stdout).trim_end().to_owned();
    let srv = Serve::start(&url, Some(&key));
    let ch = srv.ready().await;
    let mut c = client(ch, &key);
    c.create_agent(CreateAgentRequest {
        agent: Some(agent("scripted")),
    })
    .await
    .unwrap();
    assert_eq!(
        c.list_agents(ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents
            .len(),
        1
    );
    let (status, lines) = srv.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(
        lines.iter().all(|l| !l.contains("agk_")),
        "the preset key is not printed: {lines:?}"
    );
}

#[test]
fn serve_rejects_an_invalid_bootstrap_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let (grpc, http) = (free_addr().to_string(), free_addr().to_string());
    let mut cmd = agentry(&[
        "serve",
        "--grpc-addr",
        &grpc,
        "--http-addr",
        &http,
        "--database-url",
        &url,
    ]);
    cmd.env("AGENTRY_BOOTSTRAP_KEY", "not-a-key")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`agentry serve` kept running with an invalid AGENTRY_BOOTSTRAP_KEY");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{:?}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("AGENTRY_BOOTSTRAP_KEY") && err.contains("agentry keys generate"),
        "stderr: {err:?}"
    );
}
