// TEMPORARY calibration probe (not to be committed).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::collections::HashMap;

struct Counting;
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);
static BASE: AtomicU64 = AtomicU64::new(0);
static HW: AtomicU64 = AtomicU64::new(0);
fn note(p: *mut u8, size: usize) { let b = BASE.load(Relaxed); let a = p as u64; if b != 0 && a >= b && a < b + (16u64<<30) { HW.fetch_max(a + size as u64 - b, Relaxed); } }
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 { let p = System.alloc(l); if !p.is_null() { note(p, l.size()); let n = LIVE.fetch_add(l.size() as u64, Relaxed) + l.size() as u64; PEAK.fetch_max(n, Relaxed); } p }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 { let p = System.alloc_zeroed(l); if !p.is_null() { note(p, l.size()); let n = LIVE.fetch_add(l.size() as u64, Relaxed) + l.size() as u64; PEAK.fetch_max(n, Relaxed); } p }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) { System.dealloc(p, l); LIVE.fetch_sub(l.size() as u64, Relaxed); }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 { let q = System.realloc(p, l, n); if !q.is_null() { note(q, n); if n > l.size() { let v = LIVE.fetch_add((n - l.size()) as u64, Relaxed) + (n-l.size()) as u64; PEAK.fetch_max(v, Relaxed);} else { LIVE.fetch_sub((l.size()-n) as u64, Relaxed);} } q }
}
#[global_allocator]
static A: Counting = Counting;

fn mib(b: u64) -> f64 { b as f64 / 1048576.0 }
fn main() {
    taominer_trainer::alloc::tune_for_training();
    BASE.store(unsafe { libc::sbrk(0) } as u64, Relaxed);
    let a: Vec<String> = std::env::args().collect();
    let num = |i: usize| a[i].parse::<usize>().unwrap();
    let (h, inter, layers, heads, kv, b, t, ckpt, steps) = (num(1), num(2), num(3), num(4), num(5), num(6), num(7), num(8) == 1, num(9));
    let sizes = taominer_core::config::TrainerModelConfig { hidden_size: h, intermediate_size: inter, num_hidden_layers: layers, num_attention_heads: heads, num_key_value_heads: kv, ..Default::default() };
    let cfg = taominer_trainer::model::LlamaConfig::from_sizes(&sizes, 257);
    let mut tc = taominer_core::config::TrainerConfig::default();
    tc.batch_size = b; tc.sequence_length = t; tc.checkpoint_activations = Some(ckpt);
    let setup = taominer_trainer::plan::Setup::new(&tc, &cfg, false, 0);
    let p = taominer_trainer::plan::plan(&setup);
    let base_live = LIVE.load(Relaxed);
    let rss0 = taominer_trainer::plan::resident();
    let body = move || {
        use candle_core::{Device, Tensor, DType};
        let dev = Device::Cpu;
        let params = taominer_trainer::model::init_params(&cfg, 1, &dev).unwrap();
        let mut opt = taominer_trainer::optim::AdamW::new(&params, &tc).unwrap();
        let m = taominer_trainer::model::Llama::new(cfg.clone(), params, DType::F32).unwrap().with_checkpointing(ckpt);
        let mut rng = taominer_trainer::rng::Rng::new(3);
        for step in 0..steps {
            let before = LIVE.load(Relaxed);
            PEAK.store(before, Relaxed);
            let ids: Vec<u32> = (0..b*t).map(|_| rng.below(257) as u32).collect();
            let ids = Tensor::from_vec(ids, (b, t), &dev).unwrap();
            let loss = m.loss(&ids, true).unwrap();
            let fwd = LIVE.load(Relaxed); let fpk = PEAK.load(Relaxed);
            let scaled = (loss / 1.0).unwrap();
            let g = m.backward(&scaled).unwrap();
            let bwd_peak = PEAK.load(Relaxed);
            drop(scaled);
            let after = LIVE.load(Relaxed);
            PEAK.store(after, Relaxed);
            let mut grads = HashMap::new();
            taominer_trainer::optim::accumulate(&mut grads, g).unwrap();
            taominer_trainer::train::optimizer_step(&m, &mut opt, grads, &tc, step as u64).unwrap();
            let opk = PEAK.load(Relaxed);
            let mi = unsafe { libc::mallinfo2() };
            println!("  heap high-water {:.2} MiB above start", mib(HW.load(Relaxed)));
            println!("  mallinfo: arena {:.2} (in use {:.2}, free {:.2}, top {:.2}) mmap {:.2}; VmRSS {:.2} VmHWM {:.2}", mib(mi.arena as u64), mib(mi.uordblks as u64), mib(mi.fordblks as u64), mib(mi.keepcost as u64), mib(mi.hblkhd as u64), mib(taominer_trainer::plan::resident()), mib(taominer_trainer::plan::peak_resident().unwrap()));
            println!("step {step}: start {:.2} fwd-end {:.2} (fwd peak {:.2}) bwd-peak {:.2} after-bwd {:.2} opt-peak {:.2} end {:.2}  [MiB live, rel. to process]", mib(before), mib(fwd), mib(fpk), mib(bwd_peak), mib(after), mib(opk), mib(LIVE.load(Relaxed)));
        }
    };
    if std::env::var("MAIN").is_ok() { body() } else { std::thread::Builder::new().name("train".into()).spawn(body).unwrap().join().unwrap(); }
    let b = p.bytes;
    println!("plan: total {:.2} MiB = sim peak {:.2} + master {:.2} + moments {:.2} + baseline {:.2}; act {:.2} layer {:.2} loss {:.2} opt {:.2} peak at {}", mib(b.total), mib(b.total - b.master - b.moments - b.baseline), mib(b.master), mib(b.moments), mib(b.baseline), mib(b.activations), mib(b.layer_peak), mib(b.loss), mib(b.optimizer), p.peak_at);
    println!("process live at start {:.2} MiB, rss0 {:.2}; VmHWM {:.2} MiB", mib(base_live), mib(rss0), mib(taominer_trainer::plan::peak_resident().unwrap()));
}
