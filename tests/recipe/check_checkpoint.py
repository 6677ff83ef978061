"""Scores a checkpoint of recipes/fsdp/train.py with transformers alone, for tests/tests/recipe_fsdp.rs.

Why: the recipe reports each step's training loss (the mean over every rank's sequences, before
that step's update). The checkpoint written after step N holds the model that step N+1 saw, so
`LlamaForCausalLM.from_pretrained(step-N)` on step N+1's global batch must give the loss the recipe
reported for step N+1: that proves the saved files are the live weights and the reported loss is
honest. The batch is found with the recipe's own data order (same seed, same global batch size).

  python check_checkpoint.py CHECKPOINT TOKENS META SEED GLOBAL_BATCH NEXT_STEP  -> {"loss": ...}
"""
import importlib.util
import json
import sys
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

ckpt, tokens, meta, seed, gbatch, next_step = sys.argv[1:7]
seed, gbatch, next_step = int(seed), int(gbatch), int(next_step)
spec = importlib.util.spec_from_file_location(
    "recipe", Path(__file__).resolve().parents[2] / "recipes/fsdp/train.py")
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)

model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
model.eval()
data = recipe.Tokens(tokens, meta, model.config.vocab_size)
pos = recipe.Position()
order = recipe.epoch_order(seed, 0, data.sequences)
for _ in range(next_step):  # accumulation 1: one global micro-batch a step
    idx, order = recipe.global_batch(pos, order, seed, data.sequences, gbatch)
with torch.no_grad():
    ids = data.batch(idx)
    loss = model(input_ids=ids, labels=ids).loss.item()
print(json.dumps({"loss": loss}))
