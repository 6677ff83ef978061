"""transformers' loss on the trainer's held-out split, for tests/tests/trainer_external.rs.

    external_check.py TOKENS SEQ_LEN LIMIT DIR...

TOKENS is the trainer's token cache (<state>/tokens/*.tokens: u64 train count, u64 eval count,
the u32 ids of both splits, a sha256); its eval split, cut into SEQ_LEN sequences (the first LIMIT,
0: all), is what miner-trainer scores checkpoints on. Prints {DIR: mean token cross-entropy} as
JSON, computed by LlamaForCausalLM (CPU torch, float32) per sequence and averaged: the reference
the daemon's scores must equal.
"""
import hashlib
import json
import sys

import numpy as np
import torch
from transformers import LlamaForCausalLM


def eval_sequences(path, seq_len, limit):
    raw = open(path, "rb").read()
    body, digest = raw[:-32], raw[-32:]
    assert hashlib.sha256(body).digest() == digest, "damaged token cache"
    n_train, n_eval = np.frombuffer(body[:16], dtype="<u8")
    ids = np.frombuffer(body[16:], dtype="<u4").astype(np.int64)
    ev = ids[n_train:n_train + n_eval]
    seqs = ev[: len(ev) // seq_len * seq_len].reshape(-1, seq_len)
    return seqs[:limit] if limit else seqs


def main():
    tokens, seq_len, limit, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    seqs = torch.from_numpy(eval_sequences(tokens, seq_len, limit))
    out = {}
    for d in dirs:
        model = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        with torch.no_grad():
            losses = [model(input_ids=s[None], labels=s[None]).loss.item() for s in seqs]
        out[d] = sum(losses) / len(losses)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
