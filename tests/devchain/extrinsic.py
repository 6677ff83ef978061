"""Decode a signed v4 extrinsic and verify its sr25519 signature over the real signing payload.

Why: a dev chain that accepted any bytes would let a client with a broken
signer (wrong extension list, wrong genesis, wrong era) pass its tests and
then fail on the real network. The payload is built exactly as
`sp_runtime::generic::SignedPayload` does: call ++ explicit extension data ++
implicit ("additional signed") data, blake2-256 hashed when over 256 bytes.
The extension list and each extension's types are read from the metadata.
"""

from __future__ import annotations

from bittensor_wallet import Keypair

from metadata_v16 import Reader
from runtime import blake2_256


def _tx_error(data: str):
    from chain import TxError

    return TxError(1010, "Invalid Transaction", data)


def era_birth(era: bytes, current: int) -> tuple[int | None, int | None]:
    """Return (birth block, period) for a mortal era, (None, None) for immortal."""
    if era == b"\x00":
        return None, None
    enc = int.from_bytes(era, "little")
    period = 2 << (enc % (1 << 4))
    quantize = max(period >> 12, 1)
    phase = (enc >> 4) * quantize
    birth = (max(current, phase) - phase) // period * period + phase
    return birth, period


def implicit_for(chain, ident: str, explicit_value, explicit_raw: bytes, current: int) -> bytes:
    """The 'additional signed' bytes each extension contributes, as the runtime computes them."""
    v = chain.version
    if ident == "CheckSpecVersion":
        return v["spec_version"].to_bytes(4, "little")
    if ident == "CheckTxVersion":
        return v["transaction_version"].to_bytes(4, "little")
    if ident == "CheckGenesis":
        return chain.genesis_hash
    if ident == "CheckMortality":
        birth, period = era_birth(explicit_raw, current)
        if birth is None:
            return chain.genesis_hash
        if birth not in chain.by_number or current >= birth + period:
            raise _tx_error("Transaction has an ancient birth block")
        return chain.by_number[birth]
    if ident == "CheckMetadataHash":
        mode = explicit_value["mode"] if isinstance(explicit_value, dict) else explicit_value
        if mode not in ("Disabled", 0):
            # We cannot compute the RFC-78 metadata digest; a node would reject a wrong one too.
            raise _tx_error("Transaction has a bad signature (CheckMetadataHash mode Enabled unsupported)")
        return b"\x00"
    return b""  # every other extension in this runtime has `()` as implicit data


def parse_extrinsic(chain, raw: bytes) -> dict:
    rt = chain.rt
    r = Reader(raw)
    length = r.compact()
    body_start = r.pos
    if len(raw) - body_start != length:
        raise _tx_error("Could not decode: length prefix mismatch")
    version = r.u8()
    if version & 0x80 == 0:
        raise _tx_error("Unsigned transactions are not accepted by this dev chain")
    if version & 0x7F != 4:
        raise _tx_error(f"Unsupported extrinsic version {version & 0x7f}")
    if r.u8() != 0:  # MultiAddress::Id
        raise _tx_error("Only MultiAddress::Id senders are supported")
    signer = r.fixed(32)
    sig_kind = r.u8()
    if sig_kind != 1:
        raise _tx_error("Only sr25519 signatures are supported")
    signature = r.fixed(64)

    explicit_start = r.pos
    current = chain.head.number
    implicit = b""
    nonce = None
    pos = r.pos
    for ident, ty, _implicit_ty in rt.conv.extensions:
        value, new_pos = rt.decode_prefix(ty, raw, pos)
        explicit_raw = raw[pos:new_pos]
        pos = new_pos
        if ident == "CheckNonce":
            nonce = value
        implicit += implicit_for(chain, ident, value, explicit_raw, current)
    explicit = raw[explicit_start:pos]
    call_bytes = raw[pos:]
    try:
        call = rt.decode_call(call_bytes)
    except Exception as e:  # noqa: BLE001 - any decode failure is a bad transaction
        raise _tx_error(f"Could not decode call: {e}")

    payload = call_bytes + explicit + implicit
    if len(payload) > 256:
        payload = blake2_256(payload)
    kp = Keypair(public_key="0x" + signer.hex())
    if not kp.verify(payload, signature):
        raise _tx_error("Transaction has a bad signature")
    return {"signer": signer, "nonce": nonce, "call": call}
