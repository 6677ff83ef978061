"""SoundsRight (SN105) as its validators see our miner: the official `bittensor` 10.5.0 `Dendrite`
with the subnet's synapse classes, the healthcheck API, and the commitment check.

    python miner_check.py axon --wallets DIR --port P --axon-hotkey SS58 --competition C
                               --ns NS --name NAME --rev REV --health-port H
        What it proves, each line a check:
        - each of the four competition synapses, sent as upstream's validator sends it
          (`X_Protocol(subnet_version=2014)`, timeout 5, deserialize=True), is answered 200, signed
          by the axon hotkey; the one for our competition carries exactly the configured
          `{hf_model_namespace, hf_model_name, hf_model_revision}` and passes the validator's
          response check (utils.py: a dict of exactly those three non-empty strings); the others
          carry `data = None`; `subnet_version` comes back as sent;
        - `FeedbackProtocol` is answered 200; a hotkey not allowed gets 403;
        - the healthcheck API answers every upstream route with `{"data", "timestamp"}`, the
          timestamp as Python's `str(datetime.now())`; metrics carry upstream's 25 keys; events
          list the feedback under `success`; current_models names our model; an unknown route 404.
        Ends with `N passed, 0 failed`.

    python miner_check.py commitment --chain URL --netuid N --uid U --hotkey SS58 --competition C
                                     --ns NS --name NAME --rev REV
        The validator's check (`soundsright/base/models/build.py` validate_model): the on-chain
        metadata, read with the official SDK, equals sha256("ns:name:rev:hotkey:competition_id")
        with upstream's competition ids (48 kHz -> None). Prints `N passed, 0 failed`.
"""
import argparse
import asyncio
import datetime
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "predictor"))
from bitmind import offline  # noqa: E402,F401  (patches bittensor for offline use first)

import bittensor as bt  # noqa: E402
import pydantic  # noqa: E402
from bittensor_wallet import Keypair  # noqa: E402


# soundsright/base/protocol.py at 74ca94c (v2.1.4), as upstream defines them.
class Denoising_16kHz_Protocol(bt.Synapse):
    data: dict | None = pydantic.Field(default=None, description="HuggingFace model identfication")
    subnet_version: int = pydantic.Field(..., description="Subnet version", allow_mutation=False)

    def deserialize(self) -> bt.Synapse:
        return self


class Dereverberation_16kHz_Protocol(bt.Synapse):
    data: dict | None = pydantic.Field(default=None, description="HuggingFace model identfication")
    subnet_version: int = pydantic.Field(..., description="Subnet version", allow_mutation=False)

    def deserialize(self) -> bt.Synapse:
        return self


class Denoising_48kHz_Protocol(bt.Synapse):
    data: dict | None = pydantic.Field(default=None, description="HuggingFace model identfication")
    subnet_version: int = pydantic.Field(..., description="Subnet version", allow_mutation=False)

    def deserialize(self) -> bt.Synapse:
        return self


class Dereverberation_48kHz_Protocol(bt.Synapse):
    data: dict | None = pydantic.Field(default=None, description="HuggingFace model identfication")
    subnet_version: int = pydantic.Field(..., description="Subnet version", allow_mutation=False)

    def deserialize(self) -> bt.Synapse:
        return self


class FeedbackProtocol(bt.Synapse):
    competition: str | None = pydantic.Field(default=None, description="Competition name.")
    data: dict | None = pydantic.Field(default=None, description="Model benchmark results.")
    best_models: dict | None = pydantic.Field(default=None, description="Data on best models for all competitions.")
    subnet_version: int = pydantic.Field(..., description="Subnet version", allow_mutation=False)

    def deserialize(self) -> bt.Synapse:
        return self


SYNAPSES = {
    "DENOISING_16000HZ": Denoising_16kHz_Protocol,
    "DEREVERBERATION_16000HZ": Dereverberation_16kHz_Protocol,
    "DENOISING_48000HZ": Denoising_48kHz_Protocol,
    "DEREVERBERATION_48000HZ": Dereverberation_48kHz_Protocol,
}

SUBNET_VERSION = 2014  # upstream v2.1.4: 1000*2 + 10*1 + 4

