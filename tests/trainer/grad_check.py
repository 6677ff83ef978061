"""The PyTorch side of tests/tests/trainer_grads.rs: gradient and step exactness.

    grad_check.py CASE_DIR...

Each CASE_DIR holds what the Rust test wrote with the trainer's own code:
    model/             the initial weights, a transformers model directory (f32)
    ours.safetensors   grad.NAME and grad_ckpt.NAME: our gradients of the mean next-token loss
                       on meta's grad_ids, without and with activation checkpointing;
                       stepK.grad.NAME: step K's accumulated gradients, before the clip;
                       final.NAME: our weights after meta's optimiser steps
    meta.json          grad_ids, our losses, and per step the micro-batches, losses, learning
                       rate and pre-clip gradient norm; the optimiser settings

Here LlamaForCausalLM (CPU torch, float32) loads model/ and
  * computes model(ids, labels=ids).loss.backward() with eager and sdpa attention: the loss
    within 1e-5 relative, every parameter's gradient (ours, plain and checkpointed) within
    1e-4 * max|g_torch| of that tensor;
  * replays the steps: loss / accumulation_steps backward per micro-batch (each step's losses
    and accumulated gradients compared with ours), clip_grad_norm_, the learning rate from the
    schedule written out here, torch.optim.AdamW with two parameter groups (weight decay on
    p.dim() >= 2, none on the norms). Stepping with our gradients, every weight must end within
    1e-5 * max|w_torch| of ours; stepping with its own, within 1e-2 in L2 (see check_steps).

Prints one line per check and "N passed, M failed"; exits 1 on a failure.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()

GRAD_TOL = 1e-4
LOSS_TOL = 1e-5
WEIGHT_TOL = 1e-5
FREE_TOL = 1e-2

results = []


def expect(name, ok, detail=""):
    results.append(bool(ok))
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)


def learning_rate(step, t):
    """Linear warmup to lr over warmup_steps, then cosine to lr * min_lr_ratio at max_steps."""
    lr, warmup, total, min_ratio = t["lr"], t["warmup_steps"], t["max_steps"], t["min_lr_ratio"]
    if step < warmup:
        return lr * (step + 1) / warmup
    if total <= warmup:
        return lr
    progress = min((step - warmup) / (total - warmup), 1.0)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def load(case_dir, attn):
    model = LlamaForCausalLM.from_pretrained(os.path.join(case_dir, "model"), dtype=torch.float32,
                                             attn_implementation=attn)
    model.train()  # as a training step runs; attention_dropout is 0
    return model


def worst_rel(pairs):
    """(worst max|a - b| / max|b| over the tensors, its name); pairs: name -> (a, b)."""
    worst, where = 0.0, ""
    for name, (a, b) in pairs.items():
        scale = b.abs().max().item()
        rel = (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()
        if rel > worst or not where:
            worst, where = rel, name
    return worst, where


def check_grads(case, case_dir, meta, ours, attn):
    model = load(case_dir, attn)
    rope = getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_scaling", None) or {}
    got = rope.get("rope_type", "default")
    expect(f"{case} {attn}: transformers reads rope_type {meta['rope_type']}", got == meta["rope_type"], got)
    ids = torch.tensor(meta["grad_ids"])
    loss = model(ids, labels=ids).loss
    loss.backward()
    theirs = loss.item()
    for label, key in [("plain", "loss"), ("checkpointed", "loss_ckpt")]:
        rel = abs(meta[key] - theirs) / abs(theirs)
        expect(f"{case} {attn}: {label} loss within {LOSS_TOL:g} relative", rel <= LOSS_TOL,
               f"torch {theirs:.7f}, ours {meta[key]:.7f}, rel {rel:.1e}")
    named = dict(model.named_parameters())
    for label, prefix in [("plain", "grad."), ("checkpointed", "grad_ckpt.")]:
        mine = {k[len(prefix):]: v for k, v in ours.items() if k.startswith(prefix)}
        same = set(mine) == set(named)
        expect(f"{case} {attn}: {label} gradients for exactly the parameters", same,
               f"{len(named)} tensors" if same
               else f"ours only {sorted(set(mine) - set(named))}, torch only {sorted(set(named) - set(mine))}")
        if not same:
            continue
        worst, where = worst_rel({n: (mine[n], p.grad) for n, p in named.items()})
        expect(f"{case} {attn}: {label} gradients within {GRAD_TOL:g} x max|g|", worst <= GRAD_TOL,
               f"worst {where} {worst:.2e}")


def adamw(model, t):
    """torch.optim.AdamW with weight decay on matrices (p.dim() >= 2) only, as ours."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"])


