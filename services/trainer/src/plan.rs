//! The memory plan: how much memory a training run will hold at its peak, worked out from the
//! configuration before anything is allocated.
//!
//! Why it exists: a run that does not fit fails at its first step at best, and at worst (an
//! evaluation or a checkpoint's transient) hours in. `miner-trainer plan` prints the plan with
//! the knobs that would make a run fit, and [`admit`] (called by `Run::prepare` once the model's
//! config is known, before its weights are allocated) refuses a run that cannot fit.
//!
//! # How the bytes are counted
//!
//! Not with a generic "activations ≈ k · tokens · hidden" formula: the plan replays one
//! optimiser step of *this* trainer as it executes, tensor by tensor, and records the memory
//! resident after every allocation and free (see [`replay`]). The replay follows candle's
//! autograd (candle-core 0.11 with the `vendor/` patch, `backprop.rs`):
//!
//! * every tensor of the forward graph stays alive until the graph is dropped, after the whole
//!   backward pass (each op keeps its inputs for its backward); views (`reshape` of a
//!   contiguous tensor, `t()`, `to_dtype` to the same dtype) share their input's storage;
//! * the backward pass visits the nodes in reverse topological order (the depth-first order of
//!   `Tensor::sorted_nodes`); a node's gradient is freed once the node is processed, a `Var`'s
//!   stays in the store;
//! * a tensor's first gradient is stored as it comes (for a view or an addition: the node's
//!   own gradient, no new memory), later ones are added into a new tensor;
//! * a gradient computed from a tensor of the graph (a matmul's, from the weight or the
//!   activation it multiplies) is a graph node itself and keeps its inputs (the node's
//!   gradient) alive until it is consumed.
//!
//! The graph it replays is [`crate::model`]'s, written out here op for op (see [`layer`] and
//! [`micro_batch`]): the activations are the tensors `layer()` creates; with checkpointing, the
//! `Recompute` node of `model/recompute.rs` keeps the layer's input and the copy of the output
//! its forward returns, and one layer is recomputed with its graph during its
//! backward pass. The optimiser is `train::optimizer_step` with `ops::adamw`. A change to these
//! needs the same change here; the measured test (`tests/tests/trainer_plan.rs`,
//! `miner-trainer plan --measure`) catches a drift on the CPU.
//!
//! On the CPU the allocator's layout counts too: glibc serves blocks under its mmap threshold
//! (32 MiB after [`crate::alloc::tune_for_training`]) from a heap that is never trimmed, so the
//! holes between live tensors are resident as well. The replay places every block as glibc
//! does ([`Heap`]: best fit, freed neighbours merged) and counts the heap's high-water mark plus
//! the blocks mapped on their own; a zero-filled block of its own mapping that is only read (an
//! `or_insert` gradient's zeros) costs nothing. The process itself (binary, libraries, runtime,
//! tokenizer) is its resident memory when the plan is made, plus [`STEP_OVERHEAD_CPU`] and the
//! token streams (4 bytes a token) when the token cache already exists. On CUDA every tensor
//! counts at its size, plus [`RESERVE_CUDA`].
//!
//! Results are the rows of [`Bytes`]; the total is the most memory the replay holds at once,
//! which is less than the sum of the rows (the loss's working set is freed before the decoder
//! layers' gradients exist; the optimiser's temporaries come after the activations are freed).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use taominer_core::config::{Device, Start, TrainerConfig};

use crate::error::{Error, Result};
use crate::model::{LlamaConfig, LAYER_PARTS};

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// glibc's mmap threshold as [`crate::alloc::tune_for_training`] sets it: blocks this size or
/// larger get their own fresh (zero, unmapped) pages.
const MMAP_THRESHOLD: u64 = 32 * MIB;

/// What training adds to the process besides tensors: the training thread, the code pages of
/// the kernels, the worker threads' stacks and allocator arenas (measured with `plan --measure`
/// on a model of a few thousand parameters, peak RSS less the resident memory when the plan was
/// made: 4 MiB, the same with 1 to 8 threads). The rest of the process (binary, libraries,
/// runtime, tokenizer) is measured when the plan is made ([`Setup::process`]): it depends on
/// the build (a debug binary's mapped code alone is 25 MiB).
pub const STEP_OVERHEAD_CPU: u64 = 4 * MIB;

/// Device memory a CUDA run needs besides its tensors: cuBLAS workspaces, the kernels' modules
/// and the slack of the stream-ordered allocator's pool. The context itself is already taken
/// out of the free memory the plan compares with. Not measured here (no GPU in the tests).
pub const RESERVE_CUDA: u64 = 512 * MIB;

/// What a plan is of.
#[derive(Debug, Clone)]
pub struct Setup {
    pub model: LlamaConfig,
    pub batch_size: usize,
    pub sequence_length: usize,
    pub accumulation_steps: usize,
    /// CUDA: bf16 compute, device memory. Otherwise the CPU: f32 compute, host memory.
    pub cuda: bool,
    /// The device as configured (`cpu`, `cuda:0`).
    pub device: Device,
    pub checkpointing: bool,
    /// Token streams the process holds (4 bytes a token), counted on the CPU only.
    pub data_bytes: u64,
    /// The process's resident memory before the model (CPU; [`resident`] when planning in the
    /// trainer's own binary).
    pub process: u64,
}

/// `trainer.checkpoint_activations`; unset: on for CUDA (memory is what limits a GPU run), off
/// on the CPU (time is).
pub fn checkpointing(t: &TrainerConfig, cuda: bool) -> bool {
    t.checkpoint_activations.unwrap_or(cuda)
}

impl Setup {
    pub fn new(t: &TrainerConfig, model: &LlamaConfig, cuda: bool, data_bytes: u64) -> Setup {
        Setup {
            model: model.clone(),
            batch_size: t.batch_size,
            sequence_length: t.sequence_length,
            accumulation_steps: t.accumulation_steps,
            cuda,
            device: t.device,
            checkpointing: checkpointing(t, cuda),
            data_bytes,
            process: if cuda { 0 } else { resident() },
        }
    }

    fn compute_bytes(&self) -> u64 {
        if self.cuda {
            2
        } else {
            4
        }
    }
}

/// The plan's rows, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bytes {
    /// Compute-dtype copies of the weights kept by the graph (bf16 on CUDA; on the CPU the
    /// compute dtype is the masters' f32 and the graph uses the masters themselves).
    pub weights: u64,
    /// The f32 master weights the optimiser updates.
    pub master: u64,
    /// f32 gradients, with the accumulation buffer when `accumulation_steps > 1`.
    pub gradients: u64,
    /// AdamW's two f32 moments.
    pub moments: u64,
    /// Tensors the forward pass keeps for the backward pass (decoder layers, embedding output,
    /// final norm).
    pub activations: u64,
    /// The largest transient working set of one layer (or the embedding) in the backward pass,
    /// with checkpointing including the layer's recomputed activations and their gradients.
    pub layer_peak: u64,
    /// The logits `[b·t, vocab]` (f32, plus the bf16 matmul output on CUDA), the loss's saved
    /// statistics and the backward pass through the loss and `lm_head` at its largest.
    pub loss: u64,
    /// The optimiser update's temporaries (clipping, AdamW's intermediate tensors).
    pub optimizer: u64,
    /// The process (CPU) or the device's reserve (CUDA), with the token streams on the CPU.
    pub baseline: u64,
    /// The step's peak: the largest set of these live at once, plus master, moments, baseline.
    pub total: u64,
}

/// A plan: the setup and its bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub parameters: u64,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub batch_size: usize,
    pub sequence_length: usize,
    pub accumulation_steps: usize,
    pub device: Device,
    pub compute_dtype: &'static str,
    pub checkpoint_activations: bool,
    pub bytes: Bytes,
    /// Where in the step the total is reached.
    pub peak_at: String,
    /// Which layer's working set `bytes.layer_peak` is (a decoder layer, or the embedding's
    /// backward: its gradient starts from a zeroed `[vocab, hidden]` table).
    pub layer_peak_at: String,
}

/// Computes the plan of `setup`.
pub fn plan(setup: &Setup) -> Plan {
    let m = &setup.model;
    let (bytes, peak_at, layer_peak_at) = replay(setup);
    Plan {
        parameters: parameter_count(m),
        hidden_size: m.hidden_size,
        num_hidden_layers: m.num_hidden_layers,
        num_attention_heads: m.num_attention_heads,
        num_key_value_heads: m.kv_heads(),
        intermediate_size: m.intermediate_size,
        vocab_size: m.vocab_size,
        tie_word_embeddings: m.tie_word_embeddings,
        batch_size: setup.batch_size,
        sequence_length: setup.sequence_length,
        accumulation_steps: setup.accumulation_steps,
        device: setup.device,
        compute_dtype: if setup.cuda { "bf16" } else { "f32" },
        checkpoint_activations: setup.checkpointing,
        bytes,
        peak_at,
        layer_peak_at,
    }
}

