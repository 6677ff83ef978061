"""A small external training engine for tests/tests/trainer_external.rs: it follows the contract
between miner-trainer (trainer.engine = "external") and an engine (docs/trainer.md, "External
engine") with real, tiny training, and misbehaves on command.

It trains transformers' LlamaForCausalLM (CPU torch, float32) from $TAOMINER_MODEL_CONFIG on the
packed train split $TAOMINER_TRAIN_TOKENS / $TAOMINER_TRAIN_META, appends a metrics line per step
to $TAOMINER_METRICS_FILE, and writes a checkpoint every --every steps into
$TAOMINER_CHECKPOINT_DIR as the contract says: .tmp-step-NNNNNNNN, renamed into place, the
marker COMPLETE last, engine-private state under engine/. --resume DIR continues from a
checkpoint (weights, optimiser, step).

Faults (each fires once per --once-dir, so a restarted engine goes on):
    --kill-at N          SIGKILL itself after step N's checkpoint (a crashed rank)
    --half-at N          SIGKILL itself after renaming step N's checkpoint, before its marker
    --arch-at N          write step N's config.json as a GPT-2 model (not scorable by candle)
    --exit-now CODE      exit with CODE at once (a command that cannot run)
    --ignore-sigterm     ignore SIGTERM (the daemon must SIGKILL after its grace)
Every start, checkpoint and signal is appended as a JSON line to --log.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import time


def log(path, **event):
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dict(event, pid=os.getpid(), t=time.time())) + "\n")


def once(args, name):
    """Whether fault NAME fires now: the first time only, remembered in --once-dir."""
    if not args.once_dir:
        return True
    flag = os.path.join(args.once_dir, name)
    if os.path.exists(flag):
        return False
    open(flag, "w").close()
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--resume")
    p.add_argument("--log")
    p.add_argument("--once-dir")
    p.add_argument("--kill-at", type=int)
    p.add_argument("--half-at", type=int)
    p.add_argument("--arch-at", type=int)
    p.add_argument("--exit-now", type=int)
    p.add_argument("--ignore-sigterm", action="store_true")
    args = p.parse_args()
    log(args.log, event="start", argv=sys.argv[1:], resume=args.resume)
    if args.exit_now is not None:
        print(f"fake engine: exiting with {args.exit_now} as told", file=sys.stderr)
        sys.exit(args.exit_now)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: log(args.log, event="sigterm-ignored"))
    else:
        def stop(*_):
            log(args.log, event="sigterm")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)

    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ckpt_dir = os.environ["TAOMINER_CHECKPOINT_DIR"]
    meta = json.load(open(os.environ["TAOMINER_TRAIN_META"]))
    seq = meta["sequence_length"]
    tokens = np.fromfile(os.environ["TAOMINER_TRAIN_TOKENS"], dtype="<u4").astype(np.int64)
    data = torch.from_numpy(tokens.reshape(-1, seq))
    if args.resume:
        model = LlamaForCausalLM.from_pretrained(args.resume, dtype=torch.float32)
        state = json.load(open(os.path.join(args.resume, "engine", "state.json")))
        step = state["step"]
    else:
        config = LlamaConfig.from_json_file(os.environ["TAOMINER_MODEL_CONFIG"])
        model = LlamaForCausalLM(config)
        step = 0
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    if args.resume:
        opt.load_state_dict(torch.load(os.path.join(args.resume, "engine", "optimizer.pt")))
    print(f"fake engine: {data.shape[0]} sequences, starting at step {step}", flush=True)
    metrics = open(os.environ["TAOMINER_METRICS_FILE"], "a")
    gen = torch.Generator().manual_seed(step)
    while step < args.steps:
        t0 = time.time()
        idx = torch.randint(0, data.shape[0], (args.batch_size,), generator=gen)
        batch = data[idx]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if args.step_sleep:
            time.sleep(args.step_sleep)
        tps = batch.numel() / max(time.time() - t0, 1e-9)
        metrics.write(json.dumps({"step": step, "loss": loss.item(), "tokens_per_second": tps}) + "\n")
        metrics.flush()
        if step % args.every == 0 or step == args.steps:
            write_checkpoint(args, model, opt, step, ckpt_dir)
    print(f"fake engine: done at step {step}", flush=True)


def write_checkpoint(args, model, opt, step, ckpt_dir):
    import torch
    name = f"step-{step:08d}"
    tmp = os.path.join(ckpt_dir, f".tmp-{name}")
    final = os.path.join(ckpt_dir, name)
    for d in (tmp, final):
        if os.path.exists(d):
            shutil.rmtree(d)  # a half-written one of a killed life
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.copy(os.environ["TAOMINER_TOKENIZER"], os.path.join(tmp, "tokenizer.json"))
    if args.arch_at == step and once(args, "arch"):
        cfg_path = os.path.join(tmp, "config.json")
        cfg = json.load(open(cfg_path))
        cfg["model_type"] = "gpt2"
        cfg["architectures"] = ["GPT2LMHeadModel"]
        json.dump(cfg, open(cfg_path, "w"))
    os.makedirs(os.path.join(tmp, "engine"))
    torch.save(opt.state_dict(), os.path.join(tmp, "engine", "optimizer.pt"))
    json.dump({"step": step}, open(os.path.join(tmp, "engine", "state.json"), "w"))
    os.rename(tmp, final)
    if args.half_at == step and once(args, "half"):
        log(args.log, event="half", step=step)
        os.kill(os.getpid(), signal.SIGKILL)
    open(os.path.join(final, "COMPLETE"), "w").close()
    log(args.log, event="checkpoint", step=step)
    if args.kill_at == step and once(args, "kill"):
        log(args.log, event="kill", step=step)
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
