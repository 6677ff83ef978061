#!/usr/bin/env python3
"""End-to-end proof that the dev chain behaves like subtensor for the official Python SDK.

Why: the dev chain is only useful if unmodified clients work against it. This
script starts devchain.py as a subprocess and drives it with bittensor 10.5.0
(`bt.Subtensor`, `bittensor_wallet.Wallet`), printing one line per check and
finally `N passed, M failed`. Exit status is 0 only when every check passed.

Run with a venv that has bittensor==10.5.0 (which includes requirements.txt):
  python tests/devchain/check_devchain.py [--metadata PATH] [--devchain-python PY]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# The real finney metadata, kept in the repository (tests/testdata/subtensor/).
DEFAULT_METADATA = os.path.normpath(os.path.join(
    HERE, "..", "testdata", "subtensor", "finney-metadata.scale"))
NETUID = 1
TEMPO = 30  # blocks; epochs of 31 * block-ms
MAX_SPACE = 300  # fixture override: 3 commits of <=100 bytes per epoch keep the space test fast
COMMIT = "ns:name:" + "a" * 40 + ":hash:2"

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f" -- {detail}" if detail else ""), flush=True)
    return ok


def run_check(name: str, fn) -> None:
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, keep going
        ok, detail = False, f"{type(e).__name__}: {e}"
        traceback.print_exc(limit=3, file=sys.stderr)
    check(name, ok, detail)


# ---------------------------------------------------------------------- setup


def make_wallet(path: str, name: str):
    from bittensor_wallet import Wallet

    w = Wallet(path=path, name=name, hotkey="default")
    w.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
    w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
    return w


def start_chain(tmp: str, metadata: str, fixture: dict, python: str) -> tuple[subprocess.Popen, int]:
    fx = os.path.join(tmp, "fixture.json")
    with open(fx, "w") as f:
        json.dump(fixture, f)
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "devchain.log"), "w")
    proc = subprocess.Popen(
        [python, os.path.join(HERE, "devchain.py"), "--metadata", metadata, "--port", "0",
         "--port-file", port_file, "--fixture", fx, "--block-ms", "250"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"dev chain did not start; see {log.name}")
        time.sleep(0.05)
    with open(port_file) as f:
        return proc, int(f.read())


def raw_rpc(port: int, method: str, params: list) -> dict:
    """One JSON-RPC call on a fresh socket, returning the whole reply (the SDK drops error `data`)."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        return json.loads(ws.recv())


def rpc(st, method: str, params: list):
    """Raw JSON-RPC through the SDK's own connection."""
    return st.substrate.rpc_request(method, params)["result"]


# ---------------------------------------------------------------------- independent SCALE helpers
# Deliberately not shared with the dev chain: these re-derive keys/hashes from first principles.


def twox128(data: bytes) -> bytes:
    import xxhash

    return b"".join(xxhash.xxh64(data, seed=i).intdigest().to_bytes(8, "little") for i in range(2))


def twox64_concat(data: bytes) -> bytes:
    import xxhash

    return xxhash.xxh64(data, seed=0).intdigest().to_bytes(8, "little") + data


def compact(n: int) -> bytes:
    if n < 64:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    return ((n << 2) | 2).to_bytes(4, "little")


def header_bytes(h: dict) -> bytes:
    assert not h["digest"]["logs"], "digest logs not handled by this helper"
    return (bytes.fromhex(h["parentHash"][2:]) + compact(int(h["number"], 16))
            + bytes.fromhex(h["stateRoot"][2:]) + bytes.fromhex(h["extrinsicsRoot"][2:]) + b"\x00")


def commitment_key(netuid: int, account: bytes) -> str:
    return "0x" + (twox128(b"Commitments") + twox128(b"CommitmentOf") + netuid.to_bytes(2, "little")
                   + twox64_concat(account)).hex()


def epoch(block: int) -> int:
    return (block + NETUID + 1) // (TEMPO + 1)


