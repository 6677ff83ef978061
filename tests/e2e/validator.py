"""A taoverse validator's view of our miner, end to end, with the official clients only.

    python validator.py --chain URL --netuid N --uid U --hotkey SS58 --out DIR --token T
                        --text FILE [--max-loss X]

1. The official `bittensor` SDK reads uid U's commitment from the chain
   (`Subtensor.get_commitment`) and parses it as taoverse's `ModelId`
   (`namespace:name:commit:secure_hash:competition_id`).
2. `huggingface_hub` downloads what validators download at that commit and taoverse's own hash
   code hashes it (tests/hub/validator_check.py); the secure hash bound to the hotkey must equal
   the committed one.
3. `transformers` loads the downloaded model (`AutoModelForCausalLM`, safetensors) and its
   tokenizer, and computes the mean token loss on FILE's text, which must be finite and below
   `--max-loss` (a trained model, not noise).

Prints one line per check and `N passed, 0 failed`.
"""
import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chain", required=True)
    ap.add_argument("--netuid", type=int, required=True)
    ap.add_argument("--uid", type=int, required=True)
    ap.add_argument("--hotkey", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--max-loss", type=float, default=5.0)
    a = ap.parse_args()
    # A hang is a failure with a traceback, not a stuck CI job.
    import faulthandler
    faulthandler.dump_traceback_later(240, exit=True)
    results = []

    def check(name, ok, detail=""):
        results.append(bool(ok))
        print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)

    import bittensor as bt
    st = bt.Subtensor(network=a.chain)
    commitment = st.get_commitment(a.netuid, a.uid)
    st.close()
    fields = commitment.split(":")
    check("the chain holds a taoverse ModelId for the uid", len(fields) == 5, repr(commitment))
    if len(fields) != 5:
        return finish(results)
    ns, name, commit, secure_hash, competition = fields
    print(json.dumps({"repo": f"{ns}/{name}", "commit": commit, "competition": competition}))

    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "..", "hub", "validator_check.py"), "--repo", f"{ns}/{name}",
         "--revision", commit, "--hotkey", a.hotkey, "--out", a.out, "--token", a.token],
        capture_output=True, text=True)
    check("huggingface_hub downloads the committed revision", out.returncode == 0, out.stderr[-2000:])
    if out.returncode != 0:
        return finish(results)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    check("taoverse's secure hash of the download equals the commitment's",
          got["secure_hash"] == secure_hash, f"{got['secure_hash']} vs {secure_hash}")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    snapshot = got["snapshot"]
    model = AutoModelForCausalLM.from_pretrained(snapshot, use_safetensors=True, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(snapshot)
    text = open(a.text).read()[:4000]
    ids = tok(text, return_tensors="pt").input_ids[:, :256]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    print(f"transformers loss {loss:.4f} on {ids.shape[1]} tokens ({model.config.architectures[0]}, "
          f"{sum(p.numel() for p in model.parameters())} parameters)")
    check("transformers loads it and its loss is finite and trained",
          math.isfinite(loss) and loss < a.max_loss, f"loss {loss}")
    return finish(results)


def finish(results):
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
