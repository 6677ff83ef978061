"""Answers to `state_call` runtime APIs, encoded with the output types from the metadata.

Why: the SDK reads metadata, nonces and the metagraph through runtime APIs
rather than storage. APIs we model return values built from chain state;
every other API the metadata declares returns the zero value of its output
type (empty Vec, None, zeros), which is what a fresh chain would answer and
keeps clients decoding happily instead of failing on "method not found".
"""

from __future__ import annotations

from contextlib import contextmanager

from runtime import enc_compact


@contextmanager
def state_of(chain, blk):
    """Evaluate chain.get() against a block's snapshot (single-threaded, so a swap is safe)."""
    saved = chain.state
    chain.state = blk.state
    try:
        yield
    finally:
        chain.state = saved


def call_runtime_api(chain, blk, name: str, data: bytes) -> bytes | None:
    rt = chain.rt
    if name not in rt.apis:
        return None
    inputs, out_ty = rt.apis[name]
    special = SPECIAL.get(name)
    if special is None:
        return rt.zero_bytes(out_ty)
    args = _decode_args(rt, inputs, data)
    with state_of(chain, blk):
        return special(chain, blk, args, out_ty)


def _decode_args(rt, inputs, data: bytes) -> list:
    out, pos = [], 0
    for _name, ty in inputs:
        v, pos = rt.decode_prefix(ty, data, pos)
        out.append(v)
    return out


# ---------------------------------------------------------------------- Metadata / Core


def metadata_at_version(chain, blk, args, out_ty):
    version = args[0]
    blob = {15: chain.rt.conv.v15, 16: chain.rt.conv.v16}.get(version)
    if blob is None:
        return b"\x00"
    return b"\x01" + enc_compact(len(blob)) + blob


def metadata_versions(chain, blk, args, out_ty):
    return chain.rt.encode(out_ty, [15, 16])


def metadata_default(chain, blk, args, out_ty):
    blob = chain.rt.conv.v15
    return enc_compact(len(blob)) + blob


def core_version(chain, blk, args, out_ty):
    # `Core_version` answers the runtime's `System.Version` constant, byte for byte (what subxt
    # asks for to learn the spec and transaction versions). Re-encoding the decoded value would
    # trip over the `apis` list's wrapper type.
    return chain.rt.constant_bytes("System", "Version")


def account_nonce(chain, blk, args, out_ty):
    return chain.rt.encode(out_ty, chain.account_nonce(args[0]))


# ---------------------------------------------------------------------- neurons / metagraph


def _neuron_lite(chain, out_item_ty, netuid: int, uid: int) -> dict:
    v = chain.rt.template(out_item_ty)
    hotkey = chain.get("SubtensorModule", "Keys", netuid, uid)
    coldkey = chain.get("SubtensorModule", "Owner", hotkey)
    v.update({"hotkey": hotkey, "coldkey": coldkey, "uid": uid, "netuid": netuid, "active": True})
    axon = chain.get("SubtensorModule", "Axons", netuid, hotkey)
    if axon is not None:
        v["axon_info"] = axon
    stake = chain.get("SubtensorModule", "TotalHotkeyAlpha", hotkey, netuid)
    if "stake" in v:
        v["stake"] = [(coldkey, stake)]
    permits = chain.get("SubtensorModule", "ValidatorPermit", netuid) or []
    v["validator_permit"] = bool(permits[uid]) if uid < len(permits) else False
    incentives = chain.get("SubtensorModule", "Incentive", netuid) or []
    v["incentive"] = incentives[uid] if uid < len(incentives) else 0
    return v


def _seq_item(rt, ty: int) -> int:
    d = rt.types[ty]
    if d["kind"] == 2:
        return d["type"]
    raise ValueError(f"type {ty} is not a sequence")


def _option_inner(rt, ty: int) -> int:
    d = rt.types[ty]
    return d["variants"][1]["fields"][0]["type"]


def neurons_lite(chain, blk, args, out_ty):
    netuid = args[0]
    item = _seq_item(chain.rt, out_ty)
    n = chain.get("SubtensorModule", "SubnetworkN", netuid)
    return chain.rt.encode(out_ty, [_neuron_lite(chain, item, netuid, uid) for uid in range(n)])


def neuron_lite(chain, blk, args, out_ty):
    netuid, uid = args[0], args[1]
    if uid >= chain.get("SubtensorModule", "SubnetworkN", netuid):
        return b"\x00"
    inner = _option_inner(chain.rt, out_ty)
    return b"\x01" + chain.rt.encode(inner, _neuron_lite(chain, inner, netuid, uid))