# soundsright/base/utils/healthcheck.py: the metrics dictionary's keys (typo included).
METRIC_KEYS = [
    "start_time", "neuron_running", "iterations", "datasets_generatred", "competitions_judged",
    "log_entries.success", "log_entries.warning", "log_entries.error",
    "axons.total_filtered_axons", "axons.total_queried_axons", "axons.queries_per_second",
    "responses.total_valid_responses", "responses.total_invalid_responses",
    "responses.valid_responses_per_second", "responses.invalid_responses_per_second",
    "weights.targets", "weights.last_set_timestamp", "weights.last_committed_timestamp",
    "weights.last_revealed_timestamp", "weights.total_count_set", "weights.total_count_committed",
    "weights.total_count_revealed", "weights.set_per_second", "weights.committed_per_second",
    "weights.revealed_per_second",
]
ROUTES = ["metrics", "events", "current_models", "best_models", "competitions",
          "competition_scores", "scores", "next_competition", "seed"]


def wallet(root, name):
    return bt.Wallet(name=name, hotkey="default", path=root)


def validate_miner_response(data):
    """The validator's response check (soundsright/base/utils/utils.py), debug mode off."""
    if not isinstance(data, dict) or set(data) != {"hf_model_namespace", "hf_model_name", "hf_model_revision"}:
        return False
    if not all(isinstance(v, str) and v for v in data.values()):
        return False
    return data["hf_model_namespace"] not in ("synapsecai", "kerr0x23")


class Checks:
    def __init__(self):
        self.results = []

    def check(self, name, ok, detail=""):
        self.results.append(bool(ok))
        print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))

    def done(self):
        passed = sum(self.results)
        print(f"{passed} passed, {len(self.results) - passed} failed")
        return 0 if passed == len(self.results) else 1


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


async def axon_checks(a):
    c = Checks()
    axon = bt.AxonInfo(version=1, ip="127.0.0.1", port=a.port, ip_type=4,
                       hotkey=a.axon_hotkey, coldkey=a.axon_hotkey)
    validator = bt.Dendrite(wallet=wallet(a.wallets, "validator"))
    stranger = bt.Dendrite(wallet=wallet(a.wallets, "stranger"))
    ours = {"hf_model_namespace": a.ns, "hf_model_name": a.name, "hf_model_revision": a.rev}

    for competition, cls in SYNAPSES.items():
        # As the validator sends them (core/validator/validator.py).
        r = await validator.call(target_axon=axon, synapse=cls(subnet_version=SUBNET_VERSION),
                                 timeout=5, deserialize=True)
        code = r.dendrite.status_code
        c.check(f"{cls.__name__}: 200", code == 200, f"{code} {r.dendrite.status_message}")
        if competition == a.competition:
            c.check(f"{cls.__name__}: our model ids", r.data == ours, repr(r.data))
            c.check(f"{cls.__name__}: the validator's response check accepts them",
                    validate_miner_response(r.data), repr(r.data))
        else:
            c.check(f"{cls.__name__}: data is None (not our competition)", r.data is None, repr(r.data))
        c.check(f"{cls.__name__}: subnet_version echoed", r.subnet_version == SUBNET_VERSION,
                repr(r.subnet_version))
        msg = f"{r.axon.nonce}.{validator.keypair.ss58_address}.{a.axon_hotkey}.{r.axon.uuid}"
        c.check(f"{cls.__name__}: answer signed by the axon hotkey",
                Keypair(ss58_address=a.axon_hotkey).verify(msg, r.axon.signature), msg)

    feedback = FeedbackProtocol(
        competition=a.competition,
        data={"uid": 3, "competition": a.competition,
              "data": {"PESQ": {"average": 2.25, "confidence_interval": [2.1, 2.4]},
                       "ESTOI": {"average": 0.81}},
              "seed": 1234},
        best_models={a.competition: [{"hf_model_name": "best", "PESQ": {"average": 2.9}}]},
        subnet_version=SUBNET_VERSION,
    )
    r = await validator.call(target_axon=axon, synapse=feedback, timeout=12, deserialize=False)
    c.check("FeedbackProtocol: 200", r.dendrite.status_code == 200,
            f"{r.dendrite.status_code} {r.dendrite.status_message}")
    c.check("FeedbackProtocol: returned as sent", r.competition == a.competition
            and r.data == feedback.data, f"{r.competition} {r.data}")

    r = await stranger.call(target_axon=axon, synapse=Denoising_16kHz_Protocol(subnet_version=SUBNET_VERSION),
                            timeout=5, deserialize=True)
    c.check("hotkey not allowed: 403", r.dendrite.status_code == 403,
            f"{r.dendrite.status_code} {r.dendrite.status_message}")
    for d in (validator, stranger):
        await d.aclose_session()

    base = f"http://127.0.0.1:{a.health_port}/healthcheck"
    bodies = {}
    for route in ROUTES:
        status, body = get_json(f"{base}/{route}")
        bodies[route] = body
        shape = isinstance(body, dict) and set(body) == {"data", "timestamp"}
        ts_ok = False
        if shape:
            try:
                datetime.datetime.fromisoformat(body["timestamp"])
                ts_ok = " " in body["timestamp"]
            except ValueError:
                pass
        c.check(f"/healthcheck/{route}: 200 {{data, timestamp}}", status == 200 and shape and ts_ok,
                f"{status} {body}")
    metrics = bodies["metrics"].get("data") or {}
    c.check("metrics: upstream's keys", sorted(metrics) == sorted(METRIC_KEYS),
            sorted(set(METRIC_KEYS) ^ set(metrics)))
    c.check("metrics: the answered queries counted", metrics.get("responses.total_valid_responses", 0) >= 5
            and metrics.get("responses.total_invalid_responses", 0) >= 1, metrics)
    events = bodies["events"].get("data") or {}
    c.check("events: feedback listed under success",
            set(events) == {"warning", "error", "success"}
            and any("feedback" in e["message"] for e in events["success"]), events)
    c.check("current_models: our model", bodies["current_models"].get("data") == {a.competition: ours},
            bodies["current_models"])
    c.check("competitions: ours", bodies["competitions"].get("data") == [a.competition], bodies["competitions"])
    c.check("validator-only routes: data null on a miner",
            all(bodies[r]["data"] is None for r in ("best_models", "competition_scores", "scores", "seed")),
            {r: bodies[r] for r in ("best_models", "seed")})
    nxt = bodies["next_competition"].get("data") or ""
    c.check("next_competition: upstream's format", nxt.endswith(" GMT")
            and datetime.datetime.strptime(nxt, "%Y-%m-%d %H:%M:%S GMT").hour == 9, nxt)
    status, body = get_json(f"{base}/nonsense")
    c.check("unknown route: 404", status == 404, f"{status} {body}")
    return c.done()


