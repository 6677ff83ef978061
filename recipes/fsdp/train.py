#!/usr/bin/env python3
"""taominer's reference training engine: PyTorch FSDP2 + transformers LlamaForCausalLM.

Why it exists: a model too large for one GPU is trained by an engine people already trust
(torchrun + FSDP) rather than by a home-made distributed trainer; `miner-trainer` with
`trainer.engine = "external"` runs this script as its child, scores each checkpoint it writes with
the validators' metric and hands the winners on (docs/trainer.md, "External engine"). It also runs
on its own, without the daemon.

What it does: reads the daemon's packed train split (little-endian u32 token ids, `sequence_length`
per row), shards the model with `fully_shard` per decoder layer, trains with AdamW (linear warmup
then cosine to `min_lr_ratio`, as the built-in trainer), bf16 on CUDA and f32 on the CPU (gloo),
and writes transformers checkpoints atomically: `.tmp-step-XXXXXXXX` -> every file fsynced ->
renamed to `step-XXXXXXXX` -> the marker `COMPLETE` last. Optimizer, model master weights and the
data position live under `engine/` (torch.distributed.checkpoint, sharded), so `--resume` continues
a run exactly where the checkpoint left it, on any number of ranks.

Run it (recipes/fsdp/README.md has more):
  # under the daemon: [trainer.external] command = ["torchrun", "--nproc-per-node", "8", ".../train.py", ...]
  # one node, 8 GPUs:
  torchrun --standalone --nproc-per-node 8 train.py --train-tokens T.bin --train-meta T.json \
      --model-config config.json --checkpoint-dir ckpt --max-steps 10000
  # two nodes (run on each; node A at 10.0.0.1):
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-id run1 \
      --rdzv-endpoint 10.0.0.1:29500 train.py ...        # checkpoint_dir on a shared filesystem
  # no torchrun: one process, world size 1
  python train.py ... --device cpu
Paths default to the daemon's environment (TAOMINER_TRAIN_TOKENS, TAOMINER_TRAIN_META,
TAOMINER_MODEL_CONFIG, TAOMINER_TOKENIZER, TAOMINER_CHECKPOINT_DIR, TAOMINER_METRICS_FILE); a flag
given on the command line wins.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

MARKER_DEFAULT = "COMPLETE"
# Token files are read through a memmap; these bound what a hostile or broken meta file can ask.
MAX_SEQUENCE_LENGTH = 1 << 20
MAX_VOCAB = 1 << 24


class RecipeError(Exception):
    """A problem the user fixes (paths, sizes, mismatches): printed as one line, exit 2."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The flags; path defaults come from the daemon's environment (the contract), flags win."""
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="train.py",
        description="taominer's FSDP2 reference engine (see the module docstring).",
    )
    p.add_argument("--train-tokens", default=env("TAOMINER_TRAIN_TOKENS"),
                   help="packed train split: u32 LE token ids, sequence_length per row")
    p.add_argument("--train-meta", default=env("TAOMINER_TRAIN_META"),
                   help="JSON with sequence_length, sequences, vocab_size")
    p.add_argument("--model-config", default=env("TAOMINER_MODEL_CONFIG"),
                   help="LlamaForCausalLM config.json for a run from scratch")
    p.add_argument("--init-model", default=None,
                   help="a transformers model directory to start from instead of scratch")
    p.add_argument("--tokenizer", default=env("TAOMINER_TOKENIZER"),
                   help="tokenizer.json copied into every checkpoint")
    p.add_argument("--checkpoint-dir", default=env("TAOMINER_CHECKPOINT_DIR"))
    p.add_argument("--metrics-file", default=env("TAOMINER_METRICS_FILE"),
                   help="JSON lines appended by rank 0 (step, loss, tokens_per_second, lr, epoch)")
    p.add_argument("--complete-marker", default=MARKER_DEFAULT,
                   help="file written last into a finished checkpoint")
    p.add_argument("--resume", default=None,
                   help="a checkpoint directory written by this script, or 'latest' (the newest "
                        "complete one under --checkpoint-dir, if any)")
    # Same names and defaults as [trainer] (services/core/src/config/trainer.rs).
    p.add_argument("--max-steps", type=int, default=1000, help="optimizer steps in all")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per rank per micro-batch")
    p.add_argument("--accumulation-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--grad-clip", type=float, default=1.0, help="global L2 norm; 0 = off")
    p.add_argument("--seed", type=int, default=None, help="default: the meta file's seed, else 0")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="complete checkpoints kept (the newest is never deleted)")
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--checkpoint-activations", choices=["auto", "on", "off"], default="auto",
                   help="recompute activations in the backward pass; auto = on for CUDA")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    a = p.parse_args(argv)
    for name in ("train_tokens", "train_meta", "checkpoint_dir"):
        if not getattr(a, name):
            p.error(f"--{name.replace('_', '-')} is required "
                    f"(or TAOMINER_{name.upper()} in the environment)")
    if not a.model_config and not a.init_model:
        p.error("--model-config or --init-model is required (or TAOMINER_MODEL_CONFIG)")
    for name in ("max_steps", "batch_size", "accumulation_steps", "checkpoint_every", "log_every",
                 "keep_checkpoints"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= a.min_lr_ratio <= 1.0:
        p.error("--min-lr-ratio must be within [0, 1]")
    return a


def learning_rate(step: int, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """The built-in trainer's schedule (services/trainer/src/optim.rs `learning_rate`), so a run
    moved between engines sees the same rates: linear warmup, then cosine to lr * min_ratio."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if total == 0 or total <= warmup:
        return lr
    progress = min((step - warmup) / (total - warmup), 1.0)
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class Tokens:
    """The packed train split as a read-only memmap, checked against its meta file, so a short
    or mismatched file fails at the start with the reason rather than mid-run."""

    def __init__(self, tokens: str, meta: str, vocab_size: int):
        import numpy as np

        try:
            m = json.loads(Path(meta).read_text())
        except FileNotFoundError:
            raise RecipeError(f"train meta {meta} does not exist")
        except (OSError, ValueError) as e:
            raise RecipeError(f"train meta {meta} is not JSON: {e}")
        try:
            self.seq_len = int(m["sequence_length"])
            self.sequences = int(m["sequences"])
            meta_vocab = int(m["vocab_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise RecipeError(f"train meta {meta}: missing or bad field {e}")
        self.seed = int(m.get("seed", 0))
        if not 2 <= self.seq_len <= MAX_SEQUENCE_LENGTH or not 0 < meta_vocab <= MAX_VOCAB:
            raise RecipeError(f"train meta {meta}: sequence_length {self.seq_len} or vocab_size "
                              f"{meta_vocab} out of range")
        if meta_vocab > vocab_size:
            raise RecipeError(f"the tokenizer's vocab_size {meta_vocab} (train meta) exceeds the "
                              f"model's vocab_size {vocab_size}: token ids would index past the "
                              f"embedding")
        self.vocab = vocab_size
        path = Path(tokens)
        if not path.is_file():
            raise RecipeError(f"train tokens {tokens} does not exist")
        size = path.stat().st_size
        want = self.sequences * self.seq_len * 4
        if self.sequences < 1 or size < want:
            raise RecipeError(f"train tokens {tokens}: {size} bytes, but the meta file says "
                              f"{self.sequences} sequences of {self.seq_len} u32 ({want} bytes)")
        self.rows = np.memmap(path, dtype="<u4", mode="r", shape=(self.sequences, self.seq_len))

    def batch(self, idx):
        """Rows `idx` as an int64 tensor; an id past the vocabulary is refused here, per batch,
        because scanning a file of billions of tokens at start would take minutes."""
        import numpy as np
        import torch

        rows = np.asarray(self.rows[idx], dtype=np.int64)
        if rows.size and int(rows.max()) >= self.vocab:
            raise RecipeError(f"token id {int(rows.max())} >= vocab_size {self.vocab} in the train "
                              f"tokens: tokenizer and model do not match")
        return torch.from_numpy(rows)


def epoch_order(seed: int, epoch: int, n: int):
    """A seeded permutation per epoch: the data order depends only on (seed, epoch), so a resumed
    run (any world size) reads exactly the sequences an uninterrupted one would."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class Position:
    """Where the run is: optimizer steps done, epoch, sequences consumed in it. Counted in
    sequences (not batches) so resuming with another world size lands on the same data."""

    def __init__(self, step=0, epoch=0, seq_in_epoch=0, tokens_seen=0):
        self.step, self.epoch, self.seq_in_epoch, self.tokens_seen = (
            step, epoch, seq_in_epoch, tokens_seen)

    def to_json(self):
        return dict(step=self.step, epoch=self.epoch, seq_in_epoch=self.seq_in_epoch,
                    tokens_seen=self.tokens_seen)


def global_batch(pos: Position, order, seed: int, n: int, size: int):
    """The next `size` sequence indices, moving to the next epoch (whole batches only, as the
    built-in trainer) when the current one has fewer left. Returns (indices, order)."""
    if size > n:
        raise RecipeError(f"a global micro-batch of {size} sequences is more than the "
                          f"{n} sequences in the train split: lower --batch-size or use fewer ranks")
    if pos.seq_in_epoch + size > n:
        pos.epoch += 1
        pos.seq_in_epoch = 0
        order = epoch_order(seed, pos.epoch, n)
    idx = order[pos.seq_in_epoch:pos.seq_in_epoch + size]
    pos.seq_in_epoch += size
    return idx, order


def fsync_tree(root: Path):
    """fsync every file and directory under root (then root): a renamed checkpoint must not be
    found empty or torn after a power loss."""
    for dirpath, _, files in os.walk(root, topdown=False):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(d: Path):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(ckpt_dir: Path, marker: str):
    """Finished checkpoints, oldest first: `step-N` directories holding the marker. Others
    (`.tmp-*`, or renamed but killed before the marker) are never resumed from."""
    out = []
    if ckpt_dir.is_dir():
        for d in ckpt_dir.iterdir():
            if d.name.startswith("step-") and d.name[5:].isdigit() and (d / marker).is_file():
                out.append((int(d.name[5:]), d))
    return [d for _, d in sorted(out)]


def crash_point(rank: int, where: str, step: int):
    """Fault injection for the tests (MINERTEST_CRASH_AT=rank<R>:<where>:<step>[,…], as the
    daemons' crash points): SIGKILL this rank there, as a power cut or the OOM killer would. With
    MINERTEST_CRASH_ONCE_DIR each point fires once (a flag file per point), so an engine the
    daemon restarts with the same environment gets past it."""
    here = f"rank{rank}:{where}:{step}"
    if here not in os.environ.get("MINERTEST_CRASH_AT", "").split(","):
        return
    once = os.environ.get("MINERTEST_CRASH_ONCE_DIR")
    if once:
        try:
            os.close(os.open(os.path.join(once, here.replace(":", "-")),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    print(f"train.py: rank {rank}: crash point {here}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent():
    """Under torchrun (Linux): SIGKILL this rank when its torchrun agent dies. torchrun starts
    each rank in a session of its own (start_new_session), so a SIGKILLed agent (it gets the
    daemon's PR_SET_PDEATHSIG when miner-trainer is SIGKILLed, or the OOM killer picks it) leaves
    its ranks running, holding the devices and writing checkpoints, and no signal to the agent's
    process group reaches them; torchrun itself sets no death signal. docs/trainer.md, the
    contract, recommends this to every engine that forks workers."""
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        print(f"train.py: warning: prctl(PR_SET_PDEATHSIG): {os.strerror(err)}; this rank may "
              f"outlive its agent", file=sys.stderr, flush=True)
        return
    # The agent died before the prctl (the signal will never come): the parent is now init or
    # a subreaper.
    if parent == 1 or os.getppid() != parent:
        print("train.py: the torchrun agent is gone; exiting", file=sys.stderr, flush=True)
        os._exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str]) -> int:
    # First, before the seconds of importing torch: a window in which an agent's death would
    # leave this rank behind.
    die_with_parent()
    args = parse_args(argv)
    try:
        return train(args)
    except RecipeError as e:
        print(f"train.py: error: {e}", file=sys.stderr, flush=True)
        return 2


def train(args) -> int:
    """Set up the process group, model, optimizer and data; run the steps; checkpoint."""
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_state_dict, set_state_dict)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    import torch.distributed.checkpoint as dcp
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per checkpoint in the journal, not a bar

    # Without torchrun: one rank, so the same code path (FSDP over a one-process group) runs.
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise RecipeError("--device cuda, but torch sees no CUDA device")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    mesh = init_device_mesh("cuda" if cuda else "cpu", (world,))
    ckpt_dir = Path(args.checkpoint_dir)
    marker = args.complete_marker

    def log(msg):
        if rank == 0:
            print(f"train.py: {msg}", flush=True)

    # Configuration checks before any weights exist, so a mistake costs seconds.
    if args.init_model:
        config = LlamaConfig.from_pretrained(args.init_model)
    else:
        try:
            config = LlamaConfig.from_json_file(args.model_config)
        except FileNotFoundError:
            raise RecipeError(f"model config {args.model_config} does not exist")
        except (OSError, ValueError) as e:
            raise RecipeError(f"model config {args.model_config}: {e}")
    data = Tokens(args.train_tokens, args.train_meta, config.vocab_size)
    if data.seq_len > config.max_position_embeddings:
        raise RecipeError(f"sequence_length {data.seq_len} exceeds the model's "
                          f"max_position_embeddings {config.max_position_embeddings}")
    seed = args.seed if args.seed is not None else data.seed
    if rank == 0:
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RecipeError(f"checkpoint dir {ckpt_dir}: {e}")
    # Every rank reaches the same collectives in the same order, whatever it saw on disk.
    dist.barrier()

    resume = args.resume
    if resume == "latest":
        done = complete_checkpoints(ckpt_dir, marker)
        resume = str(done[-1]) if done else None
    if resume:
        rp = Path(resume)
        if not (rp / marker).is_file() or not (rp / "engine" / "state.json").is_file():
            raise RecipeError(f"--resume {resume}: not a complete checkpoint of this recipe "
                              f"(no {marker} or engine/state.json)")

    # Same seed on every rank: identical initial weights before sharding.
    torch.manual_seed(seed)
    compute_dtype = torch.bfloat16 if cuda else torch.float32
    if args.init_model and not resume:
        model = LlamaForCausalLM.from_pretrained(args.init_model, torch_dtype=torch.float32)
    else:
        model = LlamaForCausalLM(config).to(torch.float32)
    model.config.use_cache = False
    ac = args.checkpoint_activations == "on" or (args.checkpoint_activations == "auto" and cuda)
    if ac:
        # Non-reentrant recomputation composes with FSDP2's per-layer all-gathers.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    # fp32 master weights and reductions; bf16 compute on CUDA.
    mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)

    # Weight decay on matrices only, as the built-in trainer (norm gains are not decayed).
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps, foreach=False)

    pos = Position()
    if resume:
        state = json.loads((Path(resume) / "engine" / "state.json").read_text())
        pos = Position(**state["position"])
        msd, osd = get_state_dict(model, opt)
        sd = {"model": msd, "optim": osd}
        dcp.load(sd, checkpoint_id=str(Path(resume) / "engine" / "dcp"))
        set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        log(f"resumed from {resume} at step {pos.step} (epoch {pos.epoch}, "
            f"sequence {pos.seq_in_epoch})")
    if rank == 0:
        # Leftovers of a run killed while saving: never resumed from, removed before new saves.
        for d in ckpt_dir.glob(".tmp-step-*"):
            shutil.rmtree(d, ignore_errors=True)

    order = epoch_order(seed, pos.epoch, data.sequences)
    per_step = args.batch_size * world * args.accumulation_steps
    tokens_per_step = per_step * data.seq_len
    metrics = open(args.metrics_file, "a") if (rank == 0 and args.metrics_file) else None
    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    if tokenizer and not tokenizer.is_file():
        raise RecipeError(f"tokenizer {tokenizer} does not exist")
    log(f"{world} rank(s) on {device.type}, {sum(p.numel() for p in model.parameters())} "
        f"parameters, {data.sequences} sequences of {data.seq_len}, "
        f"{tokens_per_step} tokens a step, activation checkpointing {'on' if ac else 'off'}")

    def save(step: int):
        """One checkpoint, atomically: every rank writes its shards of the engine state, rank 0
        the transformers model; fsync, rename, then the marker last."""
        final = ckpt_dir / step_name(step)
        tmp = ckpt_dir / f".tmp-{step_name(step)}"
        if rank == 0:
            if (final / marker).exists():
                raise RecipeError(f"{final} is already complete: resume from the newest checkpoint")
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "engine").mkdir(parents=True)
        dist.barrier()
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp / "engine" / "dcp"))
        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            save_dtype = torch.bfloat16 if cuda else torch.float32
            full = {k: v.to(save_dtype) for k, v in full.items()}
            # The unwrapped class writes the same files validators load (config, safetensors).
            # On the meta device: no second copy of the weights in host memory.
            with torch.device("meta"):
                plain = LlamaForCausalLM(config)
            plain.config.use_cache = True
            plain.save_pretrained(tmp, state_dict=full, safe_serialization=True)
            if tokenizer:
                shutil.copyfile(tokenizer, tmp / "tokenizer.json")
            # safetensors writes 0600; the publisher reads checkpoints through the group.
            umask = os.umask(0)
            os.umask(umask)
            for f in tmp.iterdir():
                if f.is_file():
                    os.chmod(f, 0o666 & ~umask)
            (tmp / "engine" / "state.json").write_text(json.dumps(
                {"position": pos.to_json(), "seed": seed, "world_size": world,
                 "args": {k: v for k, v in vars(args).items() if k != "resume"}}, indent=1))
            fsync_tree(tmp)
            if final.exists():
                # Renamed by a run killed before its marker: never complete, so replace it.
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(ckpt_dir)
            crash_point(rank, "before-marker", step)
            with open(final / marker, "w") as f:
                f.write(f"{step}\n")
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(final)
            prune()
        dist.barrier()
        log(f"checkpoint {final.name} complete")

    def prune():
        """Keep the newest --keep-checkpoints complete checkpoints; the newest is never deleted."""
        done = complete_checkpoints(ckpt_dir, marker)
        for d in done[:-max(args.keep_checkpoints, 1)]:
            # Remove the marker first: a half-deleted directory must not look complete.
            (d / marker).unlink(missing_ok=True)
            shutil.rmtree(d, ignore_errors=True)

    # SIGTERM (the daemon's Pause or stop, forwarded by torchrun): finish the step, save, exit 0,
    # so a pause loses no work. The flag is agreed on by all ranks at the step's end (one scalar
    # all-reduce), since a rank that saved alone would wait for the others forever.
    stop = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))

    model.train()
    while pos.step < args.max_steps:
        started = time.perf_counter()
        lr = learning_rate(pos.step, args.lr, args.warmup_steps, args.max_steps,
                           args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), dtype=torch.float64)
        for _ in range(args.accumulation_steps):
            idx, order = global_batch(pos, order, seed, data.sequences, args.batch_size * world)
            ids = data.batch(idx[rank * args.batch_size:(rank + 1) * args.batch_size]).to(device)
            with torch.autocast(device.type, dtype=compute_dtype, enabled=cuda):
                loss = model(input_ids=ids, labels=ids).loss
            (loss / args.accumulation_steps).backward()
            loss_sum += loss.detach().to(torch.float64).cpu()
            pos.tokens_seen += args.batch_size * world * data.seq_len
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        pos.step += 1
        # The step's loss is the mean over every rank's sequences (equal token counts).
        # NCCL reduces device tensors only; gloo takes either.
        mean = (loss_sum / args.accumulation_steps).to(device)
        dist.all_reduce(mean, op=dist.ReduceOp.SUM)
        mean = float(mean) / world
        if not math.isfinite(mean):
            raise RecipeError(f"training loss is {mean} at step {pos.step}: lower --lr")
        crash_point(rank, "after-step", pos.step)
        secs = max(time.perf_counter() - started, 1e-9)
        if metrics and pos.step % args.log_every == 0:
            metrics.write(json.dumps({"step": pos.step, "loss": mean,
                                      "tokens_per_second": tokens_per_step / secs, "lr": lr,
                                      "epoch": pos.epoch}) + "\n")
            metrics.flush()
        asked = torch.tensor([1.0 if stop["asked"] else 0.0], device=device)
        dist.all_reduce(asked, op=dist.ReduceOp.MAX)
        if pos.step % args.checkpoint_every == 0 or pos.step == args.max_steps or asked.item():
            save(pos.step)
        if asked.item():
            log(f"stopped by SIGTERM at step {pos.step}")
            break
    if metrics:
        metrics.close()
    # Every rank is past its last collective before any tears the group down: a gloo rank whose
    # peer destroyed the group first has aborted here ("terminate called without an active
    # exception", seen once in CI-like runs), failing a run whose work was all saved.
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Skip the interpreter's teardown: by now everything is saved and fsync'd, and C++ destructors
    # of torch's background threads (gloo, DCP) racing the exit can abort a finished rank.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
