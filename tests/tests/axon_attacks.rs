//! Attacks on the axon, against the real `miner-predictor` binary with the real ONNX Runtime.
//!
//! The axon listens on a public port holding the hotkey, so each test reproduces one way an
//! internet host (or an admitted validator gone wrong) could take it down or learn from it, and
//! proves the bound that stops it (issue 17). Figures (latencies, memory) are printed for
//! BENCHMARKS.md: run with `--nocapture` to see them.
//!
//! Memory is the predictor's peak RSS (`VmHWM`), reset before each phase through
//! `/proc/PID/clear_refs`, so a test sees the worst moment, not the last.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use taominer_tests::axon::{base64, make_images, make_model, Spoil};
use taominer_tests::predictor::{key, Setup};
use taominer_tests::*;

/// Raises this process's soft fd limit (the predictor inherits it), so both sides can hold
/// thousands of sockets; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// A TCP connection to `to` from the loopback address `from` (any 127.x address is ours on
/// Linux): how one test plays many hosts.
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with properly sized sockaddr_in values; the fd
    // is owned by the TcpStream from then on (or closed on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let src = sockaddr(SocketAddrV4::new(from, 0));
        let dst = sockaddr(to);
        if libc::bind(fd, &src as *const _ as *const libc::sockaddr, len) != 0
            || libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// The predictor's peak RSS since the last reset, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// The start of an answer's body, for assertion messages (some echo megabytes).
