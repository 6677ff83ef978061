"""Scoring throughput of a checkpoint (issue 20's benchmark): miner-eval (the candle forward pass
the trainer scores checkpoints with, external engine included) against transformers'
LlamaForCausalLM on the same CPU, same 56M-parameter model and 1024 tokens.

    bench_scoring.py THREADS MINER_EVAL    (e.g. 2 target/release/miner-eval)

miner-eval's figure includes its process start and loading the model, as scoring a checkpoint
does; transformers' is the forward pass alone. A 2-token run of miner-eval measures its start and
load, so the forward alone is estimated by difference. Prints one JSON line with both losses too.
"""
import json, os, subprocess, sys, tempfile, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048)
torch.manual_seed(0)
m = LlamaForCausalLM(cfg).eval()
d = tempfile.mkdtemp()
m.save_pretrained(d, safe_serialization=True)
n = 1024
ids = torch.randint(0, 32000, (1, n))
with torch.no_grad():
    m(input_ids=ids, labels=ids)
    t = time.time(); reps = 3
    for _ in range(reps):
        ref = m(input_ids=ids, labels=ids).loss.item()
    tt = (time.time() - t) / reps
eval_bin = sys.argv[2]
arg = ",".join(map(str, ids[0].tolist()))
env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
subprocess.run([eval_bin, d, "--ids", arg], check=True, capture_output=True, env=env)
t = time.time(); reps = 3
for _ in range(reps):
    out = json.loads(subprocess.run([eval_bin, d, "--ids", arg], check=True, capture_output=True, env=env).stdout)
te = (time.time() - t) / reps  # includes process start and loading the 225 MB model
# The same with 2 tokens: process start + load alone, so te - t0 estimates miner-eval's forward.
short = ",".join(map(str, ids[0, :2].tolist()))
t = time.time()
for _ in range(reps):
    subprocess.run([eval_bin, d, "--ids", short], check=True, capture_output=True, env=env)
t0 = (time.time() - t) / reps
print(json.dumps({"params": sum(p.numel() for p in m.parameters()), "tokens": n, "threads": threads,
                  "transformers_tok_s": n / tt, "miner_eval_tok_s_incl_load": n / te,
                  "miner_eval_start_and_load_s": t0, "miner_eval_tok_s_forward_est": n / max(te - t0, 1e-9),
                  "loss_transformers": ref, "loss_miner_eval": out["loss"]}))
