//! A soak: the release gateway, as its own process, under a mix of good and
//! bad requests for a while, with descriptor reloads (good and refused) and
//! upstream restarts along the way (at each fifth of the run, so that one
//! falls in the last third, where a leak per restart would show). Prints the gateway's RSS at intervals
//! and the answers by status; fails if memory is not flat (the mean RSS of
//! the last third of the run more than 5% above the middle third's) or if
//! anything but the expected statuses came back.
//!
//!     cargo build --release
//!     cargo run --release --example soak [-- SECONDS [CLIENTS]]
//!
//! Defaults: 60 s, 8 clients (half HTTP/1.1, half HTTP/2). `SOAK_GATEWAY`
//! names the binary (default `target/release/protogate`), `SOAK_CSV` a file
//! for the RSS samples (`seconds,rss_kib,requests`), `SOAK_SAMPLE` the
//! sampling interval in seconds (default 10).

#[path = "backends/mod.rs"]
mod backends;

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::service::Routes;

type BoxError = Box<dyn Error + Send + Sync>;

const API_KEY: &str = "soak-key";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Answers by status, shared by the clients.
#[derive(Default)]
struct Tally {
    by_status: Mutex<BTreeMap<u16, u64>>,
    /// Transport errors (connection refused, reset): status 0.
    total: AtomicU64,
}

impl Tally {
    fn add(&self, local: &mut BTreeMap<u16, u64>) {
        let mut shared = self.by_status.lock().unwrap_or_else(|e| e.into_inner());
        for (status, n) in std::mem::take(local) {
            *shared.entry(status).or_default() += n;
        }
    }