fn short(body: &serde_json::Value) -> String {
    body.to_string().chars().take(300).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `n` sequential validator queries, each on a new connection (so that each must get through
/// accept); every one must be answered 200. Returns the latencies, sorted.
fn validator_queries(s: &Setup, seed: u8, b64: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    let mut c = s.client(seed, "validator");
    for _ in 0..n {
        c.disconnect();
        let t = Instant::now();
        let a = c.query(b64, Spoil::None).expect("validator query");
        times.push(t.elapsed());
        assert_eq!(a.status, 200, "{}", short(&a.body));
    }
    times.sort();
    times
}

/// Sockets the process holds open (its `/proc/PID/fd` entries that are sockets).
fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn start_image_axon(s: &mut Setup, validators: &[u8], extra: &[String]) -> String {
    make_model(&s.model, 3, &[]);
    let images = s.path("images");
    make_images(&images);
    let allow: Vec<String> = validators
        .iter()
        .map(|v| format!("{:?}", key(*v).ss58()))
        .collect();
    let mut sets = vec![format!("predictor.allow=[{}]", allow.join(","))];
    sets.extend(extra.iter().cloned());
    s.start(&sets);
    base64(&std::fs::read(images.join("square.jpg")).unwrap())
}

#[test]
fn a_stalled_connection_flood_neither_delays_validators_nor_outlives_its_deadline() {
    // Proves: 2 200 sockets that connect and send nothing (or half a header) from one address
    // hold at most the per-address cap; the rest are closed at accept; a validator connecting
    // anew for every query is answered as fast as without the flood; every stalled socket is
    // closed within the header deadline (5 s) plus a margin. Then the same number spread over
    // 150 addresses (each under its cap) still leaves the validator served: the total cap sits
    // under the fd limit, so accept never fails. On the tree before issue 17 one address could
    // take all 2 048 places and a validator waited for the 10 s header timeout.
    let fds = raise_fd_limit();
    assert!(
        fds >= 8192,
        "the test needs 8192 descriptors; the hard limit is {fds}"
    );
    let mut s = Setup::new();
    let validator = 51;
    let b64 = start_image_axon(&mut s, &[validator], &[]);
    let to: SocketAddrV4 = s.addr().parse().unwrap();

    let quiet = validator_queries(&s, validator, &b64, 20);
    let pid = s.predictor.as_ref().unwrap().pid().unwrap();
    // The predictor's own sockets (listener, bus, notify; the validator's last connection may
    // still be closing): what it holds beyond this is the flood's.
    std::thread::sleep(Duration::from_millis(200));
    let baseline = socket_fds(pid);

    let flood_start = Instant::now();
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let stalled: Vec<TcpStream> = (0..2200)
        .filter_map(|i| {
            let mut c = connect_from(attacker, to).ok()?;
            if i % 2 == 0 {
                let _ = c.write_all(b"POST /ImageSynapse HTTP/1.1\r\nhost: x\r\n");
            }
            Some(c)
        })
        .collect();
    assert!(stalled.len() >= 2000, "only {} connects", stalled.len());
    // Connects can outrun accept (see below), so the last place may have been taken late.
    let flood_end = Instant::now();
    let held = socket_fds(pid).saturating_sub(baseline);
    assert!(
        held <= 16 + 2,
        "the flood holds {held} of the predictor's sockets"
    );
    let flooded = validator_queries(&s, validator, &b64, 40);
    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    let (f50, f99) = (percentile(&flooded, 0.5), percentile(&flooded, 0.99));
    eprintln!(
        "flood of {} stalled sockets from one address: validator p50 {:?} p99 {:?} (quiet: p50 {:?} p99 {:?})",
        stalled.len(), f50, f99, q50, q99
    );
    assert!(
        f99 < Duration::from_secs(3),
        "validator p99 {f99:?} under the flood"
    );

    // Closed within the header deadline (5 s) plus a margin, seen from the server: the sockets
    // the predictor holds fall back to its baseline. (Client-side, a few connects may still look
    // open: when the flood outruns accept, the kernel drops completed handshakes from the full
    // backlog without telling the client; the predictor never held those.)
    let bound = flood_end + Duration::from_secs(5 + 5);
    let mut left = socket_fds(pid).saturating_sub(baseline);
    while left > 1 && Instant::now() < bound {
        std::thread::sleep(Duration::from_millis(100));
        left = socket_fds(pid).saturating_sub(baseline);
    }
    eprintln!(
        "flood sockets the predictor still holds {:?} after the last connect ({:?} of connects): {left} (at most {held} at once)",
        flood_end.elapsed(),
        flood_end - flood_start
    );
    assert!(
        left <= 1,
        "{left} stalled sockets outlived the header deadline"
    );
    let turned = s.status()["turned_away"].as_u64().unwrap_or(0);
    eprintln!("turned away {turned} of {} connects", stalled.len());
    assert!(turned > 0, "no connection was turned away");
    drop(stalled);

    // Many addresses, each under its cap.
    let spread: Vec<TcpStream> = (0..2100)
        .filter_map(|i| connect_from(Ipv4Addr::new(127, 0, 1, 1 + (i / 14) as u8), to).ok())
        .collect();
    assert!(spread.len() >= 2000, "only {} connects", spread.len());
    let spread_times = validator_queries(&s, validator, &b64, 20);
    eprintln!(
        "{} stalled sockets from 150 addresses: validator p50 {:?} p99 {:?}",
        spread.len(),
        percentile(&spread_times, 0.5),
        percentile(&spread_times, 0.99)
    );
    assert!(percentile(&spread_times, 0.99) < Duration::from_secs(3));
}

#[test]
fn chunked_bodies_to_an_unknown_route_are_not_buffered() {
    // Proves: a refused request's body is read at most DRAIN_BYTES (64 KiB) and dropped, then
    // the connection is closed, whatever its framing (a chunked body has no Content-Length to
    // refuse it by). 32 such streams of up to 64 MiB each raise the predictor's peak RSS by a few
    // MiB; before issue 17 each was collected up to max_body_bytes (8 MiB): +256 MiB.
    let mut s = Setup::new();
    start_image_axon(&mut s, &[52], &[]);
    let pid = s.predictor.as_ref().unwrap().pid().unwrap();
    let before = peak_rss_mib(pid);
    reset_peak_rss(pid);
    let addr = s.addr();
    let streams: Vec<_> = (0..32)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(&addr).unwrap();
                c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(b"POST /NoSuchSynapse HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
                    .unwrap();
                let chunk = vec![b'a'; 64 * 1024];
                let mut sent = 0usize;
                while sent < 64 << 20 {
                    let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if c.write_all(&frame).is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                let mut answer = String::new();
                let _ = c.read_to_string(&mut answer);
                (sent, answer)
            })
        })
        .collect();
    for t in streams {
        let (sent, answer) = t.join().unwrap();
        assert!(sent < 64 << 20, "the axon read a whole 64 MiB body");
        // The 404 may be lost to the reset when the close races our writes; when it arrives it
        // is a 404 that closes the connection.
        if !answer.is_empty() {
            assert!(answer.starts_with("HTTP/1.1 404"), "{answer:.200}");
            assert!(answer.to_ascii_lowercase().contains("connection: close"));
        }
    }
    let peak = peak_rss_mib(pid);
    eprintln!("32 chunked 64 MiB bodies to a 404: peak RSS {peak} MiB (before {before} MiB)");
    assert!(
        peak < before + 64,
        "peak RSS {peak} MiB, {before} MiB before"
    );
}

/// A JPEG of `w`×`h` black pixels, from Pillow.
fn black_jpeg(path: &Path, w: u32, h: u32) -> String {
    run_ok(
        Command::new(venv_python()).args([
            "-c",
            &format!(
                "from PIL import Image; Image.new('RGB', ({w}, {h})).save({:?}, quality=20)",
                path.display().to_string()
            ),
        ]),
        "black jpeg",
    );
    base64(&std::fs::read(path).unwrap())
}