pub fn parameter_count(m: &LlamaConfig) -> u64 {
    m.parameter_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The replay

/// Where the step is, for the per-part working sets and for naming the peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Init,
    Embedding,
    Layer(usize),
    FinalNorm,
    /// `lm_head`, the f32 logits and the loss.
    Head,
    Accumulate,
    Optimizer,
}

impl Part {
    fn describe(self, backward: bool) -> String {
        let pass = if backward { "backward" } else { "forward" };
        match self {
            Part::Init => "initialisation".into(),
            Part::Embedding => format!("{pass} pass, embedding"),
            Part::Layer(l) => format!("{pass} pass, layer {l}"),
            Part::FinalNorm => format!("{pass} pass, final norm"),
            Part::Head => format!("{pass} pass, logits and loss"),
            Part::Accumulate => "gradient accumulation".into(),
            Part::Optimizer => "optimizer update".into(),
        }
    }
}

/// A block of memory in the replay; [`NONE`] for nothing (a view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Blk(usize);
const NONE: Blk = Blk(usize::MAX);

#[derive(Debug, Clone, Copy)]
enum Place {
    /// In glibc's heap, at this offset.
    Heap(u64),
    /// A mapping of its own (CPU, at least [`MMAP_THRESHOLD`]).
    Mapped,
    /// Device memory (CUDA).
    Device,
    Freed,
}

struct Block {
    /// Holders: a tensor, and the ops of gradients computed from it (see [`backward`]).
    refs: u32,
    size: u64,
    /// What it costs while alive: its size, or 0 for zero pages never written.
    cost: u64,
    place: Place,
}

/// glibc's heap as the replay sees it: best fit among the free chunks (the smallest that
/// holds the request, the lowest of equals), else the top of the heap; a freed chunk merges
/// with free neighbours and with the top. Nothing is given back to the system (the trim
/// threshold is 1 GiB), so the heap's resident size is the highest offset ever written.
#[derive(Default)]
struct Heap {
    free: std::collections::BTreeMap<u64, u64>,
    top: u64,
    written: u64,
}

impl Heap {
    fn alloc(&mut self, size: u64, write: bool) -> u64 {
        let best = self
            .free
            .iter()
            .filter(|(_, &s)| s >= size)
            .min_by_key(|(&o, &s)| (s, o))
            .map(|(&o, &s)| (o, s));
        let offset = match best {
            Some((o, s)) => {
                self.free.remove(&o);
                if s > size {
                    self.free.insert(o + size, s - size);
                }
                o
            }
            None => {
                self.top += size;
                self.top - size
            }
        };
        if write {
            self.written = self.written.max(offset + size);
        }
        offset
    }

    fn free(&mut self, offset: u64, size: u64) {
        let (mut start, mut end) = (offset, offset + size);
        if let Some((&o, &s)) = self.free.range(..start).next_back() {
            if o + s == start {
                self.free.remove(&o);
                start = o;
            }
        }
        if let Some(s) = self.free.remove(&end) {
            end += s;
        }
        if end == self.top {
            self.top = start;
        } else {
            self.free.insert(start, end - start);
        }
    }
}

/// Memory as one step allocates and frees it: the bytes alive, the resident peak (on the CPU
/// the heap's high-water mark plus the blocks mapped on their own; on CUDA the bytes alive),
/// and the largest working set of each part (the most bytes alive while in it beyond those
/// alive when it began).
struct Mem {
    cuda: bool,
    blocks: Vec<Block>,
    heap: Heap,
    mapped: u64,
    live: u64,
    peak: u64,
    peak_at: (Part, bool),
    part: (Part, bool),
    /// Whether the current part's working set is recorded (not for the parts whose tensors
    /// are kept: those are activations).
    window: bool,
    start: u64,
    window_max: u64,
    worst: HashMap<Part, u64>,
}

impl Mem {
    fn new(cuda: bool) -> Mem {
        Mem {
            cuda,
            blocks: Vec::new(),
            heap: Heap::default(),
            mapped: 0,
            live: 0,
            peak: 0,
            peak_at: (Part::Init, false),
            part: (Part::Init, false),
            window: false,
            start: 0,
            window_max: 0,
            worst: HashMap::new(),
        }
    }

    /// A tensor's storage, written.
    fn alloc(&mut self, size: u64) -> Blk {
        self.place(size, true)
    }

    /// A zero-filled tensor that is only read (candle's `zeros_like` in `or_insert`; AdamW's
    /// first moments): on the CPU, fresh pages stay unmapped until written.
    fn zeros(&mut self, size: u64) -> Blk {
        self.place(size, false)
    }

    fn place(&mut self, size: u64, write: bool) -> Blk {
        if size == 0 {
            return NONE;
        }
        let (place, cost) = if self.cuda {
            (Place::Device, size)
        } else if size >= MMAP_THRESHOLD {
            let cost = if write { size } else { 0 };
            self.mapped += cost;
            (Place::Mapped, cost)
        } else {
            (Place::Heap(self.heap.alloc(size, write)), size)
        };
        self.live += cost;
        self.blocks.push(Block {
            refs: 1,
            size,
            cost,
            place,
        });
        self.update();
        Blk(self.blocks.len() - 1)
    }

    /// One more holder of `b`.
    fn share(&mut self, b: Blk) {
        if b != NONE {
            self.blocks[b.0].refs += 1;
        }
    }

    /// One holder fewer; the block is freed with the last.
    fn free(&mut self, b: Blk) {
        if b == NONE {
            return;
        }
        let block = &mut self.blocks[b.0];
        if let Place::Freed = block.place {
            debug_assert!(false, "plan: a block freed twice");
            return;
        }
        block.refs -= 1;
        if block.refs > 0 {
            return;
        }
        match block.place {
            Place::Heap(o) => self.heap.free(o, block.size),
            Place::Mapped => self.mapped -= block.cost,
            Place::Device | Place::Freed => {}
        }
        block.place = Place::Freed;
        self.live -= block.cost;
    }

    fn update(&mut self) {
        let resident = if self.cuda {
            self.live
        } else {
            self.heap.written + self.mapped
        };
        if resident > self.peak {
            self.peak = resident;
            self.peak_at = self.part;
        }
        self.window_max = self.window_max.max(self.live);
    }

    /// Enters `part` (of the backward pass when `backward`); `window`: record its working set.
    fn enter(&mut self, part: Part, backward: bool, window: bool) {
        if (part, backward) == self.part && window == self.window {
            return;
        }
        self.close();
        self.part = (part, backward);
        self.window = window;
        self.start = self.live;
        self.window_max = self.live;
    }