    fn snapshot(&self) -> BTreeMap<u16, u64> {
        self.by_status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One kind of request and the statuses it may get.
struct Case {
    method: reqwest::Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Body,
    expected: &'static [u16],
}

enum Body {
    None,
    Text(&'static str),
    /// That many bytes of JSON-ish filler: over `limits.max_body`.
    Large(usize),
}

fn cases() -> Vec<Case> {
    use reqwest::Method;
    // 502/503/504 are expected of any upstream call: the users backend is
    // restarted mid-run; 404 of orders routes while a reload removes them.
    vec![
        Case {
            method: Method::GET,
            path: "/v1/users/1001",
            headers: &[],
            body: Body::None,
            expected: &[200, 503, 502],
        },
        Case {
            method: Method::GET,
            path: "/v1/users?pageSize=2",
            headers: &[],
            body: Body::None,
            expected: &[200, 503, 502],
        },
        Case { method: Method::GET, path: "/v2/users/1001", headers: &[], body: Body::None, expected: &[200] },
        Case {
            method: Method::GET,
            path: "/v1/orders/5001",
            headers: &[("x-api-key", API_KEY)],
            body: Body::None,
            expected: &[200, 404],
        },
        // Credentials: missing, wrong, two of them.
        Case { method: Method::GET, path: "/v1/orders/5001", headers: &[], body: Body::None, expected: &[401, 404] },
        Case {
            method: Method::GET,
            path: "/v1/orders/5001",
            headers: &[("x-api-key", "wrong")],
            body: Body::None,
            expected: &[401, 404],
        },
        Case {
            method: Method::GET,
            path: "/v1/orders/5001",
            headers: &[("x-api-key", API_KEY), ("x-api-key", "wrong")],
            body: Body::None,
            expected: &[400, 404],
        },
        // Bad bodies: malformed, unknown field, out of range, too large.
        Case {
            method: Method::POST,
            path: "/v1/users",
            headers: &[("content-type", "application/json")],
            body: Body::Text(r#"{"displayName": "#),
            expected: &[400],
        },
        Case {
            method: Method::POST,
            path: "/v1/users",
            headers: &[("content-type", "application/json")],
            body: Body::Text(r#"{"displayName": "Soak", "nope": 1}"#),
            expected: &[400],
        },
        Case {
            method: Method::POST,
            path: "/v1/users",
            headers: &[("content-type", "application/json")],
            body: Body::Text(r#"{"displayName": "Soak", "email": "soak@example.com"}"#),
            expected: &[200, 409, 503, 502],
        },
        Case { method: Method::POST, path: "/v1/users", headers: &[], body: Body::Large(96 * 1024), expected: &[413] },
        Case {
            method: Method::GET,
            path: "/v1/users/1001?loginCount=18446744073709551616",
            headers: &[],
            body: Body::None,
            expected: &[400],
        },
        // No such route, wrong method, a bad percent-encoding.
        Case { method: Method::GET, path: "/v1/nothing/here", headers: &[], body: Body::None, expected: &[404] },
        Case { method: Method::PUT, path: "/v1/users/1001", headers: &[], body: Body::None, expected: &[405] },
        Case {
            method: Method::GET,
            path: "/v1/users/%zz",
            headers: &[],
            body: Body::None,
            expected: &[400, 404, 503, 502],
        },
        // Rate limited: 20/s for everyone together.
        Case {
            method: Method::POST,
            path: "/v1/users/1002:deactivate",
            headers: &[],
            body: Body::None,
            expected: &[200, 429, 503, 502, 409, 400],
        },
    ]
}

async fn run() -> Result<bool, BoxError> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);
    let clients: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let sample = Duration::from_secs(std::env::var("SOAK_SAMPLE").ok().map(|s| s.parse()).transpose()?.unwrap_or(10));
    let binary = std::env::var("SOAK_GATEWAY").unwrap_or_else(|_| "target/release/protogate".into());
    let run_for = Duration::from_secs(seconds);

    // Backends, in this process.
    let users = TcpListener::bind("127.0.0.1:0").await?;
    let users_addr = users.local_addr()?;
    let orders = TcpListener::bind("127.0.0.1:0").await?;
    let users_v2 = TcpListener::bind("127.0.0.1:0").await?;
    let (orders_addr, users_v2_addr) = (orders.local_addr()?, users_v2.local_addr()?);
    let (stop_all, all_stopped) = watch::channel(false);
    tokio::spawn(backends::serve(orders, Routes::new(backends::orders_v1()), stopped(all_stopped.clone())));
    tokio::spawn(backends::serve(users_v2, Routes::new(backends::users_v2()), stopped(all_stopped.clone())));
    let (stop_users, users_stopped) = watch::channel(false);
    let users_task = tokio::spawn(backends::serve(users, Routes::new(backends::users_v1()), stopped(users_stopped)));

    // The gateway, as its own process, over a copy of the descriptors.
    let work = tempfile::tempdir()?;
    let descriptors = work.path().join("descriptors");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("descriptors"), &descriptors)?;
    let listen = free_port().await?;
    let admin = free_port().await?;
    let config = work.path().join("protogate.yaml");
    std::fs::write(&config, config_text(listen, admin, &descriptors, users_addr, orders_addr, users_v2_addr))?;
    let gateway = std::process::Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {binary}: {e} (cargo build --release first, or set SOAK_GATEWAY)"))?;
    let mut gateway = KillOnDrop(gateway);
    let pid = gateway.0.id();
    let base = format!("http://{listen}");
    wait_ready(&base).await?;
    println!("soak: gateway pid {pid} on {listen}, {clients} clients for {seconds} s");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let cases = Arc::new(cases());
    let unexpected = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = if i % 2 == 0 {
            reqwest::Client::builder().http1_only().build()?
        } else {
            reqwest::Client::builder().http2_prior_knowledge().build()?
        };
        let (tally, stop, cases, unexpected, base) =
            (tally.clone(), stop.clone(), cases.clone(), unexpected.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = BTreeMap::new();
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let case = &cases[n % cases.len()];
                n += 1;
                let status = send(&client, &base, case).await;
                *local.entry(status).or_default() += 1;
                tally.total.fetch_add(1, Ordering::Relaxed);
                if !case.expected.contains(&status) {
                    let key = format!("{} {} -> {status}", case.method, case.path);
                    *unexpected.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
                }
                if n % 64 == 0 {
                    tally.add(&mut local);
                }
            }
            tally.add(&mut local);
        }));
    }
    // Now and then a connection that never speaks, dropped after a while.
    let silent = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut stream) = TcpStream::connect(listen).await {
                    let _ = stream.write_all(b"GET /v1/us").await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        })
    };

    // The schedule: reloads every 20 s (a good one that removes orders, one
    // that restores them, a refused garbage file), the users backend down
    // for 3 s at each fifth of the run; RSS sampled throughout.
    let start = Instant::now();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut next_reload = Duration::from_secs(20);
    let mut reload_step = 0u32;
    let mut restarts = 0u32;
    let orders_set = descriptors.join("v1/orders.binpb");
    let parked = work.path().join("orders.binpb");
    let garbage = descriptors.join("v1/garbage.binpb");
    let mut users_task = Some(users_task);
    let mut stop_users = Some(stop_users);
    while start.elapsed() < run_for {
        let now = start.elapsed();
        if now >= next_sample {
            let rss = rss_kib(pid)?;
            let requests = tally.total.load(Ordering::Relaxed);
            println!("t={:>5.0}s rss={rss} KiB requests={requests} {:?}", now.as_secs_f64(), tally.snapshot());
            samples.push((now.as_secs_f64(), rss, requests));
            next_sample += sample;
        }
        if now >= next_reload {
            match reload_step % 3 {
                0 => std::fs::rename(&orders_set, &parked)?,
                1 => std::fs::rename(&parked, &orders_set)?,
                _ => {
                    std::fs::write(&garbage, b"not a descriptor set")?;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    std::fs::remove_file(&garbage)?;
                }
            }
            reload_step += 1;
            next_reload += Duration::from_secs(20);
        }
        if restarts < 4 && now >= run_for * (restarts + 1) / 5 {
            restarts += 1;
            if let (Some(stop), Some(task)) = (stop_users.take(), users_task.take()) {
                let _ = stop.send(true);
                let _ = task.await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                let listener = TcpListener::bind(users_addr).await?;
                let (again, stopped_again) = watch::channel(false);
                stop_users = Some(again);
                users_task = Some(tokio::spawn(backends::serve(
                    listener,
                    Routes::new(backends::users_v1()),
                    stopped(stopped_again),
                )));
                println!("t={:>5.0}s users backend restarted", start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    silent.abort();
    let rss = rss_kib(pid)?;
    samples.push((start.elapsed().as_secs_f64(), rss, tally.total.load(Ordering::Relaxed)));
    let alive = gateway.0.try_wait()?.is_none();
    drop(gateway);
    if let Some(stop) = stop_users {
        let _ = stop.send(true);
    }
    let _ = stop_all.send(true);

    if let Ok(path) = std::env::var("SOAK_CSV") {
        let mut csv = String::from("seconds,rss_kib,requests\n");
        for (t, rss, n) in &samples {
            csv.push_str(&format!("{t:.0},{rss},{n}\n"));
        }
        std::fs::write(path, csv)?;
    }
    let unexpected = unexpected.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report(&samples, &tally.snapshot(), &unexpected, alive)
}

/// The verdict: memory flat, the gateway alive, nothing unexpected.
fn report(
    samples: &[(f64, u64, u64)],
    by_status: &BTreeMap<u16, u64>,
    unexpected: &BTreeMap<String, u64>,
    alive: bool,
) -> Result<bool, BoxError> {
    let total: u64 = by_status.values().sum();
    println!("\nanswers: {total} in all");
    for (status, n) in by_status {
        let label = if *status == 0 { "transport error".to_owned() } else { status.to_string() };
        println!("  {label:>15}: {n}");
    }
    let third = samples.len() / 3;
    let mean = |part: &[(f64, u64, u64)]| part.iter().map(|s| s.1 as f64).sum::<f64>() / part.len().max(1) as f64;
    let (middle, last) = (mean(&samples[third..2 * third]), mean(&samples[2 * third..]));
    let growth = if middle > 0.0 { last / middle - 1.0 } else { 0.0 };
    println!("rss: middle third {middle:.0} KiB, last third {last:.0} KiB ({:+.1}%)", growth * 100.0);
    let mut ok = true;
    if third == 0 {
        println!("too few samples to judge memory: run longer or sample more often");
        ok = false;
    } else if growth > 0.05 {
        println!("FAIL: memory grew by more than 5%");
        ok = false;
    }
    if !alive {
        println!("FAIL: the gateway exited during the run");
        ok = false;
    }
    if !unexpected.is_empty() {
        println!("FAIL: unexpected answers:");
        for (what, n) in unexpected {
            println!("  {what}: {n}");
        }
        ok = false;
    }
    Ok(ok)
}

async fn send(client: &reqwest::Client, base: &str, case: &Case) -> u16 {
    let mut request = client.request(case.method.clone(), format!("{base}{}", case.path));
    for (name, value) in case.headers {
        request = request.header(*name, *value);
    }
    request = match &case.body {
        Body::None => request,
        Body::Text(text) => request.body(*text),
        Body::Large(n) => request.body(format!("{{\"displayName\": \"{}\"}}", "x".repeat(*n))),
    };
    match request.timeout(Duration::from_secs(10)).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the body: the whole exchange is what is soaked.
            let _ = response.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    descriptors: &Path,
    users: SocketAddr,
    orders: SocketAddr,
    users_v2: SocketAddr,
) -> String {
    let digest: String = Sha256::digest(API_KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!(
        r#"listen: {listen}
admin:
  listen: {admin}
descriptors: {descriptors}
upstreams:
  acme.users.v1: http://{users}
  acme.orders.v1: http://{orders}
  acme.users.v2: http://{users_v2}
limits:
  max_body: 64KiB
auth:
  api_keys:
    keys:
      - {{ id: soak, sha256: {digest} }}
policies:
  default: public
  rules:
    - {{ name: orders, path_prefix: /v1/orders, allow: authenticated }}
rate_limits:
  rules:
    - {{ name: deactivate, match: {{ method: acme.users.v1.UserService/DeactivateUser }}, key: route, rate: 20/s, burst: 20 }}
"#,
        descriptors = descriptors.display()
    )
}

async fn wait_ready(base: &str) -> Result<(), BoxError> {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/v2/users/1001")).send().await {
            if response.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the gateway did not answer within 10 s".into())
}

/// The resident set of process `pid`, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS line")?;
    Ok(line.split_whitespace().nth(1).ok_or("no VmRSS value")?.parse()?)
}

async fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The gateway process, killed when the soak ends however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
