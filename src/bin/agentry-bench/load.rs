//! The closed loop: one task per connection of the workload, each issuing one call, waiting for its
//! answer, recording its latency and issuing the next, for the length of a phase; then the figures.

use std::time::{Duration, Instant};

use crate::{
    Res, Rpc,
    agents::{self, HttpGetAgent},
    flows,
    grpc::{Client, FlowClient, RunClient, status_text},
    runs::{self, HttpRun},
};

/// What one call measured.
pub struct Sample {
    /// From the call's start to its answer (for a run, to its `run_completed` event).
    pub latency: Duration,
    /// For a run: from StartRun's answer to the first event of WatchRun.
    pub first_event: Option<Duration>,
}

/// A connection of one load task: a (cloned, multiplexed) gRPC client, or its own HTTP/1.1 connection.
pub enum Conn {
    Grpc(Client),
    Http(HttpGetAgent),
    Run(RunClient, &'static str),
    HttpRun(HttpRun),
    Flow(FlowClient),
}

/// Reads a watch stream to its end: the sample of a whole run (or flow run) whose last event is the
/// completed one. `t0` is when the run was requested, `started` when that request was answered.
pub async fn follow<E: std::fmt::Debug>(
    mut stream: tonic::Streaming<E>,
    t0: Instant,
    started: Instant,
    completed_by: impl Fn(&E) -> bool,
) -> Res<Sample> {
    let (mut first, mut completed, mut last) = (None, None, None);
    while let Some(ev) = stream.message().await.map_err(|s| status_text(&s))? {
        let now = Instant::now();
        first.get_or_insert(now - started);
        completed = completed_by(&ev).then(|| now - t0);
        last = Some(ev);
    }
    match completed {
        Some(latency) => Ok(Sample {
            latency,
            first_event: first,
        }),
        None => Err(format!("the run ended with {last:?}")),
    }
}

impl Conn {
    /// One call of the benchmarked RPC.
    pub async fn call(&mut self, rpc: Rpc) -> Res<Sample> {
        let t = Instant::now();
        match self {
            Conn::Grpc(c) => agents::call(c, rpc)
                .await
                .map_err(|s| status_text(&s))
                .map(|_| Sample {
                    latency: t.elapsed(),
                    first_event: None,
                }),
            Conn::Http(h) => h.get().await.map(|_| Sample {
                latency: t.elapsed(),
                first_event: None,
            }),
            Conn::Run(c, agent) => runs::grpc_run(c, agent).await,
            Conn::HttpRun(h) => h.run().await,
            Conn::Flow(c) => flows::run(c).await,
        }
    }
}

/// Figures of one phase: requests/s, then p50, p90, p99, p99.9 and max in ms, of the latency and (runs)
/// of the first event.
pub struct Stats {
    pub rps: f64,
    pub ms: [f64; 5],
    pub first_ms: Option<[f64; 5]>,
    pub errors: u64,
}

/// Runs one closed-loop task per connection for `length`; returns their figures, the first error, and
/// the connections (to reuse).
pub async fn phase(
    conns: Vec<Conn>,
    rpc: Rpc,
    length: Duration,
    cap: usize,
) -> Res<(Stats, Option<String>, Vec<Conn>)> {
    let start = Instant::now();
    let end = start + length;
    let first_cap = if rpc.is_run() { cap } else { 0 };
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut latencies = Vec::<u32>::with_capacity(cap);
                let mut firsts = Vec::<u32>::with_capacity(first_cap);
                let (mut errors, mut first_error) = (0u64, None);
                while Instant::now() < end {
                    match conn.call(rpc).await {
                        Ok(s) => {
                            latencies.push(micros(s.latency));
                            if let Some(f) = s.first_event {
                                firsts.push(micros(f));
                            }
                        }
                        Err(s) => {
                            errors += 1;
                            first_error.get_or_insert(s);
                        }
                    }
                }
                (latencies, firsts, errors, first_error, conn)
            })
        })
        .collect();
    let (mut lat, mut firsts) = (Vec::new(), Vec::new());
    let (mut errors, mut first_error, mut conns) = (0, None, Vec::new());
    for task in tasks {
        let (l, f, e, first, conn) = task.await.map_err(|e| format!("a load task failed: {e}"))?;
        lat.extend_from_slice(&l);
        firsts.extend_from_slice(&f);
        errors += e;
        first_error = first_error.or(first);
        conns.push(conn);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rps = lat.len() as f64 / elapsed;
    let stats = Stats {
        rps,
        ms: percentiles(lat),
        first_ms: rpc.is_run().then(|| percentiles(firsts)),
        errors,
    };
    Ok((stats, first_error, conns))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// p50, p90, p99, p99.9 and max in ms of latencies in µs.
fn percentiles(mut lat: Vec<u32>) -> [f64; 5] {
    lat.sort_unstable();
    // Nearest rank: the smallest latency with at least a fraction p of the samples at or below it.
    let pct = |p: f64| match lat.len() {
        0 => 0.0,
        n => f64::from(lat[((p * n as f64).ceil() as usize).clamp(1, n) - 1]) / 1000.0,
    };
    [pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1.0)]
}