def check_steps(case, case_dir, meta, ours):
    """Two torch trajectories from the initial weights.

    `fed` computes its own gradients at each step (compared with ours, GRAD_TOL) but steps with
    ours: its weights isolate clip_grad_norm_, the schedule and AdamW, and must equal ours to
    WEIGHT_TOL. `free` steps with its own gradients throughout, as PyTorch training would. Its
    weights cannot be held to WEIGHT_TOL element by element: Adam divides each element's update
    by that element's own gradient scale, so an element whose gradient is near eps or whose
    moment cancels (sign changes between steps) turns f32 rounding far below GRAD_TOL into an
    update error up to lr, and the trajectories then drift apart (measured over six seeds: up to
    1.6e-2 x max|w| for single elements, 5e-4 per tensor in L2). So it gets the L2 bound FREE_TOL,
    a check that the end-to-end trajectories stay together, not a precision claim."""
    t = meta["trainer"]
    fed, free = load(case_dir, "eager"), load(case_dir, "eager")
    fed_opt, free_opt = adamw(fed, t), adamw(free, t)
    clipped, n = 0, len(meta["steps"])
    worst = {"loss": 0.0, "grad": (0.0, ""), "norm": 0.0, "own norm": 0.0, "lr": 0.0}
    for step, s in enumerate(meta["steps"]):
        for model, opt in [(fed, fed_opt), (free, free_opt)]:
            opt.zero_grad(set_to_none=True)
            for ids, mine in zip(s["micro_batches"], s["losses"]):
                ids = torch.tensor(ids)
                loss = model(ids, labels=ids).loss
                (loss / t["accumulation_steps"]).backward()
                if model is fed:
                    worst["loss"] = max(worst["loss"], abs(loss.item() - mine) / abs(loss.item()))
        prefix = f"step{step}.grad."
        mine = {k[len(prefix):]: v for k, v in ours.items() if k.startswith(prefix)}
        named = dict(fed.named_parameters())
        if set(mine) != set(named):
            expect(f"{case} step {step}: accumulated gradients for exactly the parameters", False,
                   f"ours only {sorted(set(mine) - set(named))}, torch only {sorted(set(named) - set(mine))}")
            return
        rel, where = worst_rel({k: (mine[k], p.grad) for k, p in named.items()})
        if rel >= worst["grad"][0]:
            worst["grad"] = (rel, f"step {step} {where}")
        own_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in named.values()])).item()
        clipped += own_norm > t["grad_clip"]
        worst["own norm"] = max(worst["own norm"], abs(own_norm - s["grad_norm"]) / own_norm)
        for k, p in named.items():
            p.grad = mine[k].clone()
        norm = torch.nn.utils.clip_grad_norm_(fed.parameters(), t["grad_clip"]).item()
        torch.nn.utils.clip_grad_norm_(free.parameters(), t["grad_clip"])
        worst["norm"] = max(worst["norm"], abs(norm - s["grad_norm"]) / norm)
        lr = learning_rate(step, t)
        worst["lr"] = max(worst["lr"], abs(lr - s["lr"]) / lr)
        for opt in [fed_opt, free_opt]:
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
    expect(f"{case} steps: every micro-batch loss within {LOSS_TOL:g} relative",
           worst["loss"] <= LOSS_TOL, f"{n * t['accumulation_steps']} losses, worst rel {worst['loss']:.1e}")
    expect(f"{case} steps: accumulated gradients within {GRAD_TOL:g} x max|g|", worst["grad"][0] <= GRAD_TOL,
           f"worst {worst['grad'][1]} {worst['grad'][0]:.2e}")
    expect(f"{case} steps: clip_grad_norm_'s norm of our gradients is ours (1e-6 relative)",
           worst["norm"] <= 1e-6, f"worst rel {worst['norm']:.1e}")
    expect(f"{case} steps: the norms of torch's own gradients within 1e-5 relative", worst["own norm"] <= 1e-5,
           f"worst rel {worst['own norm']:.1e}")
    expect(f"{case} steps: learning rates are the schedule's", worst["lr"] <= 1e-12,
           ", ".join(f"{learning_rate(i, t):.3e}" for i in range(n)))
    expect(f"{case} steps: the clip at {t['grad_clip']} triggered", clipped > 0,
           f"{clipped} of {n} steps")
    final = {k[len("final."):]: v for k, v in ours.items() if k.startswith("final.")}
    named = dict(fed.named_parameters())
    if set(final) != set(named):
        expect(f"{case} steps: weights for exactly the parameters", False,
               f"ours only {sorted(set(final) - set(named))}, torch only {sorted(set(named) - set(final))}")
        return
    # The comparisons mean something only if every tensor moved well beyond the tolerance.
    initial = load_file(os.path.join(case_dir, "model", "model.safetensors"))
    least, least_where = min(((final[k] - initial[k]).abs().max().item() / final[k].abs().max().item(), k)
                             for k in named)
    expect(f"{case} steps: every tensor moved over 100 x the tolerance", least > 100 * WEIGHT_TOL,
           f"least {least_where} {least:.2e} x max|w|")
    with torch.no_grad():
        rel, where = worst_rel({k: (final[k], p) for k, p in named.items()})
        expect(f"{case} steps: AdamW + clip_grad_norm_ on our gradients: weights after {n} steps "
               f"within {WEIGHT_TOL:g} x max|w|", rel <= WEIGHT_TOL, f"worst {where} {rel:.2e}")
        rel, where = worst_rel({k: (final[k], p) for k, p in free.named_parameters()})
        fro, fro_where = max(((final[k] - p).norm().item() / p.norm().item(), k)
                             for k, p in free.named_parameters())
        expect(f"{case} steps: torch's own trajectory: weights after {n} steps within {FREE_TOL:g} "
               f"x |w| (L2, per tensor)", fro <= FREE_TOL,
               f"worst {fro_where} {fro:.2e}; largest element difference {where} {rel:.2e} x max|w|")


def main(case_dirs):
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    for case_dir in case_dirs:
        meta = json.load(open(os.path.join(case_dir, "meta.json")))
        ours = load_file(os.path.join(case_dir, "ours.safetensors"))
        case = meta["case"]
        for attn in ["eager", "sdpa"]:
            check_grads(case, case_dir, meta, ours, attn)
        check_steps(case, case_dir, meta, ours)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and all(results) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