# ---------------------------------------------------------------------- checks


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--metadata", default=DEFAULT_METADATA)
    ap.add_argument("--devchain-python", default=sys.executable,
                    help="interpreter for devchain.py (e.g. a venv with only requirements.txt)")
    args = ap.parse_args()

    import bittensor as bt
    from bittensor.core.extrinsics.serving import serve_extrinsic

    tmp = tempfile.mkdtemp(prefix="devchain-check-")
    miner = make_wallet(tmp, "miner")
    stranger = make_wallet(tmp, "stranger")
    fixture = {
        "max_space": MAX_SPACE,
        "subnets": [{"netuid": NETUID, "tempo": TEMPO, "neurons": [
            {"hotkey": miner.hotkey.ss58_address, "coldkey": miner.coldkeypub.ss58_address,
             "stake": 1_000_000_000, "validator_permit": True},
        ]}],
    }
    proc, port = start_chain(tmp, args.metadata, fixture, args.devchain_python)
    try:
        st = bt.Subtensor(network=f"ws://127.0.0.1:{port}")
        hk = miner.hotkey.ss58_address
        hk_bytes = bytes(miner.hotkey.public_key)

        def c_block():
            b1 = st.get_current_block()
            time.sleep(0.6)
            b2 = st.get_current_block()
            return b2 > b1 >= 0, f"block {b1} -> {b2}"
        run_check("sdk connects and block number advances", c_block)

        def c_header_hash():
            n = st.get_current_block()
            h = rpc(st, "chain_getBlockHash", [n])
            hdr = rpc(st, "chain_getHeader", [h])
            parent = rpc(st, "chain_getBlockHash", [n - 1])
            mine = "0x" + hashlib.blake2b(header_bytes(hdr), digest_size=32).hexdigest()
            return mine == h and hdr["parentHash"] == parent, f"#{n} {h[:18]} blake2(header)={mine[:18]}"
        run_check("block hash = blake2_256(SCALE header), parent links", c_header_hash)

        def c_registered():
            uid = st.get_uid_for_hotkey_on_subnet(hk, NETUID)
            reg = st.is_hotkey_registered(hk, NETUID)
            other = st.is_hotkey_registered(stranger.hotkey.ss58_address, NETUID)
            return uid == 0 and reg and not other, f"uid={uid} registered={reg} stranger={other}"
        run_check("fixture hotkey registered (uid, is_hotkey_registered)", c_registered)

        def c_commit():
            r = st.set_commitment(miner, NETUID, COMMIT, mev_protection=False)
            return bool(r.success), str(r.message)
        run_check("set_commitment by registered hotkey succeeds", c_commit)

        def c_get_commitment():
            got = st.get_commitment(NETUID, 0)
            return got == COMMIT, repr(got)
        run_check("get_commitment(netuid, uid) returns the string", c_get_commitment)

        def c_raw_query():
            key = commitment_key(NETUID, hk_bytes)
            raw = bytes.fromhex(rpc(st, "state_getStorage", [key])[2:])
            # Registration { deposit: u64, block: u32, info: { fields: Vec<Data> } }, Data::Raw55 = 56
            deposit = int.from_bytes(raw[:8], "little")
            block = int.from_bytes(raw[8:12], "little")
            expect_tail = compact(1) + bytes([len(COMMIT) + 1]) + COMMIT.encode()
            meta = st.get_commitment_metadata(NETUID, hk)
            ok = deposit == 0 and raw[12:] == expect_tail and isinstance(meta, dict) and meta["block"] == block
            return ok, f"deposit={deposit} block={block} key={key[:20]}..."
        run_check("raw CommitmentOf at hand-derived key decodes (Raw55 = index 56)", c_raw_query)

        def c_unregistered():
            r = st.set_commitment(stranger, NETUID, COMMIT, mev_protection=False)
            return (not r.success) and "AccountNotAllowedCommit" in str(r.message), str(r.message)[:160]
        run_check("unregistered hotkey commit fails with AccountNotAllowedCommit", c_unregistered)

        def c_bad_signature():
            call = st.substrate.compose_call("Commitments", "set_commitment",
                                             {"netuid": NETUID, "info": {"fields": [[{"Raw3": b"xyz"}]]}})
            xt = st.substrate.create_signed_extrinsic(call=call, keypair=miner.hotkey)
            data = bytearray(bytes(xt.data.data))
            data[40] ^= 0xFF  # inside the 64-byte signature (after len, 0x84, 0x00 + 32-byte address, 0x01)
            err = raw_rpc(port, "author_submitExtrinsic", ["0x" + data.hex()]).get("error", {})
            return err.get("code") == 1010 and "bad signature" in err.get("data", ""), json.dumps(err)
        run_check("tampered signature rejected (1010 bad signature)", c_bad_signature)

        def c_stale_nonce():
            call = st.substrate.compose_call("Commitments", "set_commitment",
                                             {"netuid": NETUID, "info": {"fields": [[{"Raw3": b"old"}]]}})
            xt = st.substrate.create_signed_extrinsic(call=call, keypair=miner.hotkey, nonce=0)
            err = raw_rpc(port, "author_submitExtrinsic", ["0x" + bytes(xt.data.data).hex()]).get("error", {})
            return err.get("code") == 1010 and "outdated" in err.get("data", ""), json.dumps(err)
        run_check("reused nonce rejected (1010 outdated)", c_stale_nonce)

        def c_space_limit():
            # Start at the beginning of an epoch so the 3 allowed commits + 1 rejected one share it.
            start_epoch = epoch(st.get_current_block())
            while epoch(st.get_current_block()) == start_epoch:
                time.sleep(0.1)
            e0 = epoch(st.get_current_block())
            outcomes = []
            for i in range(MAX_SPACE // 100 + 1):
                r = st.set_commitment(miner, NETUID, f"{COMMIT}:{i}", mev_protection=False)
                outcomes.append((bool(r.success), str(r.message)))
            e1 = epoch(st.get_current_block())
            ok = [o[0] for o in outcomes] == [True] * (MAX_SPACE // 100) + [False] \
                and "SpaceLimitExceeded" in outcomes[-1][1] and e0 == e1
            return ok, f"epoch {e0}->{e1} results={[o[0] for o in outcomes]} last={outcomes[-1][1][:80]}"
        run_check("space limit trips with SpaceLimitExceeded within one epoch", c_space_limit)

        def c_space_reset():
            e = epoch(st.get_current_block())
            while epoch(st.get_current_block()) == e:
                time.sleep(0.1)
            r = st.set_commitment(miner, NETUID, COMMIT + ":next", mev_protection=False)
            got = st.get_commitment(NETUID, 0)
            return bool(r.success) and got == COMMIT + ":next", f"{r.message} -> {got!r}"
        run_check("space budget resets at the next epoch", c_space_reset)

        def c_serve_axon():
            r = serve_extrinsic(st, miner, ip="10.1.2.3", port=8091, protocol=4, netuid=NETUID,
                                mev_protection=False)
            axon = st.substrate.query("SubtensorModule", "Axons", [NETUID, hk]).value
            ok = bool(r.success) and axon and axon["port"] == 8091 and axon["ip"] == (10 << 24 | 1 << 16 | 2 << 8 | 3)
            return ok, f"{r.message} axon={axon}"
        run_check("serve_axon writes SubtensorModule.Axons", c_serve_axon)

        def c_serve_errors():
            again = serve_extrinsic(st, miner, ip="10.1.2.3", port=8092, protocol=4, netuid=NETUID,
                                    mev_protection=False)
            foreign = serve_extrinsic(st, stranger, ip="10.9.9.9", port=8091, protocol=4, netuid=NETUID,
                                      mev_protection=False)
            ok = (not again.success and "ServingRateLimitExceeded" in str(again.message)
                  and not foreign.success and "HotKeyNotRegisteredInNetwork" in str(foreign.message))
            return ok, f"again={str(again.message)[:70]} | foreign={str(foreign.message)[:70]}"
        run_check("serve_axon errors: ServingRateLimitExceeded, HotKeyNotRegisteredInNetwork", c_serve_errors)

        def c_metagraph_axon():
            mg = st.metagraph(NETUID)
            a = mg.axons[0]
            return a.ip == "10.1.2.3" and a.port == 8091 and mg.hotkeys[0] == hk, f"{a.ip}:{a.port} n={mg.n}"
        run_check("metagraph shows the hotkey and served axon", c_metagraph_axon)

        def c_subxt_connect():
            # The sequence subxt 0.51's legacy backend performs on connect, on a raw socket.
            from websockets.sync.client import connect

            with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
                def call(i, method, params):
                    ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
                    while True:
                        msg = json.loads(ws.recv())
                        if msg.get("id") == i:
                            return msg
                methods = call(1, "rpc_methods", [])["result"]["methods"]
                genesis = call(2, "chain_getBlockHash", [0])["result"]
                rv = call(3, "state_getRuntimeVersion", [])["result"]
                versions = bytes.fromhex(call(4, "state_call", ["Metadata_metadata_versions", "0x"])["result"][2:])
                v16 = bytes.fromhex(call(5, "state_call", ["Metadata_metadata_at_version", "0x10000000"])["result"][2:])
            with open(args.metadata, "rb") as f:
                blob = f.read()
            # Option::Some ++ compact length ++ the metadata blob, byte-identical to the file.
            ok = (v16[0] == 1 and v16.endswith(blob) and "chain_getBlockHash" in methods
                  and genesis == rpc(st, "chain_getBlockHash", [0]) and rv["specVersion"] > 0
                  and 16 in [int.from_bytes(versions[1 + 4 * i:5 + 4 * i], "little") for i in range(versions[0] >> 2)])
            return ok, f"spec {rv['specVersion']} tx {rv['transactionVersion']} genesis {genesis[:18]} v16 {len(blob)} bytes"
        run_check("subxt-style connect: rpc_methods, genesis, version, V16 metadata", c_subxt_connect)

        def c_watch_statuses():
            from websockets.sync.client import connect

            call = st.substrate.compose_call("Commitments", "set_commitment",
                                             {"netuid": NETUID, "info": {"fields": [[{"Raw5": b"watch"}]]}})
            xt = st.substrate.create_signed_extrinsic(call=call, keypair=miner.hotkey)
            statuses, heads = [], 0
            with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "chain_subscribeNewHeads", "params": []}))
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "author_submitAndWatchExtrinsic",
                                    "params": ["0x" + bytes(xt.data.data).hex()]}))
                deadline = time.time() + 10
                while time.time() < deadline and not any(isinstance(s, dict) and "finalized" in s for s in statuses):
                    msg = json.loads(ws.recv(timeout=10))
                    if msg.get("method") == "author_extrinsicUpdate":
                        statuses.append(msg["params"]["result"])
                    elif msg.get("method") == "chain_newHead":
                        heads += 1
            kinds = [s if isinstance(s, str) else next(iter(s)) for s in statuses]
            in_block = next(s["inBlock"] for s in statuses if isinstance(s, dict) and "inBlock" in s)
            blk = rpc(st, "chain_getBlock", [in_block])["block"]
            xt_hex = "0x" + bytes(xt.data.data).hex()
            return kinds == ["ready", "inBlock", "finalized"] and xt_hex in blk["extrinsics"] and heads > 0, \
                f"statuses={kinds} heads={heads}"
        run_check("submitAndWatch: ready -> inBlock -> finalized, block carries the extrinsic", c_watch_statuses)

        def c_dev_register():
            uid = rpc(st, "dev_register", [NETUID, stranger.hotkey.ss58_address, stranger.coldkeypub.ss58_address,
                                           5, False])
            time.sleep(0.6)  # registration lands in the next block
            r = st.set_commitment(stranger, NETUID, "stranger:now:registered", mev_protection=False)
            got = st.get_commitment(NETUID, uid)
            return uid == 1 and bool(r.success) and got == "stranger:now:registered", f"uid={uid} {r.message} {got!r}"
        run_check("dev_register makes a new hotkey able to commit", c_dev_register)

        def c_counter():
            n = rpc(st, "dev_extrinsicCount", [])
            return n >= 6, f"applied={n}"
        run_check("dev_extrinsicCount counts applied extrinsics", c_counter)

        def c_reconnect():
            rpc(st, "dev_dropConnections", [])
            time.sleep(0.5)
            b = st.get_current_block()
            return b > 0, f"block after drop {b}"
        run_check("SDK survives dev_dropConnections (node restart)", c_reconnect)

        seen = rpc(st, "dev_methodsSeen", [])
        print("rpc methods used by the SDK:", ", ".join(sorted(seen["known"])), flush=True)
        if seen["unknown"]:
            print("unknown methods asked for:", seen["unknown"], flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()

    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
