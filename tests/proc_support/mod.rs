//! The real `agentry` binary as a child process, for crash tests (`kill -9`) that an in-process
//! server cannot stage.

#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::Channel;

pub struct Proc {
    pub child: Child,
    pub port: u16,
}

/// A failed assertion must not leave a server running.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn spawn(db_url: &str, key: &str) -> Proc {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_agentry"))
        .args([
            "serve",
            "--grpc-addr",
            &format!("127.0.0.1:{port}"),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--database-url", db_url])
        .env("AGENTRY_BOOTSTRAP_KEY", key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn agentry");
    Proc { child, port }
}

pub async fn connect(p: &Proc) -> Channel {
    let start = Instant::now();
    loop {
        if let Ok(c) = Channel::from_shared(format!("http://127.0.0.1:{}", p.port))
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
