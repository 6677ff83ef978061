#!/usr/bin/env python3
"""A local subtensor dev chain for tests: JSON-RPC over WebSocket, real metadata, real storage keys.

Why it exists: the miner talks to subtensor through the official Python SDK
(bittensor 10.5) and through Rust subxt 0.51. Neither a node binary nor the
network is available in CI, so this process stands in for a node. It
  * answers the legacy Substrate JSON-RPC family both clients use,
  * serves the real finney runtime metadata (V16, and V15 converted from it),
  * produces blocks on a timer with blake2-256 hashed SCALE headers,
  * keeps state under the real storage keys with metadata-typed SCALE values,
  * decodes submitted extrinsics, checks sr25519 signatures over the real
    signing payload and nonces, and applies Commitments.set_commitment and
    SubtensorModule.serve_axon with the pallets' rules, errors and events,
  * offers dev_* methods so tests can steer it.

Usage:
  devchain.py --metadata finney-metadata.scale [--port 0 --port-file F] [--block-ms 250]
              [--fixture fixture.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402
from websockets.asyncio.server import serve  # noqa: E402

from chain import Chain, TxError  # noqa: E402
from runtime import Runtime  # noqa: E402
from runtime_api import call_runtime_api  # noqa: E402

log = logging.getLogger("devchain")


class RpcError(Exception):
    def __init__(self, code: int, message: str, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def hexs(b: bytes) -> str:
    return "0x" + b.hex()


def unhex(s: str) -> bytes:
    return bytes.fromhex(s.removeprefix("0x"))


class Node:
    """Everything one running dev chain holds: chain, connections, subscriptions, timer."""

    def __init__(self, chain: Chain, block_ms: int):
        self.chain = chain
        self.block_ms = block_ms
        self.conns: set = set()
        self.sub_ids = itertools.count(1)
        self.subs: dict = {}  # sub id -> (conn, kind)
        self.methods_seen: dict = {}
        self.unknown_seen: dict = {}
        chain.listeners.append(self._on_block)

    # ------------------------------------------------------------------ block timer

    async def run_blocks(self) -> None:
        while True:
            await asyncio.sleep(self.block_ms / 1000)
            self.chain.produce_block()

    def _on_block(self, blk) -> None:
        header = blk.header_json()
        for sid, (conn, kind) in list(self.subs.items()):
            if kind == "newHead":
                self._notify(conn, "chain_newHead", sid, header)
            elif kind == "finalizedHead":
                self._notify(conn, "chain_finalizedHead", sid, header)
            elif kind == "allHead":
                self._notify(conn, "chain_allHead", sid, header)
            elif kind == "runtimeVersion":
                pass  # the runtime never upgrades here

    def _notify(self, conn, method: str, sid, result) -> None:
        msg = json.dumps({"jsonrpc": "2.0", "method": method, "params": {"subscription": sid, "result": result}})
        asyncio.ensure_future(self._send(conn, msg))

    async def _send(self, conn, msg: str) -> None:
        try:
            await conn.send(msg)
        except websockets.ConnectionClosed:
            pass

    # ------------------------------------------------------------------ connection handling

    async def handle(self, conn) -> None:
        self.conns.add(conn)
        try:
            async for message in conn:
                try:
                    req = json.loads(message)
                except json.JSONDecodeError:
                    await conn.send(json.dumps({"jsonrpc": "2.0", "id": None,
                                                "error": {"code": -32700, "message": "Parse error"}}))
                    continue
                if isinstance(req, list):
                    out = [self.dispatch(r, conn) for r in req]
                    await conn.send(json.dumps(out))
                else:
                    await conn.send(json.dumps(self.dispatch(req, conn)))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.conns.discard(conn)
            for sid in [s for s, (c, _) in self.subs.items() if c is conn]:
                del self.subs[sid]

    def dispatch(self, req: dict, conn) -> dict:
        method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
        fn = METHODS.get(method)
        if fn is None:
            self.unknown_seen[method] = self.unknown_seen.get(method, 0) + 1
            log.warning("unknown method %s %s", method, json.dumps(params)[:200])
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}}
        self.methods_seen[method] = self.methods_seen.get(method, 0) + 1
        log.debug("rpc %s %s", method, json.dumps(params)[:200])
        try:
            result = fn(self, params, conn)
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        except RpcError as e:
            err = {"code": e.code, "message": e.message}
            if e.data is not None:
                err["data"] = e.data
            return {"jsonrpc": "2.0", "id": rid, "error": err}
        except TxError as e:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": e.code, "message": e.message, "data": e.data}}
        except Exception as e:  # noqa: BLE001 - report, don't kill the connection
            log.exception("method %s failed", method)
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": f"Internal error: {e}"}}

    def subscribe(self, conn, kind: str) -> str:
        sid = f"dev{next(self.sub_ids)}"
        self.subs[sid] = (conn, kind)
        return sid

    def unsubscribe(self, params) -> bool:
        return self.subs.pop(params[0] if params else None, None) is not None

    # ------------------------------------------------------------------ helpers

    def block(self, h):
        blk = self.chain.block_at(h)
        if blk is None:
            raise RpcError(4003, "Client error: UnknownBlock: header not found", str(h))
        if not blk.state and blk.number != 0 and h is not None:
            raise RpcError(4003, "State already discarded for " + str(h))
        return blk


def param(params, i, default=None):
    return params[i] if len(params) > i and params[i] is not None else default


# ---------------------------------------------------------------------- chain_*


def chain_getHead(node, params, conn):
    return hexs(node.chain.head.hash)


def chain_getFinalizedHead(node, params, conn):
    return hexs(node.chain.head.hash)  # instant finality


def chain_getBlockHash(node, params, conn):
    def one(n):
        if n is None:
            return hexs(node.chain.head.hash)
        n = int(n, 16) if isinstance(n, str) else int(n)
        h = node.chain.by_number.get(n)
        return hexs(h) if h else None

    arg = param(params, 0)
    if isinstance(arg, list):
        return [one(n) for n in arg]
    return one(arg)


def chain_getHeader(node, params, conn):
    blk = node.chain.block_at(param(params, 0))
    return blk.header_json() if blk else None


def chain_getBlock(node, params, conn):
    blk = node.chain.block_at(param(params, 0))
    if blk is None:
        return None
    return {"block": {"header": blk.header_json(), "extrinsics": [hexs(x) for x in blk.extrinsics]},
            "justifications": None}


def chain_subscribeNewHeads(node, params, conn):
    sid = node.subscribe(conn, "newHead")
    node._notify(conn, "chain_newHead", sid, node.chain.head.header_json())
    return sid


def chain_subscribeFinalizedHeads(node, params, conn):
    sid = node.subscribe(conn, "finalizedHead")
    node._notify(conn, "chain_finalizedHead", sid, node.chain.head.header_json())
    return sid


def chain_subscribeAllHeads(node, params, conn):
    sid = node.subscribe(conn, "allHead")
    node._notify(conn, "chain_allHead", sid, node.chain.head.header_json())
    return sid


def unsubscribe(node, params, conn):
    return node.unsubscribe(params)


# ---------------------------------------------------------------------- state_*


def state_getRuntimeVersion(node, params, conn):
    v = node.chain.version
    return {
        "specName": v["spec_name"],
        "implName": v["impl_name"],
        "authoringVersion": v["authoring_version"],
        "specVersion": v["spec_version"],
        "implVersion": v["impl_version"],
        "apis": [[a, n] for a, n in v["apis"]],
        "transactionVersion": v["transaction_version"],
        "systemVersion": v.get("system_version", 1),
        "stateVersion": v.get("system_version", 1),
    }


def state_subscribeRuntimeVersion(node, params, conn):
    sid = node.subscribe(conn, "runtimeVersion")
    node._notify(conn, "state_runtimeVersion", sid, state_getRuntimeVersion(node, [], conn))
    return sid


def state_getMetadata(node, params, conn):
    # A real node answers with its default version (V14); scalecodec reads V15 just as well,
    # and V14 would need a second converter. subxt asks Metadata_metadata_at_version instead.
    return hexs(node.chain.rt.conv.v15)


def state_getStorage(node, params, conn):
    blk = node.block(param(params, 1))
    val = blk.state.get(unhex(params[0]))
    return hexs(val) if val is not None else None


def state_getStorageHash(node, params, conn):
    from runtime import blake2_256

    blk = node.block(param(params, 1))
    val = blk.state.get(unhex(params[0]))
    return hexs(blake2_256(val)) if val is not None else None


def state_getStorageSize(node, params, conn):
    blk = node.block(param(params, 1))
    val = blk.state.get(unhex(params[0]))
    return len(val) if val is not None else None


def state_queryStorageAt(node, params, conn):
    blk = node.block(param(params, 1))
    changes = []
    for k in params[0]:
        v = blk.state.get(unhex(k))
        changes.append([k, hexs(v) if v is not None else None])
    return [{"block": hexs(blk.hash), "changes": changes}]


def state_getKeysPaged(node, params, conn):
    prefix = unhex(param(params, 0, "0x"))
    count = int(param(params, 1, 1000))
    start = unhex(param(params, 2, "0x") or "0x")
    blk = node.block(param(params, 3))
    keys = sorted(k for k in blk.state if k.startswith(prefix) and k > start)
    return [hexs(k) for k in keys[:count]]


def state_getKeys(node, params, conn):
    prefix = unhex(param(params, 0, "0x"))
    blk = node.block(param(params, 1))
    return [hexs(k) for k in sorted(k for k in blk.state if k.startswith(prefix))]


def state_getStoragePaged(node, params, conn):
    keys = state_getKeysPaged(node, params, conn)
    blk = node.block(param(params, 3))
    return [[k, hexs(blk.state[unhex(k)])] for k in keys]


def state_call(node, params, conn):
    name = params[0]
    key = f"state_call:{name}"  # per-API counts, so tests can see which runtime APIs a client uses
    node.methods_seen[key] = node.methods_seen.get(key, 0) + 1
    data = unhex(param(params, 1, "0x"))
    blk = node.block(param(params, 2))
    out = call_runtime_api(node.chain, blk, name, data)
    if out is None:
        raise RpcError(-32000, f"Client error: Execution failed: Other: Exported method {name} is not found")
    return hexs(out)


# ---------------------------------------------------------------------- system_* / rpc_methods


def rpc_methods(node, params, conn):
    return {"methods": sorted(METHODS), "version": 1}


def system_chain(node, params, conn):
    return "Bittensor Dev Chain"


def system_name(node, params, conn):
    return "taominer-devchain"


def system_version(node, params, conn):
    return "0.1.0-devchain"


def system_properties(node, params, conn):
    return {"ss58Format": node.chain.ss58, "tokenDecimals": 9, "tokenSymbol": "TAO"}


def system_health(node, params, conn):
    return {"peers": 0, "isSyncing": False, "shouldHavePeers": False}


def system_chainType(node, params, conn):
    return "Development"


def system_accountNextIndex(node, params, conn):
    return node.chain.next_index(params[0])


# ---------------------------------------------------------------------- author_* / payment_*


def author_submitExtrinsic(node, params, conn):
    return hexs(node.chain.submit(unhex(params[0])))


def author_submitAndWatchExtrinsic(node, params, conn):
    raw = unhex(params[0])
    sid = node.subscribe(conn, "extrinsic")

    def watcher(status):
        node._notify(conn, "author_extrinsicUpdate", sid, status)
        if isinstance(status, dict) and "finalized" in status:
            node.subs.pop(sid, None)

    try:
        node.chain.submit(raw, watcher)
    except TxError:
        node.subs.pop(sid, None)
        raise
    return sid


def author_pendingExtrinsics(node, params, conn):
    return [hexs(t.raw) for t in node.chain.pool]


def payment_queryInfo(node, params, conn):
    return {"weight": {"ref_time": 0, "proof_size": 0}, "class": "normal", "partialFee": "0"}


# ---------------------------------------------------------------------- dev_* test control


def dev_register(node, params, conn):
    """dev_register(netuid, hotkey_ss58, coldkey_ss58?, stake?, validator_permit?, tempo?,
    incentive?) -> uid; incentive is the u16 kept in `Incentive` for the uid"""
    netuid, hotkey = int(params[0]), params[1]
    chain = node.chain
    uid = chain.register(netuid, hotkey, param(params, 2), int(param(params, 3, 0)),
                         bool(param(params, 4, False)), param(params, 5))
    incentive = int(param(params, 6, 0))
    if incentive:
        v = list(chain.get("SubtensorModule", "Incentive", netuid) or [])
        v += [0] * (uid + 1 - len(v))
        v[uid] = incentive
        chain.put("SubtensorModule", "Incentive", [netuid], v)
    return uid


def dev_setBlockTime(node, params, conn):
    node.block_ms = int(params[0])
    return node.block_ms


def dev_produceBlock(node, params, conn):
    return hexs(node.chain.produce_block().hash)


def dev_dropConnections(node, params, conn):
    """Close every connection (the caller's too, after this answer) to simulate a node restart."""
    async def drop():
        await asyncio.sleep(0.05)
        for c in list(node.conns):
            await c.close(1012, "dev chain restart")

    asyncio.ensure_future(drop())
    return len(node.conns)


def dev_extrinsicCount(node, params, conn):
    return node.chain.applied


def dev_methodsSeen(node, params, conn):
    return {"known": node.methods_seen, "unknown": node.unknown_seen}


def dev_setStorage(node, params, conn):
    """Raw storage write for tests: dev_setStorage([[key, value|null], ...])."""
    for k, v in params[0]:
        if v is None:
            node.chain.state.pop(unhex(k), None)
        else:
            node.chain.state[unhex(k)] = unhex(v)
    return True


METHODS = {
    "rpc_methods": rpc_methods,
    "chain_getHead": chain_getHead,
    "chain_getFinalizedHead": chain_getFinalizedHead,
    "chain_getFinalisedHead": chain_getFinalizedHead,
    "chain_getBlockHash": chain_getBlockHash,
    "chain_getHeader": chain_getHeader,
    "chain_getBlock": chain_getBlock,
    "chain_subscribeNewHeads": chain_subscribeNewHeads,
    "chain_subscribeNewHead": chain_subscribeNewHeads,
    "chain_subscribeFinalizedHeads": chain_subscribeFinalizedHeads,
    "chain_subscribeFinalisedHeads": chain_subscribeFinalizedHeads,
    "chain_subscribeAllHeads": chain_subscribeAllHeads,
    "chain_unsubscribeNewHeads": unsubscribe,
    "chain_unsubscribeNewHead": unsubscribe,
    "chain_unsubscribeFinalizedHeads": unsubscribe,
    "chain_unsubscribeFinalisedHeads": unsubscribe,
    "chain_unsubscribeAllHeads": unsubscribe,
    "state_getRuntimeVersion": state_getRuntimeVersion,
    "chain_getRuntimeVersion": state_getRuntimeVersion,
    "state_subscribeRuntimeVersion": state_subscribeRuntimeVersion,
    "chain_subscribeRuntimeVersion": state_subscribeRuntimeVersion,
    "chain_unsubscribeRuntimeVersion": unsubscribe,
    "state_unsubscribeRuntimeVersion": unsubscribe,
    "state_getMetadata": state_getMetadata,
    "state_getStorage": state_getStorage,
    "state_getStorageAt": state_getStorage,
    "state_getStorageHash": state_getStorageHash,
    "state_getStorageSize": state_getStorageSize,
    "state_queryStorageAt": state_queryStorageAt,
    "state_getKeys": state_getKeys,
    "state_getKeysPaged": state_getKeysPaged,
    "state_getKeysPagedAt": state_getKeysPaged,
    "state_getStoragePaged": state_getStoragePaged,
    "state_call": state_call,
    "state_callAt": state_call,
    "system_chain": system_chain,
    "system_name": system_name,
    "system_version": system_version,
    "system_properties": system_properties,
    "system_health": system_health,
    "system_chainType": system_chainType,
    "system_accountNextIndex": system_accountNextIndex,
    "account_nextIndex": system_accountNextIndex,
    "author_submitExtrinsic": author_submitExtrinsic,
    "author_submitAndWatchExtrinsic": author_submitAndWatchExtrinsic,
    "author_unwatchExtrinsic": unsubscribe,
    "author_pendingExtrinsics": author_pendingExtrinsics,
    "payment_queryInfo": payment_queryInfo,
    "dev_register": dev_register,
    "dev_setBlockTime": dev_setBlockTime,
    "dev_produceBlock": dev_produceBlock,
    "dev_dropConnections": dev_dropConnections,
    "dev_extrinsicCount": dev_extrinsicCount,
    "dev_methodsSeen": dev_methodsSeen,
    "dev_setStorage": dev_setStorage,
}


# ---------------------------------------------------------------------- startup


def load_fixture(chain: Chain, path: str) -> None:
    """Fixture JSON: {"max_space": 3100, "subnets": [{"netuid": 1, "tempo": 10,
    "serving_rate_limit": 50, "neurons": [{"hotkey": ss58, "coldkey": ss58, "stake": 1000,
    "validator_permit": true, "incentive": 0..65535}]}]}  (a subnet without neurons needs
    "owner": ss58; incentive is the u16 the chain keeps in `Incentive`, default 0)"""
    with open(path) as f:
        fx = json.load(f)
    if "max_space" in fx:
        chain.put("Commitments", "MaxSpace", [], int(fx["max_space"]))
    for sn in fx.get("subnets", []):
        for n in sn.get("neurons", []):
            chain.register(int(sn["netuid"]), n["hotkey"], n.get("coldkey"), int(n.get("stake", 0)),
                           bool(n.get("validator_permit", False)), sn.get("tempo"))
        incentives = [int(n.get("incentive", 0)) for n in sn.get("neurons", [])]
        if any(incentives):
            chain.put("SubtensorModule", "Incentive", [int(sn["netuid"])], incentives)
        if not sn.get("neurons"):
            chain.register(int(sn["netuid"]), sn["owner"], sn.get("owner"), 0, False, sn.get("tempo"))
        if "serving_rate_limit" in sn:
            chain.put("SubtensorModule", "ServingRateLimit", [int(sn["netuid"])], int(sn["serving_rate_limit"]))


def write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)  # atomic: readers never see a half-written file


async def main_async(args) -> None:
    with open(args.metadata, "rb") as f:
        rt = Runtime(f.read())
    chain = Chain(rt, ss58_format=rt.constant("System", "SS58Prefix"))
    if args.fixture:
        load_fixture(chain, args.fixture)
    chain.reseal_genesis()  # fixture state belongs to block 0: genesis hash is stable per fixture
    node = Node(chain, args.block_ms)
    async with serve(node.handle, args.host, args.port, max_size=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        if args.port_file:
            write_port_file(args.port_file, port)
        log.info("listening on ws://%s:%d genesis %s", args.host, port, chain.genesis_hash.hex())
        await node.run_blocks()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metadata", required=True, help="runtime metadata .scale (V16), e.g. finney-metadata.scale")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9944, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here (atomically) once listening")
    ap.add_argument("--block-ms", type=int, default=250)
    ap.add_argument("--fixture", help="JSON fixture of subnets and registered hotkeys")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s devchain %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # frame-level noise
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
