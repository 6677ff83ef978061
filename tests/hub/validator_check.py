#!/usr/bin/env python3
"""What a taoverse validator does with a commitment's repository and revision, using the official
`huggingface_hub` client against any Hub endpoint (HF_ENDPOINT), independently of the Rust code:

1. `HfApi().model_info(repo, revision=commit, files_metadata=True)` and the sum of every file's
   size (taoverse compares it with the competition's `max_bytes`);
2. download what `AutoModelForCausalLM.from_pretrained(..., use_safetensors=True)` and
   `AutoTokenizer.from_pretrained` fetch into a cache dir (config.json, generation_config.json,
   model.safetensors or the shard index and its shards, tokenizer files present);
3. realize the snapshot's symlinks and hash it with taoverse's own functions
   (tests/reference/hashes.py), then the secure hash with the hotkey.

usage: validator_check.py --repo NS/NAME --revision SHA --hotkey SS58 --out DIR [--token T]
prints one JSON object: model_hash, secure_hash, total_size, files, sha, snapshot
"""
import argparse, json, os, shutil, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import hashes  # noqa: E402  (taoverse's hash functions, verbatim)

from huggingface_hub import HfApi, hf_hub_download  # noqa: E402

# The tokenizer files AutoTokenizer looks for (transformers' tokenization_utils_base).
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt",
                   "spiece.model", "chat_template.jinja", "chat_template.json"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--revision", required=True)
    ap.add_argument("--hotkey", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--token")
    a = ap.parse_args()

    info = HfApi().model_info(a.repo, revision=a.revision, timeout=10, files_metadata=True, token=a.token)
    total = sum(s.size for s in info.siblings)
    names = [s.rfilename for s in info.siblings]

    cache = os.path.join(a.out, "cache")
    def get(name):
        return hf_hub_download(a.repo, name, revision=a.revision, cache_dir=cache, token=a.token)

    wanted = ["config.json"]
    if "generation_config.json" in names:
        wanted.append("generation_config.json")
    if "model.safetensors" in names:
        wanted.append("model.safetensors")
    elif "model.safetensors.index.json" in names:
        index = json.load(open(get("model.safetensors.index.json")))
        wanted.append("model.safetensors.index.json")
        wanted += sorted(set(index["weight_map"].values()))
    wanted += [t for t in TOKENIZER_FILES if t in names]
    for name in wanted:
        get(name)

    ns, name = a.repo.split("/")
    snapshot = os.path.join(cache, f"models--{ns}--{name}", "snapshots", a.revision)
    # taoverse realize_symlinks_in_directory: replace each link with a copy of its blob.
    for root, _, files in os.walk(snapshot):
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p):
                real = os.path.realpath(p)
                os.unlink(p)
                shutil.copy2(real, p)
    model_hash = hashes.get_hash_of_directory(snapshot)
    print(json.dumps({
        "model_hash": model_hash,
        "secure_hash": hashes.get_hash_of_two_strings(model_hash, a.hotkey),
        "total_size": total,
        "files": sorted(wanted),
        "sha": info.sha,
        "snapshot": snapshot,
    }))


if __name__ == "__main__":
    main()
