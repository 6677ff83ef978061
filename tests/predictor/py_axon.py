"""The reference for the axon benchmark: a Python `bittensor` 10.5.0 axon serving `ImageSynapse`
with `onnxruntime`, in the shape of the upstream BitMind base miner (neurons/miner.py: an async
forward that decodes the base64 image with PIL, runs the base transforms -- CenterCrop(min side),
Resize, ToTensor -- and the detector, sigmoid; a blacklist by hotkey; priority by stake).

    python py_axon.py --model M.onnx --wallet-path DIR --wallet NAME --port P --allow SS58
                      [--port-file F]

Serves until killed. The benchmark queries it and our axon with the same client and image.
"""
import argparse
import base64
import io
import os
import typing

import numpy as np
import onnxruntime as ort
from PIL import Image
from torchvision import transforms as T

import bitmind
from bitmind import ImageSynapse

import bittensor as bt  # noqa: E402

# The axon announces 127.0.0.1 (the benchmark's client connects there).
bitmind.offline("127.0.0.1")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--wallet-path", required=True)
    p.add_argument("--wallet", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--allow", action="append", default=[])
    p.add_argument("--port-file")
    a = p.parse_args()

    session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    size = (int(inp.shape[2]), int(inp.shape[3]))
    allow = set(a.allow)

    def detector(image):
        image = image.convert("RGB")
        t = T.Compose([T.CenterCrop(min(image.size)), T.Resize(size), T.ToTensor()])(image)
        logit = session.run(None, {inp.name: t.numpy()[None]})[0].reshape(-1)[0]
        return float(1.0 / (1.0 + np.exp(-logit)))

    async def forward(synapse: ImageSynapse) -> ImageSynapse:
        image = Image.open(io.BytesIO(base64.b64decode(synapse.image)))
        synapse.prediction = detector(image)
        return synapse

    async def blacklist(synapse: ImageSynapse) -> typing.Tuple[bool, str]:
        if synapse.dendrite is None or synapse.dendrite.hotkey is None:
            return True, "Missing dendrite or hotkey"
        if synapse.dendrite.hotkey not in allow:
            return True, "Unrecognized hotkey"
        return False, "Hotkey recognized!"

    async def priority(synapse: ImageSynapse) -> float:
        return 1000.0

    wallet = bt.Wallet(name=a.wallet, hotkey="default", path=a.wallet_path)
    axon = bt.Axon(wallet=wallet, port=a.port, ip="127.0.0.1", external_ip="127.0.0.1")
    axon.attach(forward_fn=forward, blacklist_fn=blacklist, priority_fn=priority)
    axon.start()
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write(str(a.port))
        os.rename(a.port_file + ".tmp", a.port_file)
    import time
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