/// Sends `bodies` at once, each from its own validator connection; returns the statuses.
fn concurrently(s: &Setup, jobs: Vec<(u8, Vec<u8>)>) -> Vec<u16> {
    let threads: Vec<_> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, (seed, body))| {
            let mut c = s.client(seed, &format!("bomb-{i}"));
            std::thread::spawn(move || {
                let nonce = c.nonce();
                let (headers, _) = c.request("", nonce, Spoil::None);
                c.send("/ImageSynapse", &headers, &body)
                    .map(|a| a.status)
                    .unwrap_or(0)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn image_body(b64: &str, pad_elements: usize) -> Vec<u8> {
    let mut body = format!("{{\"name\":\"ImageSynapse\",\"image\":\"{b64}\"");
    if pad_elements > 0 {
        body.push_str(",\"pad\":[");
        body.push_str(&"0,".repeat(pad_elements - 1));
        body.push_str("0]");
    }
    body.push('}');
    body.into_bytes()
}

#[test]
fn pixel_bombs_and_padded_json_keep_memory_bounded_and_the_axon_up() {
    // Proves: 16 concurrent 8192×8192 JPEGs (67 Mpixel, ~0.3 MB each) are refused from their
    // headers (400) without decoding; 16 concurrent 4096×4096 ones (at the cap) are decoded at
    // most one per core; 16 concurrent bodies padded to ~3.9 M JSON elements are parsed without
    // building them. The predictor's peak RSS stays within a few hundred MiB, and the same
    // process serves afterwards. Before issue 17, eight 8192² bombs alone took +3.1 GiB and the
    // padding was built as serde_json values (16-32× the body).
    let validators = [61, 62, 63, 64];
    let mut s = Setup::new();
    let small = start_image_axon(&mut s, &validators, &[]);
    let pid = s.predictor.as_ref().unwrap().pid().unwrap();
    let baseline = peak_rss_mib(pid);
    let who = |i: usize| validators[i % validators.len()];

    let bomb = black_jpeg(&s.path("bomb.jpg"), 8192, 8192);
    reset_peak_rss(pid);
    let statuses = concurrently(
        &s,
        (0..16).map(|i| (who(i), image_body(&bomb, 0))).collect(),
    );
    let bomb_peak = peak_rss_mib(pid);
    assert!(statuses.iter().all(|&c| c == 400), "{statuses:?}");

    let large = black_jpeg(&s.path("large.jpg"), 4096, 4096);
    reset_peak_rss(pid);
    let statuses = concurrently(
        &s,
        (0..16).map(|i| (who(i), image_body(&large, 0))).collect(),
    );
    let large_peak = peak_rss_mib(pid);
    assert!(
        statuses.iter().all(|&c| c == 200 || c == 408),
        "{statuses:?}"
    );

    let padded = image_body(&small, 3_900_000);
    assert!(padded.len() < 8 << 20);
    reset_peak_rss(pid);
    let statuses = concurrently(&s, (0..16).map(|i| (who(i), padded.clone())).collect());
    let padded_peak = peak_rss_mib(pid);
    assert!(statuses.iter().all(|&c| c == 200), "{statuses:?}");
    eprintln!(
        "peak RSS (MiB): baseline {baseline}, 16x 8192² JPEG {bomb_peak}, 16x 4096² JPEG {large_peak}, 16x 7.8 MB padded JSON {padded_peak}"
    );
    for (what, peak) in [
        ("8192² bombs", bomb_peak),
        ("4096² images", large_peak),
        ("padded JSON", padded_peak),
    ] {
        assert!(
            peak < baseline + 640,
            "{what}: peak RSS {peak} MiB, baseline {baseline} MiB"
        );
    }
    // Still the same process, still serving.
    assert_eq!(s.predictor.as_ref().unwrap().pid(), Some(pid));
    let mut c = s.client(who(0), "after");
    assert_eq!(c.query(&small, Spoil::None).unwrap().status, 200);
}

#[test]
fn a_nonce_from_the_future_is_refused_and_the_validator_is_not_locked_out() {
    // Proves the measured finding: a signed request whose nonce is an hour ahead was answered
    // 200, and the same validator's normal requests were then refused 401 for the hour.
    let mut s = Setup::new();
    let b64 = start_image_axon(&mut s, &[53], &[]);
    let mut c = s.client(53, "clock");
    let ahead = c.nonce() + 3_600_000_000_000;
    let (headers, body) = c.request(&b64, ahead, Spoil::None);
    let a = c.send("/ImageSynapse", &headers, &body).unwrap();
    assert_eq!(a.status, 401, "{}", short(&a.body));
    assert!(a.body.to_string().contains("ahead"), "{}", short(&a.body));
    for _ in 0..3 {
        assert_eq!(c.query(&b64, Spoil::None).unwrap().status, 200);
    }
}

#[test]
fn strangers_get_short_unsigned_answers_and_the_probe_tells_only_the_state() {
    // Proves: a refusal before the signature check costs no signature (no bt_header_axon_
    // signature) and echoes at most a short, printable prefix of what was sent; an answer to a
    // verified validator is signed; `/healthz` shows the state and nothing else (no model path,
    // no reload error).
    let mut s = Setup::new();
    let b64 = start_image_axon(&mut s, &[54], &[]);
    let mut stranger = s.client(99, "stranger");
    let long = "A".repeat(5000);
    let nonce = stranger.nonce();
    let (headers, body) = stranger.request(&b64, nonce, Spoil::None);
    let a = stranger.send(&format!("/{long}"), &headers, &body).unwrap();
    assert_eq!(a.status, 404);
    let text = a.body.to_string();
    assert!(text.len() < 400, "{} bytes echoed", text.len());
    assert!(a.header("name").is_some_and(|n| n.len() < 64));
    assert!(a
        .header("bt_header_axon_signature")
        .is_none_or(str::is_empty));
    let a = stranger.query(&b64, Spoil::None).unwrap();
    assert_eq!(a.status, 403);
    assert!(a
        .header("bt_header_axon_signature")
        .is_none_or(str::is_empty));

    let mut validator = s.client(54, "v");
    let a = validator.query(&b64, Spoil::None).unwrap();
    assert_eq!(a.status, 200);
    assert!(a
        .header("bt_header_axon_signature")
        .is_some_and(|sig| sig.len() == 130));

    let health = s.get("/healthz");
    assert!(health.ends_with("{\"state\":\"serving\"}"), "{health}");
    assert!(!health.contains(&s.model.display().to_string()));
}

#[test]
fn oversized_or_unknown_feedback_is_refused_and_nothing_is_stored() {
    // Proves, on a SoundsRight axon: a `FeedbackProtocol` body over 64 KiB from an admitted
    // validator is refused 413 (before issue 17 any size up to max_body_bytes was stored, shown on
    // the public healthcheck and in the journal); feedback naming a competition the subnet does
    // not have is refused 400; a good one is stored (and only that one).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_seed7_hotkey(&d.join("hotkey"));
    let bus = Bus::start();
    let validator = key(72);
    let competition = "DEREVERBERATION_16000HZ";
    let log = d.join("predictor.log");
    let state = d.join("state");
    let mut spawn = Spawn::new("predictor", &bus, &state).log_to(&log);
    for set in [
        "miner.profile=\"soundsright\"".to_string(),
        format!(
            "miner.hotkey_file={:?}",
            d.join("hotkey").display().to_string()
        ),
        "predictor.listen=\"127.0.0.1:0\"".into(),
        format!("predictor.allow=[{:?}]", validator.ss58()),
        format!("soundsright.models.{competition}.namespace=\"alice\""),
        format!("soundsright.models.{competition}.name=\"dereverb\""),
        format!(
            "soundsright.models.{competition}.revision=\"{}\"",
            "0a".repeat(20)
        ),
    ] {
        spawn = spawn.arg("--set").arg(&set);
    }
    let mut daemon = spawn.start();
    daemon.assert_ready();
    let port = taominer_tests::predictor::axon_port(&daemon).expect("the axon's port in STATUS=");
    let mut c = taominer_tests::axon::Client::new(
        validator,
        taominer_tests::predictor::AXON,
        &format!("127.0.0.1:{port}"),
        "feedback",
    );
    let mut send = |body: serde_json::Value| {
        let nonce = c.nonce();
        let (headers, _) = c.request("", nonce, Spoil::None);
        c.send("/FeedbackProtocol", &headers, body.to_string().as_bytes())
            .unwrap()
    };
    let big = send(serde_json::json!({
        "competition": competition, "data": {"blob": "x".repeat(70 * 1024)},
    }));
    assert_eq!(big.status, 413, "{}", short(&big.body));
    let unknown = send(serde_json::json!({"competition": "NOT_A_COMPETITION", "data": {}}));
    assert_eq!(unknown.status, 400, "{}", short(&unknown.body));
    let good = send(serde_json::json!({
        "competition": competition, "data": {"PESQ": {"average": 2.0}}, "best_models": [],
    }));
    assert_eq!(good.status, 200, "{}", short(&good.body));
    let kept = json(&minerctl(&bus, &["feedback", "--json"]));
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
    assert_eq!(kept[0]["competition"], competition);
}
