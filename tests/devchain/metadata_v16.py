"""Read a V16 runtime metadata blob and re-encode it as V15 (and keep the V16 bytes).

Why: the finney metadata we test against is V16 ("meta" + 0x10), but the SCALE
library the Python SDK uses (scalecodec/cyscale) only understands up to V15, and
the SDK asks the node for `Metadata_metadata_at_version(15)`. A real node can
serve both versions from one runtime; this module does the same by parsing the
V16 layout (frame-metadata 23) and writing the V15 layout. The type registry
is byte-identical between the two versions, so it is copied through untouched
(plus one appended tuple type: V15 needs an `extra_ty` that V16 dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field


# --------------------------------------------------------------------------- SCALE primitives


class Reader:
    """Cursor over bytes with the SCALE primitives the metadata needs."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def u8(self) -> int:
        v = self.data[self.pos]
        self.pos += 1
        return v

    def fixed(self, n: int) -> bytes:
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def u32(self) -> int:
        return int.from_bytes(self.fixed(4), "little")

    def compact(self) -> int:
        b = self.data[self.pos]
        mode = b & 3
        if mode == 0:
            self.pos += 1
            return b >> 2
        if mode == 1:
            return int.from_bytes(self.fixed(2), "little") >> 2
        if mode == 2:
            return int.from_bytes(self.fixed(4), "little") >> 2
        n = (b >> 2) + 4
        self.pos += 1
        return int.from_bytes(self.fixed(n), "little")

    def bytes_(self) -> bytes:
        return self.fixed(self.compact())

    def string(self) -> str:
        return self.bytes_().decode()

    def vec(self, item):
        return [item() for _ in range(self.compact())]

    def option(self, item):
        return item() if self.u8() else None


def enc_compact(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    raw = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(raw) - 4) << 2) | 3]) + raw


def enc_bytes(b: bytes) -> bytes:
    return enc_compact(len(b)) + b


def enc_str(s: str) -> bytes:
    return enc_bytes(s.encode())


def enc_vec(items, f) -> bytes:
    return enc_compact(len(items)) + b"".join(f(i) for i in items)


def enc_option(v, f) -> bytes:
    return b"\x00" if v is None else b"\x01" + f(v)


# --------------------------------------------------------------------------- registry walking


def skip_type(r: Reader) -> dict:
    """Parse one scale-info `Type` and return a light description (path + def)."""
    path = r.vec(r.string)
    r.vec(lambda: (r.string(), r.option(r.compact)))  # type params
    kind = r.u8()
    desc: dict = {"path": path, "kind": kind}
    if kind == 0:  # Composite
        desc["fields"] = r.vec(lambda: _field(r))
    elif kind == 1:  # Variant
        desc["variants"] = r.vec(lambda: _variant(r))
    elif kind == 2:  # Sequence
        desc["type"] = r.compact()
    elif kind == 3:  # Array
        desc["len"] = r.u32()
        desc["type"] = r.compact()
    elif kind == 4:  # Tuple
        desc["types"] = r.vec(r.compact)
    elif kind == 5:  # Primitive
        desc["prim"] = r.u8()
    elif kind == 6:  # Compact
        desc["type"] = r.compact()
    elif kind == 7:  # BitSequence
        desc["store"] = r.compact()
        desc["order"] = r.compact()
    else:
        raise ValueError(f"unknown type def {kind}")
    r.vec(r.string)  # docs
    return desc


def _field(r: Reader) -> dict:
    name = r.option(r.string)
    ty = r.compact()
    type_name = r.option(r.string)
    r.vec(r.string)
    return {"name": name, "type": ty, "type_name": type_name}


def _variant(r: Reader) -> dict:
    name = r.string()
    fields = r.vec(lambda: _field(r))
    index = r.u8()
    r.vec(r.string)
    return {"name": name, "fields": fields, "index": index}


# --------------------------------------------------------------------------- V16 model


