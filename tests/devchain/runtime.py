"""Metadata-driven SCALE helpers for the dev chain: storage keys, typed values, zero values.

Why: the dev chain must store state under the same keys, and in the same
encodings, as a subtensor node, so that any client (Python SDK, subxt) that
reads raw storage sees node-shaped data. Everything here is derived from the
real runtime metadata at run time; nothing about subtensor's types is
hard-coded except pallet/item names.
"""

from __future__ import annotations

import hashlib

import xxhash
from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset

from metadata_v16 import Reader, convert, enc_compact

HASHERS = ["Blake2_128", "Blake2_256", "Blake2_128Concat", "Twox128", "Twox256", "Twox64Concat", "Identity"]
PRIM_WIDTH = {0: 1, 2: 1, 3: 1, 4: 2, 5: 4, 6: 8, 7: 16, 8: 32, 9: 1, 10: 2, 11: 4, 12: 8, 13: 16, 14: 32}
# scale-info primitive ids: 0 bool, 1 char, 2 str, 3 u8, 4 u16, 5 u32, 6 u64, 7 u128, 8 u256, 9.. i8..i256


def blake2_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def twox(data: bytes, n_words: int) -> bytes:
    return b"".join(xxhash.xxh64(data, seed=i).intdigest().to_bytes(8, "little") for i in range(n_words))


def hash_key(hasher: str, data: bytes) -> bytes:
    if hasher == "Blake2_128":
        return hashlib.blake2b(data, digest_size=16).digest()
    if hasher == "Blake2_256":
        return blake2_256(data)
    if hasher == "Blake2_128Concat":
        return hashlib.blake2b(data, digest_size=16).digest() + data
    if hasher == "Twox128":
        return twox(data, 2)
    if hasher == "Twox256":
        return twox(data, 4)
    if hasher == "Twox64Concat":
        return twox(data, 1) + data
    return data  # Identity


class Runtime:
    """The runtime as seen through its metadata: types, storage entries, calls, errors."""

    def __init__(self, blob: bytes):
        self.conv = convert(blob)
        self.types = self.conv.types
        rc = RuntimeConfigurationObject()
        rc.update_type_registry(load_type_registry_preset(name="core"))
        self.metadata = rc.create_scale_object("MetadataVersioned", data=ScaleBytes(self.conv.v15))
        self.metadata.decode()
        rc.add_portable_registry(self.metadata)
        self.rc = rc
        self.pallets = {p["name"]: p for p in self.conv.pallets}
        self.pallets_by_index = {p["index"]: p for p in self.conv.pallets}
        self.apis = {f"{a}_{m}": (inputs, out) for a, m, inputs, out in self.conv.runtime_apis}
        self._zero_cache: dict = {}

    # ---------------------------------------------------------------- typed values

    def encode(self, ty: int, value) -> bytes:
        obj = self.rc.create_scale_object(f"scale_info::{ty}")
        return bytes(obj.encode(value).data)

    def decode(self, ty: int, data: bytes):
        obj = self.rc.create_scale_object(f"scale_info::{ty}", data=ScaleBytes(data))
        obj.decode(check_remaining=False)
        return obj.value

    def decode_prefix(self, ty: int, data: bytes, offset: int):
        """Decode one value at `offset`; return (value, new_offset)."""
        sb = ScaleBytes(data)
        sb.offset = offset
        obj = self.rc.create_scale_object(f"scale_info::{ty}", data=sb)
        obj.decode(check_remaining=False)
        return obj.value, sb.offset

    def decode_call(self, data: bytes) -> dict:
        """{call_module, call_function, call_args: [{name, type, value}]} for a RuntimeCall."""
        obj = self.rc.create_scale_object("Call", data=ScaleBytes(data), metadata=self.metadata)
        obj.decode()
        return obj.value

    def zero_bytes(self, ty: int) -> bytes:
        """The SCALE bytes of the 'all zero / first variant / empty' value of a type.

        Used as the default answer to runtime APIs we do not model and as a
        template (decode, patch fields, encode) for the ones we do.
        """
        if ty in self._zero_cache:
            return self._zero_cache[ty]
        d = self.types[ty]
        k = d["kind"]
        if k == 0:
            out = b"".join(self.zero_bytes(f["type"]) for f in d["fields"])
        elif k == 1:
            v = min(d["variants"], key=lambda v: v["index"]) if d["variants"] else None
            out = b"" if v is None else bytes([v["index"]]) + b"".join(self.zero_bytes(f["type"]) for f in v["fields"])
        elif k in (2, 6, 7):
            out = b"\x00"
        elif k == 3:
            out = self.zero_bytes(d["type"]) * d["len"]
        elif k == 4:
            out = b"".join(self.zero_bytes(t) for t in d["types"])
        elif k == 5:
            out = b"\x00" * PRIM_WIDTH.get(d["prim"], 0) if d["prim"] != 1 else b"\x00" * 4
        else:
            raise ValueError(k)
        self._zero_cache[ty] = out
        return out

    def template(self, ty: int):
        return self.decode(ty, self.zero_bytes(ty))

    # ---------------------------------------------------------------- storage

    def entry(self, pallet: str, item: str) -> dict:
        e = self.pallets[pallet]["storage"][item]
        r = Reader(e["ty"])
        if r.u8() == 0:
            return {"hashers": [], "keys": [], "value": r.compact(), "default": e["default"], "optional": e["modifier"] == 0}
        hashers = [HASHERS[h] for h in r.vec(r.u8)]
        key_ty = r.compact()
        value_ty = r.compact()
        keys = [key_ty] if len(hashers) == 1 else self.types[key_ty]["types"]
        return {"hashers": hashers, "keys": keys, "value": value_ty, "default": e["default"], "optional": e["modifier"] == 0}

    def storage_prefix(self, pallet: str, item: str) -> bytes:
        return twox(pallet.encode(), 2) + twox(item.encode(), 2)

    def storage_key(self, pallet: str, item: str, *keys) -> bytes:
        e = self.entry(pallet, item)
        out = self.storage_prefix(pallet, item)
        for hasher, ty, key in zip(e["hashers"], e["keys"], keys):
            raw = key if isinstance(key, (bytes, bytearray)) else self.encode(ty, key)
            out += hash_key(hasher, bytes(raw))
        return out

    # ---------------------------------------------------------------- calls, errors, constants

    def constant(self, pallet: str, name: str):
        ty, value = self.pallets[pallet]["constants"][name]
        return self.decode(ty, value)

    def constant_bytes(self, pallet: str, name: str) -> bytes:
        """The constant exactly as the metadata encodes it (no decode/encode round trip)."""
        _ty, value = self.pallets[pallet]["constants"][name]
        return bytes(value)

    def error_index(self, pallet: str, name: str) -> tuple[int, int]:
        p = self.pallets[pallet]
        for v in self.types[p["error"]]["variants"]:
            if v["name"] == name:
                return p["index"], v["index"]
        raise KeyError(f"{pallet}::{name}")

    def call_ty(self) -> int:
        return self.metadata.value[1]["V15"]["extrinsic"]["call_ty"]

    def event_ty(self) -> int:
        return self.metadata.value[1]["V15"]["outer_enums"]["event_enum_ty"]


__all__ = ["Runtime", "blake2_256", "twox", "hash_key", "enc_compact"]
