"""The predictor's Python reference: test images, and the checks against torchvision + onnxruntime.

    python reference.py images DIR
        JPEGs as a BitMind validator makes them (PIL `save(format="JPEG")`, default quality), of
        several sizes and modes, and for each a lossless PNG of PIL's own decoded pixels.
    python reference.py check --model M --ours OURS.jsonl --tensors DIR --images DIR
        OURS.jsonl is `miner-predictor predict --tensor-out DIR` output on those images. Checks:
        1. our tensor of each PNG equals Pillow's resampling bit for bit in the classic pass order
           (horizontal, then vertical: every Pillow up to 12), and torchvision's preprocessing
           (the base miner's CenterCrop(min side) -> Resize((h, w)) -> ToTensor) within one level:
           Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height
           shrinks much more than the width, which moves some pixels by one;
        2. Python onnxruntime on *our* tensor gives our prediction within 1e-5;
        3. on the JPEGs (decoded by zune-jpeg on our side, libjpeg-turbo in PIL) the tensors and
           the predictions stay within the tolerances printed and asserted here.
        Prints a JSON summary; exits 1 when a check fails.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image
from torchvision import transforms as T

# Tolerances for JPEG inputs: decoders may differ by a level or two on some pixels (IDCT and
# chroma upsampling rounding), which the resize averages down.
JPEG_TENSOR_MAX = 6 / 255
JPEG_TENSOR_MEAN = 1 / 255
JPEG_PREDICTION = 2e-3


def images(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    specs = [("wide", 451, 300, "RGB"), ("square", 256, 256, "RGB"), ("tall", 224, 301, "RGB"),
             ("odd", 97, 61, "RGB"), ("grey", 180, 120, "L"), ("big", 1024, 768, "RGB")]
    for name, w, h, mode in specs:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([
            128 + 100 * np.sin(x / (7 + rng.random() * 20)),
            128 + 100 * np.cos(y / (5 + rng.random() * 20)),
            128 + 60 * np.sin((x + y) / 13.0),
        ], axis=-1)
        arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        if mode == "L":
            img = img.convert("L")
        img.save(os.path.join(out, f"{name}.jpg"), format="JPEG")
        decoded = Image.open(os.path.join(out, f"{name}.jpg")).convert("RGB")
        decoded.save(os.path.join(out, f"{name}.png"), format="PNG")


def reference_tensor(path, size):
    img = Image.open(path).convert("RGB")
    t = T.Compose([T.CenterCrop(min(img.size)), T.Resize(tuple(size)), T.ToTensor()])(img)
    return t.numpy()


def classic_tensor(path, size):
    """Pillow's two-pass resize in the pre-13 order: each single-axis resize is one pass."""
    img = Image.open(path).convert("RGB")
    img = T.CenterCrop(min(img.size))(img)
    h, w = size
    img = img.resize((w, img.size[1]), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.float64(v)))


def check(a):
    session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    size = [int(inp.shape[2]), int(inp.shape[3])]
    ours = {}
    for line in open(a.ours):
        rec = json.loads(line)
        ours[os.path.basename(rec["input"])] = rec["prediction"]
    failures, rows = [], []
    for name in sorted(ours):
        mine = np.fromfile(os.path.join(a.tensors, name + ".f32"), dtype="<f4").reshape(3, *size)
        ref = reference_tensor(os.path.join(a.images, name), size)
        diff = np.abs(mine - ref)
        run = lambda t: float(session.run(None, {inp.name: t[None].astype(np.float32)})[0].reshape(-1)[0])
        p_ours_tensor = sigmoid(run(mine))
        p_ref_tensor = sigmoid(run(ref))
        row = {
            "image": name,
            "tensor_max_diff": float(diff.max()),
            "tensor_mean_diff": float(diff.mean()),
            "ort_same_tensor_diff": abs(p_ours_tensor - ours[name]),
            "prediction_vs_reference": abs(p_ref_tensor - ours[name]),
        }
        rows.append(row)
        if row["ort_same_tensor_diff"] > 1e-5:
            failures.append(f"{name}: onnxruntime on our tensor differs by {row['ort_same_tensor_diff']}")
        if name.endswith(".png"):
            classic = float(np.abs(mine - classic_tensor(os.path.join(a.images, name), size)).max())
            row["classic_order_max_diff"] = classic
            if classic != 0.0:
                failures.append(f"{name}: tensor differs from Pillow's classic two-pass resize by {classic}")
            if row["tensor_max_diff"] > 1.5 / 255:
                failures.append(f"{name}: tensor differs from torchvision by {row['tensor_max_diff']}")
        else:
            if row["tensor_max_diff"] > JPEG_TENSOR_MAX or row["tensor_mean_diff"] > JPEG_TENSOR_MEAN:
                failures.append(f"{name}: JPEG tensor diff max {row['tensor_max_diff']} mean {row['tensor_mean_diff']}")
            if row["prediction_vs_reference"] > JPEG_PREDICTION:
                failures.append(f"{name}: prediction differs from the reference by {row['prediction_vs_reference']}")
    print(json.dumps({"rows": rows, "failures": failures}, indent=1))
    return 1 if failures or not rows else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("images")
    i.add_argument("dir")
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--ours", required=True)
    c.add_argument("--tensors", required=True)
    c.add_argument("--images", required=True)
    a = p.parse_args()
    if a.cmd == "images":
        images(a.dir)
        return 0
    return check(a)


if __name__ == "__main__":
    sys.exit(main())