def _fill_metagraph(chain, netuid: int, m: dict) -> dict:
    """Patch the per-uid vectors of a Metagraph/SelectiveMetagraph template from state."""
    n = chain.get("SubtensorModule", "SubnetworkN", netuid)
    hotkeys = [chain.get("SubtensorModule", "Keys", netuid, uid) for uid in range(n)]
    coldkeys = [chain.get("SubtensorModule", "Owner", h) for h in hotkeys]
    permits = list(chain.get("SubtensorModule", "ValidatorPermit", netuid) or [])
    permits += [False] * (n - len(permits))
    stakes = [chain.get("SubtensorModule", "TotalHotkeyAlpha", h, netuid) for h in hotkeys]
    kept = chain.get("SubtensorModule", "Incentive", netuid) or []
    incentives = [kept[i] if i < len(kept) else 0 for i in range(n)]
    axons = []
    for h in hotkeys:
        a = chain.get("SubtensorModule", "Axons", netuid, h)
        axons.append(a if a is not None else chain.rt.template(chain.rt.entry("SubtensorModule", "Axons")["value"]))
    patch = {
        "netuid": netuid,
        "num_uids": n,
        "max_uids": chain.get("SubtensorModule", "MaxAllowedUids", netuid),
        "tempo": chain.get("SubtensorModule", "Tempo", netuid),
        "block": blk_number(chain),
        "hotkeys": hotkeys,
        "coldkeys": coldkeys,
        "identities": [None] * n,
        "axons": axons,
        "active": [True] * n,
        "validator_permit": permits[:n],
        "pruning_score": [0] * n,
        "last_update": [0] * n,
        "emission": [0] * n,
        "dividends": [0] * n,
        "incentives": incentives,
        "consensus": [0] * n,
        "trust": [0] * n,
        "rank": [0] * n,
        "block_at_registration": [0] * n,
        "alpha_stake": stakes,
        "tao_stake": [0] * n,
        "total_stake": stakes,
        "tao_dividends_per_hotkey": [(h, 0) for h in hotkeys],
        "alpha_dividends_per_hotkey": [(h, 0) for h in hotkeys],
    }
    for k, v in patch.items():
        if k in m:
            # Selective metagraphs wrap every field in Option.
            m[k] = v
    return m


def blk_number(chain) -> int:
    return chain.get("System", "Number")


def metagraph(chain, blk, args, out_ty):
    netuid = args[0]
    if not chain.get("SubtensorModule", "NetworksAdded", netuid):
        return b"\x00"
    inner = _option_inner(chain.rt, out_ty)
    m = _fill_metagraph(chain, netuid, chain.rt.template(inner))
    return b"\x01" + chain.rt.encode(inner, m)


def selective_metagraph(chain, blk, args, out_ty):
    # Same fields as Metagraph but each one Option-wrapped; scalecodec encodes a plain value as Some.
    netuid = args[0]
    if not chain.get("SubtensorModule", "NetworksAdded", netuid):
        return b"\x00"
    rt = chain.rt
    inner = _option_inner(rt, out_ty)
    m = rt.template(inner)
    # Every field is Option<..>; answer all of them (Some(zero)) like the runtime does for
    # the requested indexes, so the SDK's MetagraphInfo.from_dict finds every field.
    for f in rt.types[inner]["fields"]:
        if rt.types[f["type"]]["path"] == ["Option"]:
            m[f["name"]] = rt.template(_option_inner(rt, f["type"]))
    m = _fill_metagraph(chain, netuid, m)
    return b"\x01" + rt.encode(inner, m)


SPECIAL = {
    "Metadata_metadata_at_version": metadata_at_version,
    "Metadata_metadata_versions": metadata_versions,
    "Metadata_metadata": metadata_default,
    "Core_version": core_version,
    "AccountNonceApi_account_nonce": account_nonce,
    "NeuronInfoRuntimeApi_get_neurons_lite": neurons_lite,
    "NeuronInfoRuntimeApi_get_neuron_lite": neuron_lite,
    "SubnetInfoRuntimeApi_get_metagraph": metagraph,
    "SubnetInfoRuntimeApi_get_selective_metagraph": selective_metagraph,
    "SubnetInfoRuntimeApi_get_selective_mechagraph": selective_metagraph,
    "SubnetInfoRuntimeApi_get_mechagraph": metagraph,
}
