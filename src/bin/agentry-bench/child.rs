//! The server under load as a child process: `agentry serve` on free ports and its own database.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    Res,
    grpc::{connect, status_text},
};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `agentry serve` child process; stopped (SIGTERM, then SIGKILL) and its temp dir removed on drop.
pub struct ChildServer {
    child: Child,
    dir: Option<PathBuf>,
}

impl ChildServer {
    /// The child, its gRPC URL, its HTTP address (host:port) and its backend.
    pub fn start(
        database_url: Option<&str>,
        key: &str,
    ) -> Res<(ChildServer, String, String, &'static str)> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate this executable: {e}"))?
            .with_file_name("agentry");
        if !exe.is_file() {
            return Err(format!(
                "{} not found: build it first (cargo build --release --bin agentry)",
                exe.display()
            ));
        }
        let (url, dir) = match database_url {
            Some(url) => {
                // Only the part after the credentials: the URL may hold a password.
                let shown = url.rsplit('@').next().unwrap_or(url);
                println!("database: {shown} (given with --database-url)");
                (url.to_owned(), None)
            }
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let dir = std::env::temp_dir()
                    .join(format!("agentry-bench-{}-{nanos}", std::process::id()));
                std::fs::create_dir(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let url = format!("sqlite://{}?mode=rwc", dir.join("agentry.db").display());
                println!("database: fresh SQLite file {url} (removed afterwards)");
                (url, Some(dir))
            }
        };
        let backend = match url.split_once(':').map(|(s, _)| s) {
            Some("sqlite") => "sqlite",
            Some("postgres" | "postgresql") => "postgres",
            _ => "other",
        };
        // Two listeners held at once, so the ports differ; released just before the child binds them.
        let bind =
            || TcpListener::bind("127.0.0.1:0").and_then(|l| Ok((l.local_addr()?.port(), l)));
        let ((grpc_port, l1), (http_port, l2)) = bind()
            .and_then(|g| Ok((g, bind()?)))
            .map_err(|e| format!("no free port: {e}"))?;
        drop((l1, l2));
        let child = Command::new(&exe)
            .args(["serve", "--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--database-url", &url])
            .env("AGENTRY_BOOTSTRAP_KEY", key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        let child = child.map_err(|e| {
            let _ = dir.as_ref().map(std::fs::remove_dir_all);
            format!("cannot start {}: {e}", exe.display())
        })?;
        println!("server: {} (pid {})", exe.display(), child.id());
        let server = ChildServer { child, dir };
        Ok((
            server,
            format!("http://127.0.0.1:{grpc_port}"),
            format!("127.0.0.1:{http_port}"),
            backend,
        ))
    }

    /// Waits until gRPC health answers SERVING, failing early if the child exits.
    pub async fn wait_ready(&mut self, addr: &str) -> Res<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the server exited during start-up ({status}); see its log above"
                ));
            }
            match connect(addr).await {
                Ok(ch) => {
                    let req = HealthCheckRequest {
                        service: String::new(),
                    };
                    match HealthClient::new(ch).check(req).await {
                        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => {
                            return Ok(());
                        }
                        Ok(r) => last = format!("health status {}", r.get_ref().status),
                        Err(s) => last = status_text(&s),
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the server was not SERVING within {READY_TIMEOUT:?}: {last}"
        ))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("agentry-bench: the server ignored SIGTERM; killing it");
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
