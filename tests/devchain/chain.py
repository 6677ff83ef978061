"""Block production, state, and the subset of the subtensor runtime the tests need.

Why: tests need a chain that reacts like subtensor to the calls a miner makes
(set_commitment, serve_axon) -- same storage keys, same value encodings, same
pallet errors and events -- without a node binary. State lives in a plain dict
keyed by the real storage keys; each block keeps a snapshot so queries "at"
older block hashes work (clients read events at the inclusion block).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from scalecodec.utils.ss58 import ss58_decode, ss58_encode

from runtime import Runtime, blake2_256, enc_compact

MIN_COMMIT_SPACE = 100  # pallet-commitments: each commit costs at least this much space
KEEP_BLOCKS = 4096  # state snapshots kept for queries at old hashes


class TxError(Exception):
    """Pool-level rejection (what a node answers with JSON-RPC error 1010)."""

    def __init__(self, code: int, message: str, data: str):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass
class Block:
    number: int
    hash: bytes
    parent: bytes
    state_root: bytes
    extrinsics_root: bytes
    extrinsics: list
    state: dict
    header_bytes: bytes = b""

    def header_json(self) -> dict:
        return {
            "parentHash": "0x" + self.parent.hex(),
            "number": hex(self.number),
            "stateRoot": "0x" + self.state_root.hex(),
            "extrinsicsRoot": "0x" + self.extrinsics_root.hex(),
            "digest": {"logs": []},
        }


@dataclass
class PendingTx:
    raw: bytes
    hash: bytes
    signer: bytes
    nonce: int
    call: dict
    watchers: list = field(default_factory=list)  # callbacks(status)


def account_bytes(who) -> bytes:
    if isinstance(who, (bytes, bytearray)):
        return bytes(who)
    if who.startswith("0x"):
        return bytes.fromhex(who[2:])
    return bytes.fromhex(ss58_decode(who))


class Chain:
    def __init__(self, runtime: Runtime, ss58_format: int = 42):
        self.rt = runtime
        self.ss58 = ss58_format
        self.version = runtime.constant("System", "Version")
        self.state: dict = {}  # working state of the block being built
        self.pool: list[PendingTx] = []
        self.blocks: dict[bytes, Block] = {}
        self.by_number: dict[int, bytes] = {}
        self.applied = 0  # extrinsics applied (success or failure), for tests
        self.listeners: list = []  # callbacks(block) on every new block
        self._genesis()

    # ------------------------------------------------------------------ storage helpers

    def key(self, pallet, item, *keys) -> bytes:
        return self.rt.storage_key(pallet, item, *keys)

    def put(self, pallet, item, keys, value) -> None:
        e = self.rt.entry(pallet, item)
        self.state[self.key(pallet, item, *keys)] = self.rt.encode(e["value"], value)

    def get(self, pallet, item, *keys):
        """Decoded value, the metadata default for ValueQuery items, None for absent OptionQuery."""
        e = self.rt.entry(pallet, item)
        raw = self.state.get(self.key(pallet, item, *keys))
        if raw is None:
            if e["optional"]:
                return None
            raw = e["default"]
        return self.rt.decode(e["value"], raw)

    def ss58_of(self, acc: bytes) -> str:
        return ss58_encode(acc.hex(), self.ss58)

    # ------------------------------------------------------------------ blocks

    @property
    def head(self) -> Block:
        return self.blocks[self.by_number[max(self.by_number)]]

    @property
    def genesis_hash(self) -> bytes:
        return self.by_number[0]

    def _genesis(self) -> None:
        self.put("Commitments", "MaxSpace", [], 3100)
        self._seal([], parent=b"\x00" * 32, number=0)

    def reseal_genesis(self) -> None:
        """Rebuild block 0 from the current state (after fixtures are loaded, before serving)."""
        self.blocks.clear()
        self.by_number.clear()
        self._seal([], parent=b"\x00" * 32, number=0)

    def _seal(self, extrinsics: list, parent: bytes, number: int) -> Block:
        self.put("System", "Number", [], number)
        self.put("System", "ParentHash", [], "0x" + parent.hex())
        if number > 0:
            self.put("System", "BlockHash", [number - 1], "0x" + parent.hex())
        # State root: a hash over the sorted key/values (not a trie root; good enough to change with state).
        h = hashlib.blake2b(digest_size=32)
        for k in sorted(self.state):
            h.update(k + self.state[k])
        state_root = h.digest()
        ext_root = blake2_256(b"".join(extrinsics))
        header = parent + enc_compact(number) + state_root + ext_root + b"\x00"
        blk = Block(number, blake2_256(header), parent, state_root, ext_root, extrinsics, dict(self.state), header)
        self.blocks[blk.hash] = blk
        self.by_number[number] = blk.hash
        old = number - KEEP_BLOCKS
        if old > 0 and old in self.by_number:
            # Drop the state snapshot only; headers stay answerable.
            self.blocks[self.by_number[old]].state = {}
        return blk

    def produce_block(self) -> Block:
        parent = self.head
        number = parent.number + 1
        self.put("System", "Number", [], number)
        events: list = []
        included: list[PendingTx] = []
        for tx in self.pool:
            idx = len(included)
            included.append(tx)
            self._apply(tx, idx, number, events)
        self.pool = []
        self._put_events(events)
        blk = self._seal([t.raw for t in included], parent.hash, number)
        # The next block starts with no events, like System::initialize.
        self._put_events([])
        for tx in included:
            for w in tx.watchers:
                w({"inBlock": "0x" + blk.hash.hex()})
                w({"finalized": "0x" + blk.hash.hex()})
        for cb in list(self.listeners):
            cb(blk)
        return blk

    def block_at(self, h) -> Block | None:
        if h is None:
            return self.head
        if isinstance(h, str):
            try:
                h = bytes.fromhex(h.removeprefix("0x"))
            except ValueError:
                return None
        return self.blocks.get(h)

    # ------------------------------------------------------------------ events

    def _put_events(self, events: list) -> None:
        raw = enc_compact(len(events)) + b"".join(events)
        self.state[self.key("System", "Events")] = raw
        self.state[self.key("System", "EventCount")] = len(events).to_bytes(4, "little")

    def _event(self, idx: int, pallet: str, variant: str, fields: dict) -> bytes:
        """EventRecord { phase: ApplyExtrinsic(idx), event, topics: [] } encoded via the metadata."""
        ev = self.rt.encode(self.rt.event_ty(), {pallet: {variant: fields} if fields is not None else variant})
        return b"\x00" + idx.to_bytes(4, "little") + ev + b"\x00"

    def _dispatch_info(self) -> dict:
        # DispatchEventInfo template from the metadata; Pays::No as the commitment call declares.
        info = self._system_event_field("ExtrinsicSuccess", "dispatch_info")
        if isinstance(info, dict) and "pays_fee" in info:
            info["pays_fee"] = "No"
        return info

    def _system_event_field(self, variant: str, name: str):
        sys_p = self.rt.pallets["System"]
        for v in self.rt.types[sys_p["event"]]["variants"]:
            if v["name"] == variant:
                for f in v["fields"]:
                    if f["name"] == name:
                        return self.rt.template(f["type"])
        raise KeyError(variant)

    # ------------------------------------------------------------------ registration (fixtures / dev_register)

    def register(self, netuid: int, hotkey: str, coldkey: str | None = None, stake: int = 0,
                 validator_permit: bool = False, tempo: int | None = None) -> int:
        """Put a hotkey on a subnet the way burned_register leaves storage; returns its uid."""
        coldkey = coldkey or hotkey
        if not self.get("SubtensorModule", "NetworksAdded", netuid):
            self.put("SubtensorModule", "NetworksAdded", [netuid], True)
            self.put("SubtensorModule", "TotalNetworks", [], self.get("SubtensorModule", "TotalNetworks") + 1)
            self.put("SubtensorModule", "Tempo", [netuid], 360 if tempo is None else tempo)
            self.put("SubtensorModule", "SubnetOwner", [netuid], coldkey)
        if tempo is not None:
            self.put("SubtensorModule", "Tempo", [netuid], tempo)
        existing = self.get("SubtensorModule", "Uids", netuid, hotkey)
        if existing is not None:
            uid = existing
        else:
            uid = self.get("SubtensorModule", "SubnetworkN", netuid)
            self.put("SubtensorModule", "SubnetworkN", [netuid], uid + 1)
        self.put("SubtensorModule", "Uids", [netuid, hotkey], uid)
        self.put("SubtensorModule", "Keys", [netuid, uid], hotkey)
        self.put("SubtensorModule", "IsNetworkMember", [hotkey, netuid], True)
        self.put("SubtensorModule", "Owner", [hotkey], coldkey)
        self.put("SubtensorModule", "BlockAtRegistration", [netuid, uid], self.head.number if self.by_number else 0)
        self.put("SubtensorModule", "TotalHotkeyAlpha", [hotkey, netuid], stake)
        owned = self.get("SubtensorModule", "OwnedHotkeys", coldkey) or []
        if hotkey not in owned and account_bytes(hotkey) not in [account_bytes(o) for o in owned]:
            self.put("SubtensorModule", "OwnedHotkeys", [coldkey], list(owned) + [hotkey])
        for item, value in (("ValidatorPermit", validator_permit), ("Active", True)):
            vec = list(self.get("SubtensorModule", item, netuid) or [])
            vec += [False] * (uid + 1 - len(vec))
            vec[uid] = value
            self.put("SubtensorModule", item, [netuid], vec)
        for item in ("LastUpdate",):
            vec = list(self.get("SubtensorModule", item, netuid) or [])
            vec += [0] * (uid + 1 - len(vec))
            self.put("SubtensorModule", item, [netuid], vec)
        return uid

    # ------------------------------------------------------------------ extrinsics

    def account_nonce(self, who) -> int:
        info = self.get("System", "Account", self.ss58_of(account_bytes(who)))
        return info["nonce"]

    def next_index(self, who) -> int:
        acc = account_bytes(who)
        pending = [t.nonce for t in self.pool if t.signer == acc]
        return max([self.account_nonce(acc)] + [n + 1 for n in pending])

    def submit(self, raw: bytes, watcher=None) -> bytes:
        tx = self.validate(raw)
        if watcher:
            tx.watchers.append(watcher)
            watcher("ready")
        self.pool.append(tx)
        return tx.hash

    def validate(self, raw: bytes) -> PendingTx:
        """Decode and check a signed v4 extrinsic as the transaction pool would."""
        from extrinsic import parse_extrinsic  # local import keeps module graph simple

        p = parse_extrinsic(self, raw)
        if p["nonce"] < self.account_nonce(p["signer"]):
            raise TxError(1010, "Invalid Transaction", "Transaction is outdated")
        if p["nonce"] > self.next_index(p["signer"]):
            raise TxError(1010, "Invalid Transaction", "Transaction will be valid in the future")
        if any(t.signer == p["signer"] and t.nonce == p["nonce"] for t in self.pool):
            raise TxError(1014, "Priority is too low", "The transaction is already in the pool")
        return PendingTx(raw=raw, hash=blake2_256(raw), signer=p["signer"], nonce=p["nonce"], call=p["call"])

    def _apply(self, tx: PendingTx, idx: int, number: int, events: list) -> None:
        """Apply one extrinsic: bump nonce, dispatch, record ExtrinsicSuccess/Failed."""
        self.applied += 1
        who = self.ss58_of(tx.signer)
        acct = self.get("System", "Account", who)
        acct["nonce"] += 1
        self.put("System", "Account", [who], acct)
        call = tx.call
        module, function, args = call["call_module"], call["call_function"], call["call_args"]
        handler = DISPATCH.get((module, function))
        pallet_events: list = []
        if handler is None:
            err = ("System", "CallFiltered")  # anything we do not model is refused, visibly
        else:
            err = handler(self, tx.signer, args, number, pallet_events)
        if err is None:
            for pallet, variant, fields in pallet_events:
                events.append(self._event(idx, pallet, variant, fields))
            events.append(self._event(idx, "System", "ExtrinsicSuccess", {"dispatch_info": self._dispatch_info()}))
        else:
            pallet, name = err
            if pallet == "System" and name == "CallFiltered":
                dispatch_error = "BadOrigin"
            else:
                pidx, eidx = self.rt.error_index(pallet, name)
                dispatch_error = {"Module": {"index": pidx, "error": "0x" + bytes([eidx, 0, 0, 0]).hex()}}
            events.append(self._event(idx, "System", "ExtrinsicFailed",
                                      {"dispatch_error": dispatch_error, "dispatch_info": self._dispatch_info()}))


# ---------------------------------------------------------------------- pallet logic


def _arg(args: list, name: str):
    for a in args:
        if a["name"] == name:
            return a["value"]
    raise KeyError(name)


def field_len(field) -> int:
    """Data::len_for_rate_limit: the byte length a commitment field is charged for."""
    if isinstance(field, str):  # unit variants: None, ResetBondsFlag
        return 0
    (name, value), = field.items()
    if name.startswith("Raw"):
        return int(name[3:])
    if name == "BigRaw":
        return len(bytes.fromhex(value[2:])) if isinstance(value, str) else len(value)
    if name == "TimelockEncrypted":
        enc = value["encrypted"]
        return len(bytes.fromhex(enc[2:])) if isinstance(enc, str) else len(enc)
    return 32  # hash variants carry [u8; 32]


def epoch_index(tempo: int, netuid: int, block: int) -> int:
    """pallet_subtensor::get_epoch_index: (block + netuid + 1) / (tempo + 1)."""
    return (block + netuid + 1) // (tempo + 1)


def set_commitment(chain: Chain, signer: bytes, args: list, number: int, out_events: list):
    netuid = _arg(args, "netuid")
    info = _arg(args, "info")
    fields = info["fields"]
    who = chain.ss58_of(signer)
    if chain.get("SubtensorModule", "Uids", netuid, who) is None:
        return ("Commitments", "AccountNotAllowedCommit")
    if len(fields) > chain.rt.constant("Commitments", "MaxFields"):
        return ("Commitments", "TooManyFieldsInCommitmentInfo")
    required = max(sum(field_len(f) for f in fields), MIN_COMMIT_SPACE)
    tempo = chain.get("SubtensorModule", "Tempo", netuid)
    cur_epoch = epoch_index(tempo, netuid, number)
    usage = chain.get("Commitments", "UsedSpaceOf", netuid, who) or {"last_epoch": cur_epoch, "used_space": 0}
    if usage["last_epoch"] != cur_epoch:
        usage = {"last_epoch": cur_epoch, "used_space": 0}
    if usage["used_space"] + required > chain.get("Commitments", "MaxSpace"):
        return ("Commitments", "SpaceLimitExceeded")
    if any(f == "ResetBondsFlag" for f in fields):
        chain.put("Commitments", "LastBondsReset", [netuid, who], number)
    usage["used_space"] += required
    chain.put("Commitments", "UsedSpaceOf", [netuid, who], usage)
    deposit = chain.rt.constant("Commitments", "InitialDeposit") + \
        len(fields) * chain.rt.constant("Commitments", "FieldDeposit")  # both 0 on finney ("free")
    # Re-encode the decoded info as the storage value expects (BoundedVec is a 1-tuple).
    chain.put("Commitments", "CommitmentOf", [netuid, who],
              {"deposit": deposit, "block": number, "info": {"fields": [fields]}})
    chain.put("Commitments", "LastCommitment", [netuid, who], number)
    timelock = next((f for f in fields if isinstance(f, dict) and "TimelockEncrypted" in f), None)
    if timelock is not None:
        out_events.append(("Commitments", "TimelockCommitment",
                           {"netuid": netuid, "who": who, "reveal_round": timelock["TimelockEncrypted"]["reveal_round"]}))
    else:
        out_events.append(("Commitments", "Commitment", {"netuid": netuid, "who": who}))
    return None


def is_valid_ip_address(ip_type: int, addr: int) -> bool:
    """pallet_subtensor::is_valid_ip_address with allow_zero = true (what serve_axon uses)."""
    if ip_type == 4 and (addr >= 0xFFFFFFFF or addr == 0x7F000001):
        return False
    if ip_type == 6 and addr in ((1 << 128) - 1, 1):
        return False
    return True


def serve_axon(chain: Chain, signer: bytes, args: list, number: int, out_events: list):
    """pallet_subtensor::do_serve_axon: registration, ip checks, serving rate limit, then Axons."""
    netuid = _arg(args, "netuid")
    who = chain.ss58_of(signer)
    if chain.get("SubtensorModule", "Uids", netuid, who) is None:
        return ("SubtensorModule", "HotKeyNotRegisteredInNetwork")
    ip, ip_type, port = _arg(args, "ip"), _arg(args, "ip_type"), _arg(args, "port")
    if ip_type not in (4, 6):
        return ("SubtensorModule", "InvalidIpType")
    if not is_valid_ip_address(ip_type, ip):
        return ("SubtensorModule", "InvalidIpAddress")
    prev = chain.get("SubtensorModule", "Axons", netuid, who)
    last = prev["block"] if prev else 0
    rate_limit = chain.get("SubtensorModule", "ServingRateLimit", netuid)
    if not (rate_limit == 0 or last == 0 or number - last >= rate_limit):
        return ("SubtensorModule", "ServingRateLimitExceeded")
    if port == 0:
        return ("SubtensorModule", "InvalidPort")
    axon = {"block": number, "version": _arg(args, "version"), "ip": ip, "port": port, "ip_type": ip_type,
            "protocol": _arg(args, "protocol"), "placeholder1": _arg(args, "placeholder1"),
            "placeholder2": _arg(args, "placeholder2")}
    chain.put("SubtensorModule", "Axons", [netuid, who], axon)
    out_events.append(("SubtensorModule", "AxonServed", [netuid, who]))
    return None


DISPATCH = {
    ("Commitments", "set_commitment"): set_commitment,
    ("SubtensorModule", "serve_axon"): serve_axon,
    ("SubtensorModule", "serve_axon_tls"): serve_axon,  # certificate is accepted and not stored
}
