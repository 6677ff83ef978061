"""The reference for scripts/bench-train: the same LLaMA config, batch and sequence length trained
with PyTorch + transformers (fp32, CPU, AdamW, grad clipping, default attention), as a miner's
Python training loop does. Prints JSON: tokens_per_second over the timed steps, peak RSS.

usage: bench_torch.py CONFIG_JSON BATCH SEQ STEPS THREADS
"""
import json
import resource
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

cfg_path, batch, seq, steps, threads = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = LlamaConfig(**{k: v for k, v in json.load(open(cfg_path)).items()
                     if k not in ("architectures", "torch_dtype", "transformers_version")})
model = LlamaForCausalLM(cfg).float().train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
gen = torch.Generator().manual_seed(0)


def step():
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
    loss = model(ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
elapsed = time.perf_counter() - start
print(json.dumps({
    "tokens_per_second": batch * seq * steps / elapsed,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "attention": model.config._attn_implementation,
    "threads": torch.get_num_threads(),
}))
