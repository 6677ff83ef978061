"""Fixtures and the transformers cross-check for the trainer tests (tests/tests/trainer.rs).

    make-data OUT     writes a generated corpus as corpus.txt, corpus.jsonl and corpus.parquet
                      (pyarrow, as `datasets` writes shards), and tokenizer.json: a byte-level BPE
                      trained here on that corpus with the `tokenizers` library.
    check DIR OURS    loads DIR with transformers' LlamaForCausalLM (CPU torch, float32) and
                      PreTrainedTokenizerFast, and compares with OURS (miner-eval's JSON for a
                      prompt, with logits): the token ids, the loss within 1e-4 relative, and
                      every logit within 1e-4. Prints one line per check and "N passed, 0 failed".

What it proves: a checkpoint the trainer writes is a valid transformers model directory whose
forward pass is the one we train (same weights, names, config keys, rotary layout, norms), and
whose tokenizer files load in transformers and tokenize as ours does.
"""
import json
import random
import sys


def make_data(out):
    rng = random.Random(1234)
    subjects = ["the miner", "a validator", "the model", "our hotkey", "the chain", "a dataset"]
    verbs = ["trains", "uploads", "commits", "evaluates", "serves", "hashes", "downloads"]
    objects = ["a checkpoint", "the weights", "every shard", "the tokenizer", "its commitment",
               "a new epoch", "the eval loss"]
    tails = ["before the block ends", "with a fixed seed", "on the GPU", "every tempo",
             "without a wallet", "in one commit"]
    docs = []
    for _ in range(600):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            sentences.append(" ".join([rng.choice(subjects), rng.choice(verbs),
                                       rng.choice(objects), rng.choice(tails)]) + ".")
        docs.append(" ".join(sentences).capitalize())
    third = len(docs) // 3
    with open(f"{out}/corpus.txt", "w") as f:
        f.write("\n\n".join(docs[:third]) + "\n")
    with open(f"{out}/corpus.jsonl", "w") as f:
        for d in docs[third:2 * third]:
            f.write(json.dumps({"id": rng.random(), "text": d}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq
    rest = docs[2 * third:]
    table = pa.table({"text": rest, "url": [f"https://example.invalid/{i}" for i in range(len(rest))]})
    pq.write_table(table, f"{out}/corpus.parquet", compression="snappy")

    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer)
    tok.save(f"{out}/tokenizer.json")
    print(f"wrote {len(docs)} documents and a {tok.get_vocab_size()}-token tokenizer to {out}")


def check(model_dir, ours_path):
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    ours = json.load(open(ours_path))
    results = []

    def expect(name, ok, detail=""):
        results.append(ok)
        print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""))

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    expect("LlamaForCausalLM.from_pretrained loads the checkpoint", True,
           f"{sum(p.numel() for p in model.parameters())} parameters")
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    ids = tok(ours["text"], add_special_tokens=False)["input_ids"]
    expect("PreTrainedTokenizerFast gives our token ids", ids == ours["ids"],
           f"{len(ids)} tokens" if ids == ours["ids"] else f"{ids[:12]} vs {ours['ids'][:12]}")
    expect("eos token is set", tok.eos_token is not None, str(tok.eos_token))

    x = torch.tensor([ours["ids"]])
    with torch.no_grad():
        out = model(x, labels=x)
    loss = out.loss.item()
    rel = abs(loss - ours["loss"]) / abs(loss)
    expect("loss within 1e-4 relative", rel < 1e-4,
           f"transformers {loss:.7f}, ours {ours['loss']:.7f}, rel {rel:.2e}")
    theirs = out.logits[0]
    mine = torch.tensor(ours["logits"])
    diff = (theirs - mine).abs().max().item()
    expect("every logit within 1e-4", theirs.shape == mine.shape and diff < 1e-4,
           f"max |diff| {diff:.2e} over {tuple(theirs.shape)}")

    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    if sys.argv[1] == "make-data":
        make_data(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