def commitment_checks(a):
    """The validator's metadata check, with the official SDK reading the chain."""
    c = Checks()
    st = bt.Subtensor(network=a.chain)
    on_chain = st.get_commitment(a.netuid, a.uid)
    # soundsright/base/models/metadata.py get_competition_id_from_competition_name
    competition_id = {"DENOISING_16000HZ": 1, "DEREVERBERATION_16000HZ": 2}.get(a.competition, None)
    metadata_str = f"{a.ns}:{a.name}:{a.rev}:{a.hotkey}:{competition_id}"
    expect = hashlib.sha256(metadata_str.encode()).hexdigest()
    c.check("the commitment is Raw64: 64 hex digits", len(on_chain) == 64, repr(on_chain))
    c.check("sha256(ns:name:rev:hotkey:competition_id) equals the chain's", on_chain == expect,
            f"{on_chain} vs {expect} of {metadata_str}")
    meta = st.get_commitment_metadata(a.netuid, a.hotkey)
    block = meta.get("block") if isinstance(meta, dict) else None
    c.check("the commitment has a block (the validator needs model_block > 0)",
            isinstance(block, int) and block > 0, repr(meta))
    return c.done()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    x = sub.add_parser("axon")
    x.add_argument("--wallets", required=True)
    x.add_argument("--port", type=int, required=True)
    x.add_argument("--axon-hotkey", required=True)
    x.add_argument("--health-port", type=int, required=True)
    y = sub.add_parser("commitment")
    y.add_argument("--chain", required=True)
    y.add_argument("--netuid", type=int, required=True)
    y.add_argument("--uid", type=int, required=True)
    y.add_argument("--hotkey", required=True)
    for q in (x, y):
        q.add_argument("--competition", required=True)
        q.add_argument("--ns", required=True)
        q.add_argument("--name", required=True)
        q.add_argument("--rev", required=True)
    a = p.parse_args()
    if a.cmd == "axon":
        return asyncio.run(axon_checks(a))
    return commitment_checks(a)


if __name__ == "__main__":
    sys.exit(main())