    fn close(&mut self) {
        if self.window {
            let w = self.worst.entry(self.part.0).or_default();
            *w = (*w).max(self.window_max - self.start);
        }
        self.window = false;
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A `Var`: a master weight (its parameter's index), or a checkpointed layer's input
    /// made a leaf. Its gradient stays in the store.
    Var(Option<usize>),
    /// No gradient flows into it (token ids; a detached tensor).
    Const,
    /// A view: `reshape` of a contiguous tensor.
    View(usize),
    /// `t()`: a view whose gradient (the transposed view of its node's) is not contiguous.
    Transpose(usize),
    /// `to_dtype` to another dtype.
    Cast(usize),
    Matmul(usize, usize),
    Add(usize, usize),
    Mul(usize, usize),
    SumAll(usize),
    /// `loss / accumulation_steps`.
    Scale(usize),
    /// `embedding` (`index_select` of the ids; backward: `index_add` into the zeroed gradient).
    Embedding(usize),
    /// One of `ops`' fused kernels (a candle `CustomOp1/2/3`); its backward returns a
    /// gradient for each argument.
    Fused([Option<usize>; 3]),
    /// A checkpointed decoder layer (`model/recompute.rs`): its backward recomputes layer
    /// `.1` with a graph.
    Recompute(usize, usize),
}

impl Op {
    fn args(&self) -> Vec<usize> {
        match *self {
            Op::Var(_) | Op::Const => vec![],
            Op::View(a)
            | Op::Transpose(a)
            | Op::Cast(a)
            | Op::SumAll(a)
            | Op::Scale(a)
            | Op::Embedding(a)
            | Op::Recompute(a, _) => vec![a],
            Op::Matmul(a, b) | Op::Add(a, b) | Op::Mul(a, b) => vec![a, b],
            Op::Fused(args) => args.iter().flatten().copied().collect(),
        }
    }
}

struct Node {
    op: Op,
    /// Storage this node allocated (none for a view), and its size.
    data: Blk,
    bytes: u64,
    /// Memory its op keeps for the backward pass (saved statistics, tables, a kept output).
    held: Blk,
    held_bytes: u64,
    /// Its gradient's size.
    grad: u64,
    /// Transient memory its backward allocates besides the gradients it returns.
    scratch: u64,
    part: Part,
    /// A cast of a master weight to the compute dtype (the `weights` row).
    weight_copy: bool,
}

/// A gradient graph under construction or replay.
struct Graph {
    nodes: Vec<Node>,
    part: Part,
}

impl Graph {
    fn new(part: Part) -> Graph {
        Graph {
            nodes: Vec::new(),
            part,
        }
    }

    fn push(&mut self, mem: &mut Mem, op: Op, bytes: u64, held: u64, grad: u64) -> usize {
        let data = mem.alloc(bytes);
        let held_blk = mem.alloc(held);
        self.nodes.push(Node {
            op,
            data,
            bytes,
            held: held_blk,
            held_bytes: held,
            grad,
            scratch: 0,
            part: self.part,
            weight_copy: false,
        });
        self.nodes.len() - 1
    }

    fn view(&mut self, mem: &mut Mem, of: usize) -> usize {
        let grad = self.nodes[of].grad;
        self.push(mem, Op::View(of), 0, 0, grad)
    }

    /// Frees every tensor of the graph (the graph dropped).
    fn drop_all(&self, mem: &mut Mem) {
        for n in &self.nodes {
            mem.free(n.data);
            mem.free(n.held);
        }
    }

    /// `Tensor::sorted_nodes`: depth-first from `root` through the arguments in order, a node
    /// kept when it depends on a `Var`; reversed.
    fn sorted(&self, root: usize) -> Vec<usize> {
        fn walk(
            g: &Graph,
            n: usize,
            seen: &mut HashMap<usize, bool>,
            out: &mut Vec<usize>,
        ) -> bool {
            if let Some(&t) = seen.get(&n) {
                return t;
            }
            let track = match g.nodes[n].op {
                Op::Var(_) => true,
                Op::Const => false,
                op => {
                    let mut t = false;
                    for a in op.args() {
                        t |= walk(g, a, seen, out);
                    }
                    t
                }
            };
            seen.insert(n, track);
            if track {
                out.push(n);
            }
            track
        }
        let mut out = Vec::new();
        walk(self, root, &mut HashMap::new(), &mut out);
        out.reverse();
        out
    }
}

/// Shapes of a step, in elements, the compute dtype's size, and the parameters by index.
struct Dims {
    t: u64,
    /// Tokens, `b · t`.
    n: u64,
    h: u64,
    i: u64,
    v: u64,
    heads: u64,
    head_dim: u64,
    /// `heads · head_dim`, `kv_heads · head_dim`.
    q: u64,
    kv: u64,
    /// Compute dtype bytes.
    c: u64,
    /// Every parameter's name and elements, in `parameter_shapes` order.
    params: Vec<(String, u64)>,
    index: HashMap<String, usize>,
}

impl Dims {
    fn of(s: &Setup) -> Dims {
        let m = &s.model;
        let (b, t) = (s.batch_size as u64, s.sequence_length as u64);
        let hd = m.head_size() as u64;
        let params: Vec<(String, u64)> = m
            .parameter_shapes()
            .into_iter()
            .map(|(n, s)| (n, s.iter().product::<usize>() as u64))
            .collect();
        let index = params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        Dims {
            t,
            n: b * t,
            h: m.hidden_size as u64,
            i: m.intermediate_size as u64,
            v: m.vocab_size as u64,
            heads: m.num_attention_heads as u64,
            head_dim: hd,
            q: m.num_attention_heads as u64 * hd,
            kv: m.kv_heads() as u64 * hd,
            c: s.compute_bytes(),
            params,
            index,
        }
    }

    fn param(&self, name: &str) -> usize {
        self.index[name]
    }

    /// Decoder layer `l`'s parameters, in `model.rs`'s `LAYER_PARTS` order.
    fn layer_params(&self, l: usize) -> [usize; 9] {
        LAYER_PARTS.map(|part| self.param(&format!("model.layers.{l}.{part}")))
    }
}

/// A `Var` node for parameter `p` (the master weight: no new storage).
fn var(g: &mut Graph, mem: &mut Mem, d: &Dims, p: usize) -> usize {
    g.push(mem, Op::Var(Some(p)), 0, 0, d.params[p].1 * 4)
}

/// The master weight `var` as the forward pass uses it: itself when the compute dtype is f32
/// (`to_dtype` to the same dtype is a clone), else a cast (`Llama::w`, `LayerWeights::cast`).
fn compute_weight(g: &mut Graph, mem: &mut Mem, d: &Dims, var: usize) -> usize {
    if d.c == 4 {
        return var;
    }
    let elems = g.nodes[var].grad / 4;
    let w = g.push(mem, Op::Cast(var), elems * d.c, 0, elems * d.c);
    g.nodes[w].weight_copy = true;
    w
}

/// `model::linear`: `x.reshape((b·t, in)).matmul(w.t())` reshaped back: `[n, out]`.
fn linear(g: &mut Graph, mem: &mut Mem, d: &Dims, x: usize, w: usize, out: u64) -> usize {
    let x2 = g.view(mem, x);
    let wgrad = g.nodes[w].grad;
    let wt = g.push(mem, Op::Transpose(w), 0, 0, wgrad);
    let y = g.push(mem, Op::Matmul(x2, wt), d.n * out * d.c, 0, d.n * out * d.c);
    g.view(mem, y)
}

/// `model::rms_norm`: the fused RMSNorm writes f32 (its backward recomputes the row's RMS, so
/// it saves nothing), then `to_dtype(compute)`.
fn rms_norm(g: &mut Graph, mem: &mut Mem, d: &Dims, x: usize, w: usize) -> usize {
    let y = g.push(
        mem,
        Op::Fused([Some(x), Some(w), None]),
        d.n * d.h * 4,
        0,
        d.n * d.h * 4,
    );
    if d.c == 4 {
        return y;
    }
    g.push(mem, Op::Cast(y), d.n * d.h * d.c, 0, d.n * d.h * d.c)
}

/// `model::layer`, op for op; `w` are the compute-dtype weights in `LAYER_PARTS` order.
/// Returns the layer's output.
fn layer(g: &mut Graph, mem: &mut Mem, d: &Dims, x: usize, w: [usize; 9]) -> usize {
    let (n, c) = (d.n, d.c);
    let h = rms_norm(g, mem, d, x, w[0]);
    // The projections, viewed as `[b, t, heads, hd]` (no transposed copies). Rotary
    // embedding writes a new tensor; the op keeps its f32 cos/sin tables.
    let tables = 2 * d.t * d.head_dim * 4;
    let q = linear(g, mem, d, h, w[1], d.q);
    let q = g.view(mem, q);
    let q = g.push(
        mem,
        Op::Fused([Some(q), None, None]),
        n * d.q * c,
        tables,
        n * d.q * c,
    );
    let k = linear(g, mem, d, h, w[2], d.kv);
    let k = g.view(mem, k);
    let k = g.push(
        mem,
        Op::Fused([Some(k), None, None]),
        n * d.kv * c,
        tables,
        n * d.kv * c,
    );
    let v = linear(g, mem, d, h, w[3], d.kv);
    let v = g.view(mem, v);
    // Flash attention: the output and one f32 log-sum-exp per (token, head); its backward
    // adds one f32 `rowsum(dO ∘ O)` per (token, head) and tiles of a few KiB per task.
    let lse = n * d.heads * 4;
    let a = g.push(
        mem,
        Op::Fused([Some(q), Some(k), Some(v)]),
        n * d.q * c,
        lse,
        n * d.q * c,
    );
    g.nodes[a].scratch = lse;
    let a = g.view(mem, a);
    let o = linear(g, mem, d, a, w[4], d.h);
    let x = g.push(mem, Op::Add(x, o), n * d.h * c, 0, n * d.h * c);
    let h = rms_norm(g, mem, d, x, w[5]);
    let gate = linear(g, mem, d, h, w[6], d.i);
    let up = linear(g, mem, d, h, w[7], d.i);
    let s = g.push(
        mem,
        Op::Fused([Some(gate), Some(up), None]),
        n * d.i * c,
        0,
        n * d.i * c,
    );
    let down = linear(g, mem, d, s, w[8], d.h);
    g.push(mem, Op::Add(x, down), n * d.h * c, 0, n * d.h * c)
}

/// A gradient in the store: its block, and whether it carries an op (see [`backward`]) with
/// the blocks that op keeps alive.
struct Entry {
    blk: Blk,
    op: bool,
    history: Vec<Blk>,
    /// Not a strided view (a transposed gradient stored as it came).
    contiguous: bool,
}

/// Gradients in a store, by node.
type Store = HashMap<usize, Entry>;

/// Frees a store entry: its gradient and whatever its op kept.
fn release(mem: &mut Mem, e: Entry) {
    mem.free(e.blk);
    for h in e.history {
        mem.free(h);
    }
}

/// The backward pass from `root` (`Tensor::backward` of the vendored candle-core, see
/// `vendor/README.md`). Returns the store (the `Var`s' gradients, and those of untracked
/// arguments); the weights' gradients that checkpointed layers produce go to `side`
/// (`SideGrads`), by parameter.
///
/// `GradStore::accumulate` stores a tensor's first gradient as it is (a view of the node's
/// gradient for a reshape, a transpose or an addition: no new memory) and adds later ones into
/// a new tensor. A gradient computed from a tensor that is part of the graph (a weight or an
/// activation) is itself a graph node and keeps its inputs alive: `grad.matmul(&w.t())` keeps
/// the node's gradient `grad` until that product is consumed, and a sum with it keeps both
/// terms. Only matmuls (and the checkpoint's `y * grad`) compute gradients from tracked tensors
/// here; the fused ops, casts and views do not.
fn backward(
    g: &Graph,
    mem: &mut Mem,
    d: &Dims,
    root: usize,
    side: &mut Vec<(usize, Blk, bool)>,
) -> Store {
    // `accumulate(a, raw)`; `raw_op`: `raw` carries an op that keeps `holds` alive.
    #[allow(clippy::too_many_arguments)]
    fn acc(
        g: &Graph,
        mem: &mut Mem,
        store: &mut Store,
        a: usize,
        raw: Blk,
        raw_op: bool,
        holds: &[Blk],
        contiguous: bool,
    ) {
        let mut history = Vec::new();
        let keep_raw = |mem: &mut Mem, history: &mut Vec<Blk>| {
            if raw_op {
                for &h in holds {
                    mem.share(h);
                    history.push(h);
                }
            }
        };
        match store.remove(&a) {
            None => {
                mem.share(raw);
                keep_raw(mem, &mut history);
                store.insert(
                    a,
                    Entry {
                        blk: raw,
                        op: raw_op,
                        history,
                        contiguous,
                    },
                );
            }
            Some(old) => {
                let new = mem.alloc(g.nodes[a].grad);
                if old.op || raw_op {
                    history = old.history;
                    history.push(old.blk);
                    mem.share(raw);
                    history.push(raw);
                    keep_raw(mem, &mut history);
                    store.insert(
                        a,
                        Entry {
                            blk: new,
                            op: true,
                            history,
                            contiguous: true,
                        },
                    );
                } else {
                    release(mem, old);
                    store.insert(
                        a,
                        Entry {
                            blk: new,
                            op: false,
                            history,
                            contiguous: true,
                        },
                    );
                }
            }
        }
    }
    let order = g.sorted(root);
    let mut store = Store::new();
    // `ones_like` of the scalar loss.
    let ones = mem.alloc(g.nodes[root].grad);
    store.insert(
        root,
        Entry {
            blk: ones,
            op: false,
            history: Vec::new(),
            contiguous: true,
        },
    );
    for node in order {
        let op = g.nodes[node].op;
        if let Op::Var(_) = op {
            continue;
        }
        mem.enter(g.nodes[node].part, true, true);
        let Some(entry) = store.remove(&node) else {
            continue;
        };
        let grad = entry.blk;
        match op {
            Op::Var(_) | Op::Const => {}
            Op::View(a) | Op::SumAll(a) => acc(g, mem, &mut store, a, grad, false, &[], true),
            Op::Transpose(a) => acc(g, mem, &mut store, a, grad, false, &[], false),
            Op::Add(a, b) => {
                acc(g, mem, &mut store, a, grad, false, &[], true);
                acc(g, mem, &mut store, b, grad, false, &[], true);
            }
            Op::Cast(a) | Op::Scale(a) => {
                let raw = mem.alloc(g.nodes[a].grad);
                acc(g, mem, &mut store, a, raw, false, &[], true);
                mem.free(raw);
            }
            Op::Matmul(a, b) => {
                // `grad.matmul(&rhs.t())`, `lhs.t().matmul(&grad)`: both from tracked tensors.
                let ra = mem.alloc(g.nodes[a].grad);
                acc(g, mem, &mut store, a, ra, true, &[grad], true);
                let rb = mem.alloc(g.nodes[b].grad);
                acc(g, mem, &mut store, b, rb, true, &[grad], true);
                mem.free(rb);
                mem.free(ra);
            }
            Op::Mul(a, b) => {
                // `y * grad.detach()`: `grad.mul(rhs)` is untracked, `grad.mul(y)` tracked.
                let ra = mem.alloc(g.nodes[a].grad);
                acc(g, mem, &mut store, a, ra, false, &[], true);
                let rb = mem.alloc(g.nodes[b].grad);
                acc(g, mem, &mut store, b, rb, true, &[grad], true);
                mem.free(rb);
                mem.free(ra);
            }
            Op::Embedding(w) => {
                // `or_insert(w)`: zeros, or (tied embeddings) a contiguous copy of the
                // transposed view `lm_head` stored; then `index_add` into a new tensor.
                let size = g.nodes[w].grad;
                let start = match store.remove(&w) {
                    Some(e) => {
                        let copy = mem.alloc(size);
                        release(mem, e);
                        copy
                    }
                    None => mem.zeros(size),
                };
                let new = mem.alloc(size);
                mem.free(start);
                store.insert(
                    w,
                    Entry {
                        blk: new,
                        op: false,
                        history: Vec::new(),
                        contiguous: true,
                    },
                );
            }
            Op::Fused(args) => {
                let scratch = mem.alloc(g.nodes[node].scratch);
                let raws: Vec<Blk> = args
                    .iter()
                    .flatten()
                    .map(|&a| mem.alloc(g.nodes[a].grad))
                    .collect();
                mem.free(scratch);
                for (&a, raw) in args.iter().flatten().zip(raws) {
                    acc(g, mem, &mut store, a, raw, false, &[], true);
                    mem.free(raw);
                }
            }
            Op::Recompute(x, l) => {
                let raw = recompute_backward(mem, d, l, side);
                acc(g, mem, &mut store, x, raw, false, &[], true);
                mem.free(raw);
            }
        }
        release(mem, entry);
    }
    store
}

/// The backward pass of a checkpointed layer (`Recompute::bwd`): the layer again from its
/// input, with a graph, and that graph's own backward. The weights' gradients go to `side`;
/// the rest is freed when `bwd` returns, except the input's gradient, which is returned (the
/// caller frees it once added).
fn recompute_backward(
    mem: &mut Mem,
    d: &Dims,
    l: usize,
    side: &mut Vec<(usize, Blk, bool)>,
) -> Blk {
    let mut g = Graph::new(Part::Layer(l));
    // `Var::from_tensor(&arg.detach())`: a copy of the input.
    let x = g.push(mem, Op::Var(None), d.n * d.h * d.c, 0, d.n * d.h * d.c);
    let w = d.layer_params(l).map(|p| {
        let v = var(&mut g, mem, d, p);
        compute_weight(&mut g, mem, d, v)
    });
    let y = layer(&mut g, mem, d, x, w);
    // `(y * grad.detach()).sum_all()`: the detached gradient shares the caller's storage.
    let gd = g.push(mem, Op::Const, 0, 0, d.n * d.h * d.c);
    let prod = g.push(mem, Op::Mul(y, gd), d.n * d.h * d.c, 0, d.n * d.h * d.c);
    let s = g.push(mem, Op::SumAll(prod), d.c, 0, d.c);
    let store = backward(&g, mem, d, s, side);
    mem.enter(Part::Layer(l), true, true);
    let mut x_grad = NONE;
    for (node, e) in store {
        match g.nodes[node].op {
            Op::Var(Some(p)) => {
                side.push((p, e.blk, e.contiguous));
                e.history.into_iter().for_each(|h| mem.free(h));
            }
            _ if node == x => {
                x_grad = e.blk;
                e.history.into_iter().for_each(|h| mem.free(h));
            }
            _ => release(mem, e),
        }
    }
    g.drop_all(mem);
    x_grad
}

/// A checkpointed layer in the forward pass (`recompute::layer`): the layer without a graph
/// (its tensors all alive until `layer` returns; bf16 weight copies on CUDA), then the op's
/// forward copies the output, and the original is freed.
fn checkpointed_forward(g: &mut Graph, mem: &mut Mem, d: &Dims, x: usize, l: usize) -> usize {
    g.part = Part::Layer(l);
    mem.enter(Part::Layer(l), false, true);
    let mut local = Graph::new(Part::Layer(l));
    let xin = local.push(mem, Op::Const, 0, 0, 0);
    let w = d.layer_params(l).map(|p| {
        let bytes = if d.c == 4 { 0 } else { d.params[p].1 * d.c };
        local.push(mem, Op::Const, bytes, 0, 0)
    });
    layer(&mut local, mem, d, xin, w);
    let out = d.n * d.h * d.c;
    // The op's forward copies the output and drops the original (`Recompute::take_output`).
    let node = g.push(mem, Op::Recompute(x, l), out, 0, out);
    local.drop_all(mem);
    node
}

/// AdamW's moments by parameter: the replay's state across steps (the update replaces them).
struct Train {
    m: Vec<Blk>,
    v: Vec<Blk>,
}

/// `Llama::loss` with `training = true` (forward), then `Llama::backward`: the weights'
/// gradients by parameter. Fills `rows` with what the graph keeps on the first call.
fn micro_batch(s: &Setup, d: &Dims, mem: &mut Mem, rows: &mut Option<Bytes>) -> Vec<(Blk, bool)> {
    let m = &s.model;
    let mut g = Graph::new(Part::Embedding);
    mem.enter(Part::Embedding, false, false);
    // The batch (`train_batch`, then a tensor).
    g.push(mem, Op::Const, d.n * 4, 0, 0);
    // `rotary`: f32 frequencies, then cos and sin (compute dtype) for the whole pass.
    let freqs = mem.alloc(d.t * d.head_dim * 4);
    g.push(mem, Op::Const, 2 * d.t * d.head_dim * d.c, 0, 0);
    mem.free(freqs);
    // `embedding` of the f32 master (its gradient: a zeroed f32 table, then `index_add`), the
    // rows then cast to the compute dtype.
    let emb_var = var(&mut g, mem, d, d.param("model.embed_tokens.weight"));
    let x = g.push(mem, Op::Embedding(emb_var), d.n * d.h * 4, 0, d.n * d.h * 4);
    let x = g.view(mem, x);
    let mut x = if d.c != 4 {
        g.push(mem, Op::Cast(x), d.n * d.h * d.c, 0, d.n * d.h * d.c)
    } else {
        x
    };
    for l in 0..m.num_hidden_layers {
        if s.checkpointing {
            x = checkpointed_forward(&mut g, mem, d, x, l);
        } else {
            g.part = Part::Layer(l);
            mem.enter(Part::Layer(l), false, false);
            let w = d.layer_params(l).map(|p| {
                let v = var(&mut g, mem, d, p);
                compute_weight(&mut g, mem, d, v)
            });
            x = layer(&mut g, mem, d, x, w);
        }
    }
    g.part = Part::FinalNorm;
    mem.enter(Part::FinalNorm, false, false);
    let norm_var = var(&mut g, mem, d, d.param("model.norm.weight"));
    let norm_w = compute_weight(&mut g, mem, d, norm_var);
    let x = rms_norm(&mut g, mem, d, x, norm_w);
    g.part = Part::Head;
    mem.enter(Part::Head, false, false);
    let head = if m.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let head_var = var(&mut g, mem, d, d.param(head));
    let head_w = compute_weight(&mut g, mem, d, head_var);
    let mut logits = linear(&mut g, mem, d, x, head_w, d.v);
    if d.c != 4 {
        logits = g.push(mem, Op::Cast(logits), d.n * d.v * 4, 0, d.n * d.v * 4);
    }
    // The fused causal-LM loss keeps one f32 log-sum-exp per row and a copy of the ids; its
    // backward writes the logits' f32 gradient in one tensor.
    let loss = g.push(mem, Op::Fused([Some(logits), None, None]), 4, d.n * 8, 4);
    let scaled = g.push(mem, Op::Scale(loss), 4, 0, 4);

    if rows.is_none() {
        let mut r = Bytes::default();
        for n in &g.nodes {
            if n.weight_copy {
                r.weights += n.bytes;
            } else if n.part == Part::Head {
                r.loss += n.bytes + n.held_bytes;
            } else {
                r.activations += n.bytes + n.held_bytes;
            }
        }
        *rows = Some(r);
    }

    let mut side = Vec::new();
    let store = backward(&g, mem, d, scaled, &mut side);
    // `micro_batch` returns: the graph (every activation) and the store are dropped; the
    // weights' gradients are what it returns.
    mem.enter(Part::Accumulate, false, false);
    let mut grads = vec![(NONE, true); d.params.len()];
    for (node, e) in store {
        match g.nodes[node].op {
            Op::Var(Some(p)) => {
                grads[p] = (e.blk, e.contiguous);
                e.history.into_iter().for_each(|h| mem.free(h));
            }
            _ => release(mem, e),
        }
    }
    for (p, blk, contiguous) in side {
        grads[p] = (blk, contiguous);
    }
    g.drop_all(mem);
    grads
}

/// Parameters in the optimiser's order (`Params` is a `BTreeMap`: by name).
fn by_name(d: &Dims) -> Vec<usize> {
    let mut order: Vec<usize> = (0..d.params.len()).collect();
    order.sort_by(|&a, &b| d.params[a].0.cmp(&d.params[b].0));
    order
}

/// One optimiser step: `accumulation_steps` micro-batches (the first two: the later ones
/// repeat the second), `optim::accumulate` (`prev + g` per tensor), then `optimizer_step`:
/// `optim::clip_factor` (a flat copy of each gradient for its sum of squares, two for a
/// strided one: `flatten_all` copies it first) and `ops::adamw` one parameter at a time
/// (copies of the weight, both moments and the gradient, updated in place; they replace the
/// moments and are copied into the weight).
fn step(s: &Setup, d: &Dims, mem: &mut Mem, st: &mut Train, rows: &mut Option<Bytes>) {
    let order = by_name(d);
    let mut acc: Option<Vec<(Blk, bool)>> = None;
    for _ in 0..s.accumulation_steps.clamp(1, 2) {
        let grads = micro_batch(s, d, mem, rows);
        mem.enter(Part::Accumulate, false, false);
        acc = Some(match acc {
            None => grads,
            Some(prev) => prev
                .into_iter()
                .zip(grads)
                .enumerate()
                .map(|(p, ((a, _), (g, _)))| {
                    let sum = mem.alloc(d.params[p].1 * 4);
                    mem.free(a);
                    mem.free(g);
                    (sum, true)
                })
                .collect(),
        });
    }
    let grads = acc.unwrap_or_default();
    mem.enter(Part::Optimizer, false, true);
    let flat = |mem: &mut Mem, p: usize| {
        let b = d.params[p].1 * 4;
        let copy = if grads[p].1 { NONE } else { mem.alloc(b) };
        let data = mem.alloc(b);
        mem.free(copy);
        data
    };
    for &p in &order {
        let data = flat(mem, p);
        mem.free(data);
    }
    for &p in &order {
        let b = d.params[p].1 * 4;
        let (pv, mv, vv) = (mem.alloc(b), mem.alloc(b), mem.alloc(b));
        let gv = flat(mem, p);
        mem.free(gv);
        mem.free(std::mem::replace(&mut st.m[p], mv));
        mem.free(std::mem::replace(&mut st.v[p], vv));
        mem.free(pv);
    }
    for (g, _) in grads {
        mem.free(g);
    }
    mem.close();
}

/// The replay: initialisation (`init_params`: each weight's values, then the `Var`'s copy of
/// them; `AdamW::new`: zeroed moments) and two steps (the second with the moments the first
/// one replaced, as every later step). Returns the rows, where the peak is and which layer's
/// working set is the largest.
fn replay(s: &Setup) -> (Bytes, String, String) {
    let d = Dims::of(s);
    let mut mem = Mem::new(s.cuda);
    // The master weights live for the whole run: their blocks are never freed.
    for (_, e) in &d.params {
        let values = mem.alloc(e * 4);
        mem.alloc(e * 4);
        mem.free(values);
    }
    let order = by_name(&d);
    let mut moments: Vec<(Blk, Blk)> = vec![(NONE, NONE); d.params.len()];
    for &p in &order {
        moments[p] = (mem.zeros(d.params[p].1 * 4), mem.zeros(d.params[p].1 * 4));
    }
    let mut st = Train {
        m: moments.iter().map(|x| x.0).collect(),
        v: moments.iter().map(|x| x.1).collect(),
    };
    let mut rows = None;
    for _ in 0..2 {
        step(s, &d, &mut mem, &mut st, &mut rows);
    }
    let mut rows = rows.unwrap_or_default();

    let worst = |p: &dyn Fn(&Part) -> bool| {
        mem.worst
            .iter()
            .filter(|(k, _)| p(k))
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    };
    let params: u64 = d.params.iter().map(|(_, e)| e).sum();
    let layers = worst(&|p| matches!(p, Part::Layer(_) | Part::FinalNorm));
    let embedding = worst(&|p| *p == Part::Embedding);
    rows.layer_peak = layers.max(embedding);
    let layer_peak_at = if embedding > layers {
        "the embedding"
    } else {
        "a decoder layer"
    };
    rows.loss += worst(&|p| *p == Part::Head);
    rows.optimizer = worst(&|p| *p == Part::Optimizer);
    rows.master = params * 4;
    rows.moments = params * 8;
    rows.gradients = params * 4 * if s.accumulation_steps > 1 { 2 } else { 1 };
    rows.baseline = if s.cuda {
        RESERVE_CUDA
    } else {
        s.process + STEP_OVERHEAD_CPU + s.data_bytes
    };
    rows.total = mem.peak + rows.baseline;
    (
        rows,
        mem.peak_at.0.describe(mem.peak_at.1),
        layer_peak_at.to_string(),
    )
}

/// The model a run of this configuration trains, as `Run::prepare` picks it, and where it
/// comes from: the latest checkpoint in `state_dir` (a restart resumes it), else
/// `trainer.start`'s: `[trainer.model]` for `scratch` (the vocabulary: `vocab_size`, else the
/// tokenizer's), the directory's `config.json` for `model-dir`. Another miner's model (`uid`,
/// `best`) is known only once downloaded. Reads only: nothing in `state_dir` is changed.
pub fn configured_model(
    t: &TrainerConfig,
    state_dir: Option<&Path>,
) -> Result<(LlamaConfig, String)> {
    use crate::checkpoint::{read_config, RunIndex};
    if let Some(dir) = state_dir {
        let index: Option<RunIndex> =
            taominer_core::daemon::store::read_json(&dir.join("run.json"))?;
        if let Some(rec) = index.as_ref().and_then(|i| i.latest()) {
            let model = dir.join("checkpoints").join(&rec.name).join("model");
            return Ok((
                read_config(&model)?,
                format!("checkpoint {} (a restart resumes it)", rec.name),
            ));
        }
    }
    let start = t.resolve_start().map_err(|e| Error::Model(e.to_string()))?;
    match start {
        Start::ModelDir(dir) => Ok((read_config(&dir)?, dir.display().to_string())),
        Start::Uid(_) | Start::Best => Err(Error::Model(format!(
            "trainer.start = {:?} trains another miner's model, known once it is downloaded: plan its directory with --load-model-dir DIR",
            t.start.as_str()
        ))),
        Start::Scratch => {
            let vocab = if t.model.vocab_size != 0 {
                t.model.vocab_size
            } else {
                match &t.tokenizer {
                    Some(p) => crate::data::Tok::from_file(p)?.vocab_size(),
                    None => crate::data::Tok::builtin_bytes()?.vocab_size(),
                }
            };
            let cfg = LlamaConfig::from_sizes(&t.model, vocab);
            cfg.check()?;
            Ok((cfg, "[trainer.model]".into()))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Capacity

/// The memory a run may use and where that figure comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    pub bytes: u64,
    pub source: String,
}

/// Capacity of `device`. CPU: what the system can still give (`MemAvailable`, or the cgroup's
/// limit less its usage when lower, see [`cgroup_available`]) plus `held`, what the calling process already
/// holds (the plan's baseline counts it). CUDA: the device's free memory. `None` when unknown.
pub fn capacity(device: &candle_core::Device, held: u64) -> Option<Capacity> {
    if device.is_cpu() {
        return host_capacity(held);
    }
    cuda_free(device).map(|free| Capacity {
        bytes: free,
        source: "free device memory".into(),
    })
}

/// The CUDA device's (free, total) memory, binding its context to the calling thread.
#[cfg(feature = "cuda")]
fn cuda_mem_info(device: &candle_core::Device) -> Option<(u64, u64)> {
    let candle_core::Device::Cuda(d) = device else {
        return None;
    };
    d.cuda_stream().context().bind_to_thread().ok()?;
    let (free, total) = candle_core::cuda::cudarc::driver::result::mem_get_info().ok()?;
    Some((free as u64, total as u64))
}

#[cfg(not(feature = "cuda"))]
fn cuda_mem_info(_device: &candle_core::Device) -> Option<(u64, u64)> {
    None
}

/// The CUDA device's free memory; `None` on the CPU (or a build without CUDA).
pub fn cuda_free(device: &candle_core::Device) -> Option<u64> {
    cuda_mem_info(device).map(|(free, _)| free)
}

/// The CUDA device's total memory; `None` on the CPU (or a build without CUDA).
pub fn cuda_total(device: &candle_core::Device) -> Option<u64> {
    cuda_mem_info(device).map(|(_, total)| total)
}

fn host_capacity(held: u64) -> Option<Capacity> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = kib_field(&meminfo, "MemAvailable:")?;
    let (bytes, source) = match cgroup_available() {
        Some((c, path)) if c < available => (
            c,
            format!("cgroup {path}: memory.max − memory.current + inactive_file"),
        ),
        _ => (available, "MemAvailable".to_string()),
    };
    Some(Capacity {
        bytes: bytes + held,
        source: if held > 0 {
            format!("{source}, plus this process's resident memory")
        } else {
            source
        },
    })
}

/// A `Key:   123 kB` line of `/proc/meminfo` or `/proc/self/status`, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// cgroup v2: the least `memory.max − memory.current` over the process's cgroup and its
/// ancestors (a limit anywhere above applies too). `memory.current` counts the page cache; its
/// inactive part (`inactive_file` in `memory.stat`) is reclaimed before the limit is enforced,
/// so it is counted as available.
fn cgroup_available() -> Option<(u64, String)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_available_in(Path::new("/sys/fs/cgroup"), &cgroup)
}

/// [`cgroup_available`] with the cgroup2 mount at `root` and `/proc/self/cgroup`'s text.
fn cgroup_available_in(root: &Path, proc_cgroup: &str) -> Option<(u64, String)> {
    let path = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    let mut best: Option<(u64, String)> = None;
    let mut dir = root.join(path.trim_start_matches('/'));
    loop {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let number = |f: &str| read(f).and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(max), Some(current)) = (number("memory.max"), number("memory.current")) {
            let inactive = read("memory.stat")
                .and_then(|stat| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix("inactive_file "))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            let left = max.saturating_sub(current.saturating_sub(inactive));
            if best.as_ref().is_none_or(|(b, _)| left < *b) {
                best = Some((left, dir.display().to_string()));
            }
        }
        if dir == root || !dir.pop() {
            break;
        }
    }
    best
}

/// This process's resident memory (`VmRSS`), 0 when unknown.
pub fn resident() -> u64 {
    status_field("VmRSS:").unwrap_or(0)
}

/// This process's peak resident memory (`VmHWM`).
pub fn peak_resident() -> Option<u64> {
    status_field("VmHWM:")
}

fn status_field(key: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, key)
}

