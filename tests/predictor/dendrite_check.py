"""Queries our axon with the official `bittensor` 10.5.0 `Dendrite` and checks every answer.

    python dendrite_check.py wallets DIR
        Creates the wallets `validator` and `stranger` under DIR; prints their SS58 addresses as
        JSON (the test puts only the validator on the predictor's allow-list).
    python dendrite_check.py check --wallets DIR --port P --axon-hotkey SS58 --image JPEG
                                   --expect P --max-body N
        What it proves, each line a check:
        - the official client's request is accepted and its prediction equals `--expect`
          (the same image through `miner-predictor predict`), status 200 in the answer headers;
        - the axon's answer signature verifies with bittensor's Keypair over
          `axon_nonce.dendrite_hotkey.axon_hotkey.axon_uuid`;
        - a hotkey not allowed gets 403, a tampered signature 401, the same signed request sent
          twice 401 the second time, a body over the limit 413, an unknown synapse 404.
        Ends with `N passed, 0 failed`.
"""
import argparse
import asyncio
import base64
import json
import sys

import aiohttp

from bitmind import ImageSynapse  # patches bittensor for offline use, so it comes first

import bittensor as bt  # noqa: E402
from bittensor_wallet import Keypair  # noqa: E402


class OtherSynapse(bt.Synapse):
    text: str = ""


class TamperingDendrite(bt.Dendrite):
    def preprocess_synapse_for_request(self, target_axon_info, synapse, timeout=12.0):
        synapse = super().preprocess_synapse_for_request(target_axon_info, synapse, timeout)
        sig = synapse.dendrite.signature
        synapse.dendrite.signature = sig[:-1] + ("0" if sig[-1] != "0" else "1")
        return synapse


def wallet(root, name):
    return bt.Wallet(name=name, hotkey="default", path=root)


def make_wallets(root):
    out = {}
    for name in ("validator", "stranger"):
        w = wallet(root, name)
        w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
        w.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
        out[name] = w.hotkey.ss58_address
    print(json.dumps(out))


async def run_checks(a):
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))

    axon = bt.AxonInfo(version=1, ip="127.0.0.1", port=a.port, ip_type=4,
                       hotkey=a.axon_hotkey, coldkey=a.axon_hotkey)
    image = base64.b64encode(open(a.image, "rb").read()).decode()
    validator = bt.Dendrite(wallet=wallet(a.wallets, "validator"))
    stranger = bt.Dendrite(wallet=wallet(a.wallets, "stranger"))

    r = await validator.call(target_axon=axon, synapse=ImageSynapse(image=image), timeout=12, deserialize=False)
    code = r.dendrite.status_code
    check("validator query answered 200", code == 200, f"{code} {r.dendrite.status_message}")
    check("prediction equals miner-predictor predict", abs(r.prediction - a.expect) < 1e-6,
          f"{r.prediction} vs {a.expect}")
    check("axon status in headers", r.axon.status_code == 200 and r.axon.status_message == "Success",
          f"{r.axon.status_code} {r.axon.status_message}")
    msg = f"{r.axon.nonce}.{validator.keypair.ss58_address}.{a.axon_hotkey}.{r.axon.uuid}"
    check("answer signed by the axon hotkey",
          Keypair(ss58_address=a.axon_hotkey).verify(msg, r.axon.signature), msg)

    r = await stranger.call(target_axon=axon, synapse=ImageSynapse(image=image), timeout=12, deserialize=False)
    check("hotkey not allowed: 403", r.dendrite.status_code == 403, f"{r.dendrite.status_code} {r.dendrite.status_message}")

    tamper = TamperingDendrite(wallet=wallet(a.wallets, "validator"))
    r = await tamper.call(target_axon=axon, synapse=ImageSynapse(image=image), timeout=12, deserialize=False)
    check("tampered signature: 401", r.dendrite.status_code == 401, f"{r.dendrite.status_code} {r.dendrite.status_message}")

    # The official client's own signed request, sent twice as is.
    syn = validator.preprocess_synapse_for_request(axon, ImageSynapse(image=image), 12.0)
    url = f"http://127.0.0.1:{a.port}/ImageSynapse"
    codes = []
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.post(url, headers=syn.to_headers(), json=syn.model_dump()) as resp:
                codes.append(resp.status)
    check("replayed nonce: 200 then 401", codes == [200, 401], str(codes))

    big = ImageSynapse(image="A" * (a.max_body + 1000))
    r = await validator.call(target_axon=axon, synapse=big, timeout=12, deserialize=False)
    check("body over max_body_bytes: 413", r.dendrite.status_code == 413, f"{r.dendrite.status_code} {r.dendrite.status_message}")

    r = await validator.call(target_axon=axon, synapse=OtherSynapse(text="x"), timeout=12, deserialize=False)
    check("unknown synapse: 404", r.dendrite.status_code == 404, f"{r.dendrite.status_code} {r.dendrite.status_message}")

    for d in (validator, stranger, tamper):
        await d.aclose_session()
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wallets")
    w.add_argument("dir")
    c = sub.add_parser("check")
    c.add_argument("--wallets", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--axon-hotkey", required=True)
    c.add_argument("--image", required=True)
    c.add_argument("--expect", type=float, required=True)
    c.add_argument("--max-body", type=int, required=True)
    a = p.parse_args()
    if a.cmd == "wallets":
        make_wallets(a.dir)
        return 0
    return asyncio.run(run_checks(a))


if __name__ == "__main__":
    sys.exit(main())