@dataclass
class Converted:
    v16: bytes  # the original blob, "meta" + 0x10 + body
    v15: bytes  # same runtime as V15, "meta" + 0x0f + body
    types: dict  # type id -> light description
    extensions: list = field(default_factory=list)  # [(identifier, ty, implicit_ty)]
    extrinsic_versions: list = field(default_factory=list)
    pallets: list = field(default_factory=list)  # [{name, index, calls, event, error, storage}]
    runtime_apis: list = field(default_factory=list)  # [(api, method, [(arg, ty)], out_ty)]


def _skip_item_deprecation(r: Reader) -> None:
    tag = r.u8()
    if tag == 2:
        r.string()
        r.option(r.string)


def _skip_enum_deprecation(r: Reader) -> None:
    for _ in range(r.compact()):
        r.u8()
        _skip_item_deprecation(r)


def _storage_type(r: Reader) -> bytes:
    """StorageEntryType is identical in V15 and V16; return its raw bytes."""
    start = r.pos
    if r.u8() == 0:  # Plain
        r.compact()
    else:  # Map { hashers, key, value }
        r.vec(r.u8)
        r.compact()
        r.compact()
    return r.data[start : r.pos]


def convert(blob: bytes) -> Converted:
    if blob[:4] != b"meta" or blob[4] != 16:
        raise ValueError("expected V16 metadata ('meta' + 0x10)")
    r = Reader(blob, 5)

    reg_start = r.pos
    types = {}
    for _ in range(r.compact()):
        tid = r.compact()
        types[tid] = skip_type(r)
    registry_count = len(types)
    registry_body = blob[reg_start : r.pos]

    pallets_v15 = []
    pallet_info = []
    for _ in range(r.compact()):
        out, info = _pallet(r)
        pallets_v15.append(out)
        pallet_info.append(info)

    # ExtrinsicMetadata V16
    versions = r.vec(r.u8)
    address_ty = r.compact()
    call_ty = r.compact()
    signature_ty = r.compact()
    by_version = {}
    for _ in range(r.compact()):
        v = r.u8()
        by_version[v] = r.vec(r.compact)
    ext_all = r.vec(lambda: (r.string(), r.compact(), r.compact()))

    apis_v15 = []
    api_info = []
    for _ in range(r.compact()):
        out, info = _runtime_api(r)
        apis_v15.append(out)
        api_info.extend(info)

    outer = (r.compact(), r.compact(), r.compact())
    custom_bytes = blob[r.pos :]
    # custom metadata is the tail (BTreeMap<String, {ty, value}>); copy as-is

    # Extensions used by extrinsic version 4 (transaction extension version 0).
    ext_indices = by_version.get(0, list(range(len(ext_all))))
    extensions = [ext_all[i] for i in ext_indices]

    # V15 needs extra_ty: append a tuple type of the extension types.
    extra_ty = max(types) + 1
    new_type = (
        enc_compact(extra_ty)
        + enc_vec([], enc_str)  # path
        + enc_vec([], enc_str)  # params
        + b"\x04"
        + enc_vec([e[1] for e in extensions], enc_compact)
        + enc_vec([], enc_str)  # docs
    )
    types[extra_ty] = {"path": [], "kind": 4, "types": [e[1] for e in extensions]}
    old_reader = Reader(registry_body)
    old_reader.compact()
    registry_v15 = enc_compact(registry_count + 1) + registry_body[old_reader.pos :] + new_type

    extrinsic_v15 = (
        bytes([4])
        + enc_compact(address_ty)
        + enc_compact(call_ty)
        + enc_compact(signature_ty)
        + enc_compact(extra_ty)
        + enc_vec(extensions, lambda e: enc_str(e[0]) + enc_compact(e[1]) + enc_compact(e[2]))
    )
    body = (
        registry_v15
        + enc_compact(len(pallets_v15))
        + b"".join(pallets_v15)
        + extrinsic_v15
        + enc_compact(0)  # V15 `ty` (runtime type); V16 dropped it and nothing reads it
        + enc_compact(len(apis_v15))
        + b"".join(apis_v15)
        + b"".join(enc_compact(t) for t in outer)
        + custom_bytes
    )
    return Converted(
        v16=blob,
        v15=b"meta\x0f" + body,
        types=types,
        extensions=extensions,
        extrinsic_versions=versions,
        pallets=pallet_info,
        runtime_apis=api_info,
    )