/// The token streams a run will hold: the token cache in `state_dir/tokens` when it exists
/// (the data is 4 bytes a token in memory as on disk). 0 before the first run has built it.
pub fn data_bytes(state_dir: &Path) -> u64 {
    std::fs::read_dir(state_dir.join("tokens"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "tokens"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// What to turn when a run does not fit

/// One way to make a run fit: the settings to change and the plan's total with them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Knob {
    /// `key=value`, as `--set` takes them.
    pub set: Vec<String>,
    pub total: u64,
    /// What the change keeps or costs.
    pub note: String,
}

/// The ways to make `setup` fit in `capacity` bytes, in order of least harm: a smaller batch
/// with more accumulation steps (the same sequences a step), a shorter sequence (with more
/// accumulation steps for the same tokens a step), activation checkpointing (about a third
/// more compute). Each is the mildest setting of its knob that fits, with the knobs before it
/// turned as far as needed. Empty when none fits: only a smaller model will.
pub fn knobs(setup: &Setup, capacity: u64) -> Vec<Knob> {
    let total = |s: &Setup| plan(s).bytes.total;
    let (b, a) = (setup.batch_size, setup.accumulation_steps);
    let sequences = b * a;
    // Batch sizes below `b` that keep the sequences a step, largest first.
    let batches = |from: usize| (1..from).rev().filter(move |x| sequences % x == 0);
    let mut out = Vec::new();

    // `batch` sequences of `seq` tokens, with the accumulation steps that keep the sequences a
    // step (a shorter sequence means fewer tokens a step: more accumulation would add a
    // gradient buffer, 4 bytes a parameter).
    let with = |batch: usize, seq: usize, ckpt: bool| {
        let mut s = setup.clone();
        s.batch_size = batch;
        s.sequence_length = seq;
        s.checkpointing = ckpt;
        s.accumulation_steps = sequences.div_ceil(batch);
        s
    };
    let describe = |s: &Setup| {
        let mut set = Vec::new();
        if s.batch_size != b {
            set.push(format!("trainer.batch_size={}", s.batch_size));
        }
        if s.sequence_length != setup.sequence_length {
            set.push(format!("trainer.sequence_length={}", s.sequence_length));
        }
        if s.accumulation_steps != a {
            set.push(format!(
                "trainer.accumulation_steps={}",
                s.accumulation_steps
            ));
        }
        if s.checkpointing != setup.checkpointing {
            set.push(format!(
                "trainer.checkpoint_activations={}",
                s.checkpointing
            ));
        }
        set
    };

    // 1. The batch: same sequences a step, same sequence length.
    if let Some(s) = batches(b)
        .map(|x| with(x, setup.sequence_length, setup.checkpointing))
        .find(|s| total(s) <= capacity)
    {
        out.push(Knob {
            set: describe(&s),
            total: total(&s),
            note: format!("{sequences} sequences a step, as now"),
        });
    }
    // 2. The sequence length (halved until it fits, 64 at the least), at the largest batch
    //    that then fits.
    let shorter: Vec<usize> =
        std::iter::successors(Some(setup.sequence_length / 2), |s| Some(s / 2))
            .take_while(|&s| s >= 64)
            .collect();
    let search = |ckpt: bool, seqs: &[usize]| {
        seqs.iter().find_map(|&seq| {
            std::iter::once(b)
                .chain(batches(b))
                .map(|x| with(x, seq, ckpt))
                .find(|s| total(s) <= capacity)
        })
    };
    if let Some(s) = search(setup.checkpointing, &shorter) {
        out.push(Knob {
            set: describe(&s),
            total: total(&s),
            note: format!(
                "{} tokens a step instead of {}",
                sequences * s.sequence_length,
                sequences * setup.sequence_length
            ),
        });
    }
    // 3. Activation checkpointing, at the full sequence length if it can, else shorter.
    if !setup.checkpointing {
        let mut seqs = vec![setup.sequence_length];
        seqs.extend(&shorter);
        if let Some(s) = search(true, &seqs) {
            out.push(Knob {
                set: describe(&s),
                total: total(&s),
                note: "about a third more compute a step".into(),
            });
        }
    }
    out
}

/// What to tell a user whose run does not fit: the knobs in order, or a smaller model.
pub fn advice(setup: &Setup, plan: &Plan, capacity: u64) -> String {
    let ks = knobs(setup, capacity);
    if ks.is_empty() {
        return format!(
            "no batch size, sequence length or checkpointing setting fits: use a smaller model (the f32 weights, gradients and AdamW moments alone take 16 bytes a parameter, {} for these {} parameters)",
            gib(plan.parameters * 16),
            plan.parameters
        );
    }
    let list: Vec<String> = ks
        .iter()
        .map(|k| format!("{} ({}; {})", k.set.join(" "), k.note, gib(k.total)))
        .collect();
    format!(
        "in order of least harm: {}; or a smaller model",
        list.join("; or ")
    )
}

/// `12.61 GiB`, or `81.8 MiB` under 1 GiB.
fn gib(b: u64) -> String {
    let (unit, scale, decimals) = unit(b);
    format!("{:.*} {unit}", decimals, b as f64 / scale)
}

// ---------------------------------------------------------------------------------------------
// The daemon's check

/// `Run::prepare`'s check, once the model's config is known and before its weights are
/// allocated: refuses a run whose plan exceeds the device's capacity, naming the knobs.
pub fn admit(
    t: &TrainerConfig,
    model: &LlamaConfig,
    device: &candle_core::Device,
    state_dir: &Path,
) -> Result<Plan> {
    let setup = Setup::new(t, model, !device.is_cpu(), data_bytes(state_dir));
    let p = plan(&setup);
    let Some(cap) = capacity(device, resident()) else {
        tracing::warn!(
            "memory plan: the step peaks at {} ({}); the capacity of {} is unknown",
            gib(p.bytes.total),
            p.peak_at,
            t.device
        );
        return Ok(p);
    };
    if p.bytes.total > cap.bytes {
        return Err(Error::Memory(format!(
            "the run needs {} at its peak ({}) but {} has {} ({}); {} (`miner-trainer plan` shows the whole plan)",
            gib(p.bytes.total),
            p.peak_at,
            t.device,
            gib(cap.bytes),
            cap.source,
            advice(&setup, &p, cap.bytes)
        )));
    }
    tracing::info!(
        "memory plan: the step peaks at {} ({}) of {} on {}",
        gib(p.bytes.total),
        p.peak_at,
        gib(cap.bytes),
        t.device
    );
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// The printed plan

/// `80GB`, `79.6GiB`, `512MiB`, or a number of GiB.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let x: f64 = num.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "gib" | "g" => (1u64 << 30) as f64,
        "gb" => 1e9,
        "mib" | "m" => (1u64 << 20) as f64,
        "mb" => 1e6,
        "tib" | "t" => (1u64 << 40) as f64,
        "tb" => 1e12,
        _ => return None,
    };
    Some((x * scale) as u64)
}

/// What `miner-trainer plan` prints: the table (or JSON with `json`), the advice when the run
/// does not fit `capacity`, and `measured` = (steps, peak RSS) of `--measure`.
pub fn report(
    setup: &Setup,
    p: &Plan,
    from: &str,
    capacity: Option<&Capacity>,
    measured: Option<(usize, u64)>,
    json: bool,
) -> Result<String> {
    let over = capacity.filter(|c| p.bytes.total > c.bytes);
    let advice = over.map(|c| advice(setup, p, c.bytes));
    if json {
        let out = serde_json::json!({
            "model_from": from,
            "plan": p,
            "capacity": capacity,
            "fits": capacity.map(|c| p.bytes.total <= c.bytes),
            "knobs": over.map(|c| knobs(setup, c.bytes)),
            "advice": advice,
            "measured_peak_rss": measured.map(|(_, m)| m),
        });
        let text =
            serde_json::to_string_pretty(&out).map_err(|e| Error::Model(format!("plan: {e}")))?;
        return Ok(text + "\n");
    }
    let mut out = format!("model from {from}\n");
    out.push_str(&table(p, capacity, advice.as_deref()));
    if let Some((steps, m)) = measured {
        let predicted = p.bytes.total as f64;
        out.push_str(&format!(
            "\nmeasured peak RSS after {steps} steps: {:.1} MiB; predicted {:.1} MiB ({:+.1} %)\n",
            m as f64 / MIB as f64,
            predicted / MIB as f64,
            (predicted - m as f64) / m as f64 * 100.0
        ));
    }
    Ok(out)
}

/// `miner-trainer plan`'s table.
pub fn table(p: &Plan, cap: Option<&Capacity>, knobs: Option<&str>) -> String {
    let mut s = String::new();
    let params = p.parameters as f64;
    let size = if params >= 1e9 {
        format!("{:.2} B", params / 1e9)
    } else {
        format!("{:.1} M", params / 1e6)
    };
    s.push_str(&format!(
        "model     {size} parameters: hidden {}, {} layers, {} heads / {} KV heads, intermediate {}, vocab {}, {} embeddings\n",
        p.hidden_size,
        p.num_hidden_layers,
        p.num_attention_heads,
        p.num_key_value_heads,
        p.intermediate_size,
        p.vocab_size,
        if p.tie_word_embeddings { "tied" } else { "untied" }
    ));
    s.push_str(&format!(
        "step      batch {} × {} tokens, {} accumulation step{} ({} tokens a step)\n",
        p.batch_size,
        p.sequence_length,
        p.accumulation_steps,
        if p.accumulation_steps == 1 { "" } else { "s" },
        p.batch_size * p.sequence_length * p.accumulation_steps
    ));
    s.push_str(&format!(
        "device    {}: {} compute, f32 master weights, activation checkpointing {}\n\n",
        p.device,
        p.compute_dtype,
        if p.checkpoint_activations {
            "on"
        } else {
            "off"
        }
    ));
    let b = &p.bytes;
    let (_, scale, decimals) = unit(b.total);
    let g = |x: u64| format!("{:.*}", decimals, x as f64 / scale);
    let weights = if p.compute_dtype == "f32" {
        "weights' compute copies (none: f32)".to_string()
    } else {
        format!("weights' compute copies ({})", p.compute_dtype)
    };
    let baseline = if p.compute_dtype == "bf16" {
        "device reserve"
    } else {
        "process (binary, threads, tokenizer, data)"
    };
    let total = format!("total (peak: {})", p.peak_at);
    let layer = format!("largest layer's working set ({})", p.layer_peak_at);
    let mut rows: Vec<(&str, String)> = vec![
        (&weights, g(b.weights)),
        ("master weights (f32)", g(b.master)),
        ("gradients (f32)", g(b.gradients)),
        ("AdamW moments (2 × f32)", g(b.moments)),
        ("activations kept for the backward pass", g(b.activations)),
        (&layer, g(b.layer_peak)),
        ("logits and loss", g(b.loss)),
        ("optimizer update", g(b.optimizer)),
        (baseline, g(b.baseline)),
        (&total, g(b.total)),
    ];
    let cap_label;
    if let Some(c) = cap {
        cap_label = format!("capacity ({})", c.source);
        rows.push((&cap_label, g(c.bytes)));
        rows.push((
            "fits",
            if b.total <= c.bytes { "yes" } else { "no" }.to_string(),
        ));
    }
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    s.push_str(&format!("{:width$}  {:>8}\n", "", unit(b.total).0));
    for (k, v) in rows {
        s.push_str(&format!("{k:width$}  {v:>8}\n"));
    }
    if let Some(k) = knobs {
        s.push_str(&format!("\ndoes not fit; {k}\n"));
    }
    s
}

/// GiB with two decimals; MiB with one for a plan under 1 GiB (a CPU-sized model).
fn unit(total: u64) -> (&'static str, f64, usize) {
    if total as f64 >= GIB {
        ("GiB", GIB, 2)
    } else {
        ("MiB", MIB as f64, 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// `miner-trainer plan --measure N`: `steps` optimiser steps of the configured model on random
/// token ids, on the CPU, in this process, through the loop's own step code
/// (`train::micro_batch`, `optim::accumulate`, `train::optimizer_step`), on a thread of its own
/// as the daemon's loop runs. Returns the process's peak resident memory (`VmHWM`).
pub fn measure(t: &TrainerConfig, model: &LlamaConfig, steps: usize) -> Result<u64> {
    use candle_core::{DType, Device, Tensor};
    let (t, model) = (t.clone(), model.clone());
    let run = move || -> Result<()> {
        let device = Device::Cpu;
        let params = crate::model::init_params(&model, t.seed, &device)?;
        let mut opt = crate::optim::AdamW::new(&params, &t)?;
        let llama = crate::model::Llama::new(model.clone(), params, DType::F32)?
            .with_checkpointing(checkpointing(&t, false));
        let mut rng = crate::rng::Rng::new(t.seed);
        let n = t.batch_size * t.sequence_length;
        for step in 0..steps {
            let mut grads = HashMap::new();
            for _ in 0..t.accumulation_steps {
                let ids: Vec<u32> = (0..n).map(|_| rng.below(model.vocab_size) as u32).collect();
                let ids = Tensor::from_vec(ids, (t.batch_size, t.sequence_length), &device)?;
                let (_loss, micro) = crate::train::micro_batch(&llama, &ids, t.accumulation_steps)?;
                crate::optim::accumulate(&mut grads, micro)?;
            }
            crate::train::optimizer_step(&llama, &mut opt, grads, &t, step as u64)?;
        }
        Ok(())
    };
    std::thread::Builder::new()
        .name("train".into())
        .spawn(run)
        .map_err(|e| Error::Device(format!("cannot start the measuring thread: {e}")))?
        .join()
        .map_err(|_| Error::Device("the measuring thread panicked".into()))??;
    peak_resident().ok_or_else(|| Error::Device("/proc/self/status has no VmHWM".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--capacity` takes decimal and binary units, and a bare number is GiB.
    #[test]
    fn capacity_sizes_parse() {
        assert_eq!(parse_size("80GB"), Some(80_000_000_000));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5"), Some(3 << 29));
        assert_eq!(parse_size("2 TiB"), Some(2 << 40));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("GB"), None);
    }

    /// SN9 B3's 3.39 B LLaMA: hidden 3072, 28 layers, 24 heads / 8 KV heads, intermediate
    /// 8000, vocab 100 288, untied.
    fn b3() -> LlamaConfig {
        let sizes = taominer_core::config::TrainerModelConfig {
            vocab_size: 100_288,
            hidden_size: 3072,
            intermediate_size: 8000,
            num_hidden_layers: 28,
            num_attention_heads: 24,
            num_key_value_heads: 8,
            max_position_embeddings: 4096,
            tie_word_embeddings: false,
            ..Default::default()
        };
        LlamaConfig::from_sizes(&sizes, 100_288)
    }

    fn setup(checkpointing: bool) -> Setup {
        Setup {
            model: b3(),
            batch_size: 1,
            sequence_length: 4096,
            accumulation_steps: 1,
            cuda: true,
            device: Device::Cuda(None),
            checkpointing,
            data_bytes: 0,
            process: 0,
        }
    }

    /// Proves the acceptance figure: the 3.39 B model at batch 1 × 4096 tokens in
    /// bf16 fits in an 80 GB GPU (80·10⁹ bytes) with activation checkpointing; prints both
    /// tables (without checkpointing it does not fit, and the plan says what to turn).
    #[test]
    fn sn9_b3_fits_in_80_gb_with_checkpointing() {
        let gb80 = 80_000_000_000;
        let on = plan(&setup(true));
        assert!(
            (3.3e9..3.5e9).contains(&(on.parameters as f64)),
            "{}",
            on.parameters
        );
        let cap = Capacity {
            bytes: gb80,
            source: "80 GB".into(),
        };
        println!("{}", table(&on, Some(&cap), None));
        assert!(on.bytes.total <= gb80, "{}", on.bytes.total);

        let off = plan(&setup(false));
        let advice = (off.bytes.total > gb80).then(|| advice(&setup(false), &off, gb80));
        println!("{}", table(&off, Some(&cap), advice.as_deref()));
        assert!(off.bytes.activations > 10 * on.bytes.activations);
    }

    /// Proves the knobs come in the documented order (batch, then sequence length, then
    /// checkpointing), that each one listed does fit, and that the 3.39 B run without
    /// checkpointing is told to turn it on.
    #[test]
    fn knobs_fit_and_come_in_order_of_least_harm() {
        let gb80 = 80_000_000_000;
        let mut s = setup(false);
        s.batch_size = 4;
        let ks = knobs(&s, gb80);
        assert!(!ks.is_empty());
        let rank = |k: &Knob| {
            if k.set
                .iter()
                .any(|x| x.starts_with("trainer.checkpoint_activations"))
            {
                2
            } else if k
                .set
                .iter()
                .any(|x| x.starts_with("trainer.sequence_length"))
            {
                1
            } else {
                0
            }
        };
        for pair in ks.windows(2) {
            assert!(rank(&pair[0]) < rank(&pair[1]), "{ks:?}");
        }
        for k in &ks {
            assert!(k.total <= gb80, "{k:?}");
        }
        assert!(ks
            .iter()
            .any(|k| k.set == vec!["trainer.checkpoint_activations=true".to_string()]));
        let text = advice(&setup(false), &plan(&setup(false)), gb80);
        assert!(
            text.contains("trainer.checkpoint_activations=true"),
            "{text}"
        );
    }

    /// Proves the cgroup v2 capacity: the least `memory.max − memory.current` (with the
    /// inactive page cache counted as free) over the process's cgroup and its ancestors, and
    /// none where no ancestor has a limit.
    #[test]
    fn cgroup_capacity_takes_the_tightest_ancestor() {
        let root = std::env::temp_dir().join(format!("plan-cgroup-{}", std::process::id()));
        let leaf = root.join("system.slice/miner-trainer.service");
        std::fs::create_dir_all(&leaf).unwrap();
        let write = |dir: &Path, max: &str, current: u64, inactive: u64| {
            std::fs::write(dir.join("memory.max"), max).unwrap();
            std::fs::write(dir.join("memory.current"), current.to_string()).unwrap();
            std::fs::write(
                dir.join("memory.stat"),
                format!("anon 1\nfile 2\ninactive_file {inactive}\nactive_file 3\n"),
            )
            .unwrap();
        };
        write(&leaf, "max\n", 5 << 30, 0);
        assert_eq!(
            cgroup_available_in(&root, "0::/system.slice/miner-trainer.service\n"),
            None
        );
        write(&root.join("system.slice"), "8589934592\n", 7 << 30, 1 << 30);
        let (left, dir) =
            cgroup_available_in(&root, "0::/system.slice/miner-trainer.service\n").unwrap();
        assert_eq!(left, 2 << 30, "8 GiB − (7 GiB − 1 GiB inactive)");
        assert!(dir.ends_with("system.slice"), "{dir}");
        write(&leaf, "2147483648", 1 << 30, 0);
        let (left, _) = cgroup_available_in(
            &root,
            "12:memory:/x\n0::/system.slice/miner-trainer.service\n",
        )
        .unwrap();
        assert_eq!(left, 1 << 30);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Proves the accounting rows are what the module doc says: 4 bytes a parameter for the
    /// master and the gradients (twice with accumulation), 8 for the moments; no compute copies
    /// on the CPU; nothing grows with t² (doubling the sequence at most doubles activations).
    #[test]
    fn rows_follow_the_implementation() {
        let mut s = setup(false);
        s.cuda = false;
        s.device = Device::Cpu;
        let p = plan(&s);
        let n = p.parameters;
        assert_eq!(p.bytes.master, 4 * n);
        assert_eq!(p.bytes.moments, 8 * n);
        assert_eq!(p.bytes.gradients, 4 * n);
        assert_eq!(p.bytes.weights, 0);
        s.accumulation_steps = 2;
        assert_eq!(plan(&s).bytes.gradients, 8 * n);
        s.accumulation_steps = 1;
        s.sequence_length = 8192;
        let long = plan(&s);
        assert!(long.bytes.activations <= 2 * p.bytes.activations + (1 << 20));
    }
}
