//! `axon-load`: the benchmark's client. N threads, each a signed keep-alive dendrite
//! (`taominer_tests::axon::Client`), query an axon with one image for a fixed time; prints one JSON
//! line with requests/s and latency percentiles. The same client measures our axon and the Python
//! one, so the ratio compares servers, not clients.
//!
//! usage: axon-load ADDR AXON_SS58 HOTKEY_FILE IMAGE CONCURRENCY SECONDS

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taominer_core::wallet::Hotkey;
use taominer_tests::axon::{base64, Client, Spoil};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: axon-load ADDR AXON_SS58 HOTKEY_FILE IMAGE CONCURRENCY SECONDS");
        std::process::exit(2);
    }
    let (addr, axon, key_file) = (&args[1], &args[2], &args[3]);
    let image = std::fs::read(&args[4]).expect("read image");
    let b64 = Arc::new(base64(&image));
    let concurrency: usize = args[5].parse().expect("CONCURRENCY");
    let seconds: f64 = args[6].parse().expect("SECONDS");

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let threads: Vec<_> = (0..concurrency)
        .map(|i| {
            let hotkey = Hotkey::load(std::path::Path::new(key_file)).expect("load hotkey");
            let mut c = Client::new(
                hotkey,
                axon,
                addr,
                // One uuid per client, the same in every run, like a validator's dendrite: the
                // axon admits at most 64 uuids a hotkey per minute, and a benchmark's runs
                // follow each other within one.
                &format!("load-{i}"),
            );
            let (b64, stop, measuring, lat, err) = (
                b64.clone(),
                stop.clone(),
                measuring.clone(),
                latencies.clone(),
                errors.clone(),
            );
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = c.query(&b64, Spoil::None);
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    if !measuring.load(Ordering::Relaxed) {
                        continue;
                    }
                    match r {
                        Ok(a) if a.status == 200 => mine.push(ms),
                        Ok(a) => err.lock().unwrap().push(format!("{} {}", a.status, a.body)),
                        Err(e) => err.lock().unwrap().push(e.to_string()),
                    }
                }
                lat.lock().unwrap().extend(mine);
            })
        })
        .collect();
    // One second of warm-up (connections, caches), then the measured window.
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    let errs = errors.lock().unwrap();
    println!(
        "{}",
        serde_json::json!({
            "concurrency": concurrency,
            "ok": lat.len(),
            "errors": errs.len(),
            "first_error": errs.first(),
            "rps": lat.len() as f64 / elapsed,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        })
    );
}