def _pallet(r: Reader):
    name = r.string()
    info = {"name": name, "storage": {}, "constants": {}}
    out = enc_str(name)

    storage = None
    if r.u8():
        prefix = r.string()
        entries = []
        for _ in range(r.compact()):
            ename = r.string()
            modifier = r.u8()
            ty = _storage_type(r)
            default = r.bytes_()
            r.vec(r.string)  # docs are dropped: clients never need them
            _skip_item_deprecation(r)
            entries.append(enc_str(ename) + bytes([modifier]) + ty + enc_bytes(default) + enc_vec([], enc_str))
            info["storage"][ename] = {"modifier": modifier, "ty": Reader(ty).data, "default": default}
        storage = enc_str(prefix) + enc_compact(len(entries)) + b"".join(entries)
    out += enc_option(storage, lambda b: b)

    for key in ("calls", "event"):
        if r.u8():
            ty = r.compact()
            _skip_enum_deprecation(r)
            info[key] = ty
            out += b"\x01" + enc_compact(ty)
        else:
            info[key] = None
            out += b"\x00"

    consts = []
    for _ in range(r.compact()):
        cname = r.string()
        cty = r.compact()
        value = r.bytes_()
        r.vec(r.string)
        _skip_item_deprecation(r)
        info["constants"][cname] = (cty, value)
        consts.append(enc_str(cname) + enc_compact(cty) + enc_bytes(value) + enc_vec([], enc_str))
    out += enc_compact(len(consts)) + b"".join(consts)

    if r.u8():
        ty = r.compact()
        _skip_enum_deprecation(r)
        info["error"] = ty
        out += b"\x01" + enc_compact(ty)
    else:
        info["error"] = None
        out += b"\x00"

    r.vec(lambda: (r.string(), r.compact(), r.vec(r.string)))  # associated types
    for _ in range(r.compact()):  # view functions
        r.fixed(32)
        r.string()
        r.vec(lambda: (r.string(), r.compact()))
        r.compact()
        r.vec(r.string)
        _skip_item_deprecation(r)
    index = r.u8()
    r.vec(r.string)
    _skip_item_deprecation(r)
    info["index"] = index
    out += bytes([index]) + enc_vec([], enc_str)
    return out, info


def _runtime_api(r: Reader):
    name = r.string()
    methods = []
    info = []
    for _ in range(r.compact()):
        mname = r.string()
        inputs = r.vec(lambda: (r.string(), r.compact()))
        output = r.compact()
        r.vec(r.string)
        _skip_item_deprecation(r)
        methods.append(
            enc_str(mname)
            + enc_vec(inputs, lambda i: enc_str(i[0]) + enc_compact(i[1]))
            + enc_compact(output)
            + enc_vec([], enc_str)
        )
        info.append((name, mname, inputs, output))
    r.vec(r.string)
    r.compact()  # version
    _skip_item_deprecation(r)
    out = enc_str(name) + enc_compact(len(methods)) + b"".join(methods) + enc_vec([], enc_str)
    return out, info


if __name__ == "__main__":
    import sys

    c = convert(open(sys.argv[1], "rb").read())
    print("types", len(c.types), "v15 bytes", len(c.v15), "extrinsic versions", c.extrinsic_versions)
    for ident, ty, implicit in c.extensions:
        print("ext", ident, ty, c.types[ty]["path"], implicit, c.types[implicit])
    for p in c.pallets:
        if p["name"] in ("Commitments", "System"):
            print(p["name"], p["index"], sorted(p["storage"]))
