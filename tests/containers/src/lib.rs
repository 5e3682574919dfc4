//! Support for the container tests in `tests/`: image checks, small docker CLI helpers, and a way
//! to run testcontainers against an older Docker Engine.
//!
//! testcontainers (through bollard) speaks Docker API 1.49 and does not negotiate. Debian 12's
//! `docker.io` is Engine 20.10, whose newest API is 1.41, and it refuses newer clients. When the
//! engine is older than the client, [`run`] starts an in-process relay from a loopback TCP port
//! to the engine's socket that rewrites the version in each request line (`/v1.49/` becomes
//! `/v1.41/`, same length, so nothing else in the stream changes), then runs the test again in a
//! child process with `DOCKER_HOST` pointing at the relay (setting the variable in this process
//! would need `unsafe`). On a newer engine the test just runs.

use std::{
    future::Future,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::Command,
    thread,
};

/// The images `scripts/build-images` makes, which these tests run.
pub const IMAGES: [&str; 4] = [
    "authz:local",
    "authz-standin:local",
    "authz-envoy:local",
    "authz-demo-mcp:local",
];

/// The Docker API version this testcontainers release sends.
const CLIENT_API_MINOR: u32 = 49;
/// Set in the child process that runs a test through the relay.
const RELAYED: &str = "AUTHZ_CONTAINER_TESTS_RELAYED";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a docker (or docker-compose) command; panics with its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fails the test, with what to do, when an image is missing.
pub fn require_images() {
    for image in IMAGES {
        let found = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "image {image} is missing: run scripts/build-images first (scripts/test does)"
        );
    }
}

/// The uid the container's first process runs as, as the host sees it.
pub fn process_uid(container: &str) -> u32 {
    let top = sh("docker", &["top", container, "-o", "pid,uid"]);
    let uid = top
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("docker top {container}: no process:\n{top}"));
    uid.trim()
        .parse()
        .unwrap_or_else(|_| panic!("docker top {container}: not a uid: {uid:?}"))
}

/// A name unique to this test run, for networks, containers and compose projects.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Runs a testcontainers test: directly when the engine speaks testcontainers' API version,
/// otherwise in a child process through the version relay. `test` is the test's own name.
pub fn run<F: Future<Output = ()>>(test: &str, body: impl FnOnce() -> F) {
    let engine = engine_api_minor();
    if std::env::var_os(RELAYED).is_some() || engine >= CLIENT_API_MINOR {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body());
        return;
    }
    let relay = start_relay(engine);
    let exe = std::env::current_exe().expect("own executable");
    let status = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("DOCKER_HOST", format!("tcp://{relay}"))
        .env(RELAYED, "1")
        .status()
        .expect("re-running the test through the relay");
    assert!(status.success(), "{test} failed (see its output above)");
}

fn docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// The minor number of the newest API version the engine speaks (GET /version, unversioned).
fn engine_api_minor() -> u32 {
    let socket = docker_socket();
    let mut stream = UnixStream::connect(&socket).unwrap_or_else(|e| {
        panic!(
            "cannot reach the Docker Engine at {}: {e} (is dockerd running?)",
            socket.display()
        )
    });
    stream
        .write_all(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
        .expect("asking the engine its version");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the engine's version");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let version: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("engine /version: {e}: {body}"));
    let api = version["ApiVersion"].as_str().unwrap_or_default();
    api.strip_prefix("1.")
        .and_then(|minor| minor.parse().ok())
        .unwrap_or_else(|| panic!("engine /version: unexpected ApiVersion {api:?}"))
}

/// A loopback TCP relay to the engine's socket that rewrites ` /v1.NN/` (NN newer than the
/// engine) to the engine's version in what the client sends. Lives until the process exits.
fn start_relay(engine_minor: u32) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the relay");
    let addr = listener.local_addr().expect("relay address");
    let socket = docker_socket();
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(engine) = UnixStream::connect(&socket) else {
                continue;
            };
            let (Ok(client_read), Ok(engine_write)) = (client.try_clone(), engine.try_clone())
            else {
                continue;
            };
            thread::spawn(move || pump_rewriting(client_read, engine_write, engine_minor));
            thread::spawn(move || {
                let (mut engine, mut client) = (engine, client);
                let _ = std::io::copy(&mut engine, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// ` /v1.` then two digits then `/`: the version in a request line.
const PATTERN_LEN: usize = 8;

fn pump_rewriting(mut from: TcpStream, mut to: UnixStream, engine_minor: u32) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        rewrite_versions(&mut pending, engine_minor);
        // Hold back only a tail that could be the start of a version split across reads.
        let hold = (1..PATTERN_LEN)
            .rev()
            .find(|&k| k <= pending.len() && could_start_pattern(&pending[pending.len() - k..]))
            .unwrap_or(0);
        let flush = pending.len() - hold;
        if to.write_all(&pending[..flush]).is_err() {
            return;
        }
        pending.drain(..flush);
    }
    let _ = to.write_all(&pending);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn matches_at(window: &[u8], i: usize) -> bool {
    let expected = b" /v1.";
    match i {
        0..=4 => window[i] == expected[i],
        5 | 6 => window[i].is_ascii_digit(),
        _ => window[i] == b'/',
    }
}

fn could_start_pattern(tail: &[u8]) -> bool {
    tail.iter().enumerate().all(|(i, _)| matches_at(tail, i))
}

fn rewrite_versions(data: &mut [u8], engine_minor: u32) {
    let replacement = format!("{engine_minor:02}");
    let mut i = 0;
    while i + PATTERN_LEN <= data.len() {
        let window = &data[i..i + PATTERN_LEN];
        if (0..PATTERN_LEN).all(|j| matches_at(window, j)) {
            let minor = u32::from(window[5] - b'0') * 10 + u32::from(window[6] - b'0');
            if minor > engine_minor && replacement.len() == 2 {
                data[i + 5..i + 7].copy_from_slice(replacement.as_bytes());
            }
            i += PATTERN_LEN;
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_rewrites_only_newer_versions_in_request_lines() {
        let mut data = b"GET /v1.49/containers/json HTTP/1.1\r\nX: /v1.30/\r\n\r\n".to_vec();
        rewrite_versions(&mut data, 41);
        assert_eq!(
            data,
            b"GET /v1.41/containers/json HTTP/1.1\r\nX: /v1.30/\r\n\r\n".to_vec()
        );
        assert!(could_start_pattern(b" /v1.4"));
        assert!(!could_start_pattern(b"\r\n"));
    }
}
