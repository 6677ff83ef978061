//! Activation checkpointing: a decoder layer whose activations are not kept for the backward
//! pass but recomputed there from the layer's input.
//!
//! Without it every layer keeps its intermediates (norms, projections, attention output, MLP
//! hidden states: about `6·hidden + 3·intermediate` values per token) until the backward pass
//! reaches it, which is what bounds a competition-size run on a GPU. With it the forward pass
//! runs each layer with no gradient graph and records one node, [`Recompute`], holding the
//! layer's input and output; the backward pass runs the layer again from that input, with a
//! graph, and takes the gradients of that small graph.
//!
//! candle has no hook for this, so it is a `CustomOp1`: its forward returns the output already
//! computed (a copy), and its `bwd` does the local recompute + backward. candle's backward only
//! carries gradients to the op's argument (the layer input), so the weights' gradients go to
//! [`SideGrads`], which [`Llama::backward`](super::Llama::backward) merges with the rest. The
//! recomputed layer runs exactly the same ops on the same values, so its gradients are those
//! of an uncheckpointed run (to f32 rounding; the tests check both ways).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor, Var};

use super::{LayerWeights, Pass};
use crate::error::Result;

/// Weight gradients produced during a backward pass by checkpointed layers, by name.
#[derive(Clone, Default)]
pub struct SideGrads(Arc<Mutex<HashMap<String, Tensor>>>);

impl SideGrads {
    pub fn clear(&self) {
        if let Ok(mut g) = self.0.lock() {
            g.clear();
        }
    }

    pub fn take(&self) -> HashMap<String, Tensor> {
        self.0
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default()
    }

    fn add(&self, name: &str, grad: Tensor) -> candle_core::Result<()> {
        let Ok(mut g) = self.0.lock() else {
            candle_core::bail!("checkpointed layer: gradient store poisoned");
        };
        let next = match g.remove(name) {
            Some(prev) => (prev + grad)?,
            None => grad,
        };
        g.insert(name.to_string(), next);
        Ok(())
    }
}

/// Runs decoder layer `w` on `x` keeping only `x` (and the output) for the backward pass.
/// `vars` are the layer's `Var`s (f32 masters) by name.
pub(crate) fn layer(
    x: &Tensor,
    vars: Vec<(String, Tensor)>,
    pass: &Pass,
    side: &SideGrads,
) -> Result<Tensor> {
    // No graph: every intermediate is freed as soon as the next op has used it.
    let detached = LayerWeights::cast(&vars, pass.compute, false)?;
    let y = super::layer(&x.detach(), &detached, pass)?.contiguous()?;
    let op = Recompute {
        output: Mutex::new(Some(y)),
        vars,
        pass: pass.clone(),
        side: side.clone(),
    };
    Ok(x.apply_op1(op)?)
}

struct Recompute {
    /// The layer's output, computed without a graph, until the op's forward hands out its copy
    /// (and drops this one: only the copy is kept for the backward pass).
    output: Mutex<Option<Tensor>>,
    /// The weights' `Var`s, so the recomputed graph reaches them.
    vars: Vec<(String, Tensor)>,
    pass: Pass,
    side: SideGrads,
}

impl Recompute {
    fn take_output(&self) -> candle_core::Result<Tensor> {
        let taken = self.output.lock().ok().and_then(|mut o| o.take());
        taken.ok_or_else(|| candle_core::Error::Msg("checkpointed layer: forward ran twice".into()))
    }
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "checkpointed-decoder-layer"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let output = self.take_output()?;
        let (storage, layout) = output.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("checkpointed layer: output is not on the CPU");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("checkpointed layer: output is not contiguous");
        };
        let copy = match cpu {
            CpuStorage::F32(d) => CpuStorage::F32(d[start..end].to_vec()),
            CpuStorage::BF16(d) => CpuStorage::BF16(d[start..end].to_vec()),
            CpuStorage::F16(d) => CpuStorage::F16(d[start..end].to_vec()),
            _ => candle_core::bail!("checkpointed layer: unsupported dtype"),
        };
        Ok((copy, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _s: &candle_core::CudaStorage,
        _l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let output = self.take_output()?;
        let (storage, layout) = output.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else {
            candle_core::bail!("checkpointed layer: output is not on the GPU");
        };
        // candle's CUDA `try_clone` copies the whole buffer whatever the layout, and the copy is
        // read from its start: only a contiguous output at offset 0 comes back as itself.
        if !matches!(layout.contiguous_offsets(), Some((0, _))) {
            candle_core::bail!("checkpointed layer: output is not contiguous from its start");
        }
        Ok((cuda.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // A fresh leaf: the graph must stop at this layer's input, not run on into the layers
        // before it (their own nodes get this gradient from the outer backward pass).
        let x = Var::from_tensor(&arg.detach())?;
        let msg =
            |e: crate::error::Error| candle_core::Error::Msg(format!("checkpointed layer: {e}"));
        let weights = LayerWeights::cast(&self.vars, self.pass.compute, true).map_err(msg)?;
        let y = super::layer(x.as_tensor(), &weights, &self.pass).map_err(msg)?;
        let local = (y * grad.detach())?.sum_all()?.backward()?;
        for (name, w) in &self.vars {
            if let Some(g) = local.get(w) {
                self.side.add(name, g.detach())?;
            }
        }
        Ok(local.get(x.as_tensor()).map(|g| g.detach()))
    }
}
