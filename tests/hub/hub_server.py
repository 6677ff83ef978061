#!/usr/bin/env python3
"""A local stand-in for the Hugging Face Hub, for tests.

What it is
    An HTTP server that speaks the part of the Hub's API that clients use to create
    model repos, upload files (regular files inline, large ones through Git LFS with
    the "basic" and "multipart" transfers), commit, list and download. The official
    clients (`huggingface_hub` in Python, `hf-hub` in Rust) work against it unmodified
    once `HF_ENDPOINT` points at it (and `HF_HUB_DISABLE_XET=1`: there is no Xet here).

Why it exists
    taominer publishes models to the Hub and validators download them. Tests need a
    Hub that is strict where the real one is strict, so protocol mistakes show up in
    CI and not in production: commit and blob ids are real git SHA-1s, each commit's
    files are immutable, private repos are hidden from everyone but their owner, an
    LFS object must be uploaded (and its hash verified) before a commit may point at
    it. Tests also need to break it on purpose, so it can answer chosen requests with
    an error status or drop the connection mid-body (see `/_test/faults`), and it
    records every request (`/_test/log`) so a test can tell what the client did.

    It is Python 3.11 standard library only, so a test harness can start it with any
    `python3` and nothing installed.

Storage
    Blob contents live on disk under `--data DIR` (`objects/git/<blob id>` for regular
    files, `objects/lfs/<sha256>` for LFS objects), written by streaming so a 2 GiB
    upload never sits in memory. Repos, commits and refs live in memory only: a
    restarted server has no repos.

Not supported (on purpose)
    Xet, spaces (datasets are served: model routes under /api/datasets and /datasets/), pull requests, tags, pagination, gitignore handling.

Run `python3 hub_server.py --help` for the flags; README.md next to this file lists
the endpoints and the test-control API.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, quote, unquote

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

IO_CHUNK = 1 * MIB  # read/write granularity when streaming bodies and files
MAX_JSON_BODY = 64 * MIB  # JSON request bodies are small; refuse absurd ones

# Every commit is authored by the same identity; the pushing user is kept separately
# (it is what the commits listing reports under "authors").
GIT_IDENT = "taominer-test-hub <hub@localhost>"

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"

# The patterns of the .gitattributes the Hub puts in every new repo. They decide which
# paths are LFS at preupload time, and they are the content of that first file.
DEFAULT_LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5",
    "*.joblib", "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz",
    "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth",
    "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite",
    "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
JSON_TYPE = "application/json; charset=utf-8"
LFS_JSON_TYPE = "application/vnd.git-lfs+json"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SHORT_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")


# --------------------------------------------------------------------------- git ids


def git_object_id(kind: str, body: bytes) -> str:
    """The id git gives an object: sha1 of "<kind> <len>\\0" followed by the body."""
    digest = hashlib.sha1(b"%s %d\0" % (kind.encode(), len(body)))
    digest.update(body)
    return digest.hexdigest()


def git_blob_id(data: bytes) -> str:
    return git_object_id("blob", data)


def lfs_pointer(oid: str, size: int) -> bytes:
    """The small text file git stores in place of an LFS object."""
    return LFS_POINTER.format(oid=oid, size=size).encode()


def git_tree_ids(files: dict[str, str]) -> dict[str, str]:
    """Tree id of every directory ("" is the root), given {path: blob id}.

    Builds the trees as git does: entries "<mode> <name>\\0<20-byte id>", sorted by
    name where a directory sorts as if its name ended in "/".
    """
    root: dict = {}
    for path, blob_id in files.items():
        *dirs, name = path.split("/")
        node = root
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = blob_id

    ids: dict[str, str] = {}

    def build(node: dict, prefix: str) -> str:
        entries = []
        for name, child in node.items():
            if isinstance(child, dict):
                child_id = build(child, f"{prefix}{name}/")
                entries.append((name + "/", b"40000 " + name.encode() + b"\0" + bytes.fromhex(child_id)))
            else:
                entries.append((name, b"100644 " + name.encode() + b"\0" + bytes.fromhex(child)))
        entries.sort(key=lambda e: e[0].encode())
        tree_id = git_object_id("tree", b"".join(raw for _, raw in entries))
        ids[prefix.rstrip("/")] = tree_id
        return tree_id

    build(root, "")
    return ids


def commit_message(summary: str, description: str) -> str:
    return f"{summary}\n\n{description}" if description else summary


def git_commit_id(tree: str, parent: str | None, ts: int, summary: str, description: str) -> str:
    ident = f"{GIT_IDENT} {ts} +0000"
    header = [f"tree {tree}"] + ([f"parent {parent}"] if parent else []) + [f"author {ident}", f"committer {ident}"]
    body = "\n".join(header) + "\n\n" + commit_message(summary, description) + "\n"
    return git_object_id("commit", body.encode())


def iso_time(ts: float) -> str:
    """The Hub's timestamp format (what huggingface_hub's parse_datetime expects)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit. For LFS files `blob_id` is the id of the pointer file."""

    blob_id: str
    size: int  # the real content size, also for LFS files
    lfs_oid: str | None = None  # sha256 of the content, for LFS files

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.lfs_oid or "", self.size))


@dataclass(frozen=True)
class Commit:
    """A commit and its complete file map. Never mutated once created."""

    id: str
    parent: str | None
    files: dict[str, FileEntry]
    tree_ids: dict[str, str]  # directory path ("" = root) -> tree id
    summary: str
    description: str
    user: str
    ts: int


@dataclass
class Repo:
    id: str  # "namespace/name"
    private: bool
    created_ts: float
    internal_id: str  # the "_id" the Hub reports (a Mongo-style id)
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id
    commits: dict[str, Commit] = field(default_factory=dict)  # insertion order = oldest first
    # LFS objects uploaded to this repo, oid -> size. Scoped per repo like a git-lfs
    # server: an object uploaded elsewhere must be uploaded here too.
    lfs_objects: dict[str, int] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def public_id(self) -> str:
        """The id clients use: a dataset repo's internal id carries DATASET."""
        return self.id.removesuffix(DATASET)


@dataclass
class UploadGrant:
    """What one LFS batch answer allowed: which objects may be PUT to the hrefs it gave.

    The hrefs carry the grant's token in their query string instead of requiring the
    bearer token, because clients PUT to them like to presigned storage URLs, without
    an Authorization header.
    """

    token: str
    repo_id: str
    objects: dict[str, int] = field(default_factory=dict)  # oid -> size
    parts: dict[str, int] = field(default_factory=dict)  # oid -> part count, multipart objects only
    part_etags: dict[tuple[str, int], str] = field(default_factory=dict)  # (oid, part) -> etag


# --------------------------------------------------------------------------- errors and messages


class HubError(Exception):
    """An error answer: JSON {"error": message} plus the Hub's X-Error-* headers."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: list[tuple[str, str]] | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or []
        self.extra = extra or {}


class BodyError(Exception):
    """The request body is malformed or ended early; the connection cannot be reused."""


def repo_not_found(status: int = 404) -> HubError:
    # The Hub answers the same for "does not exist" and "private, not yours", so a
    # private repo cannot be told apart from a missing one. huggingface_hub turns the
    # X-Error-Code into RepositoryNotFoundError.
    return HubError(status, "Repository not found", code="RepoNotFound")


def revision_not_found(rev: str) -> HubError:
    return HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")


def bad_request(message: str) -> HubError:
    return HubError(400, message)


# --------------------------------------------------------------------------- HTTP plumbing


class BodyReader:
    """The request body, read incrementally, whether sized by Content-Length or chunked."""

    def __init__(self, rfile, headers):
        self._rfile = rfile
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._chunk_left = 0
        self._buffer = b""  # read ahead by readline()
        self.bytes_read = 0
        if self._chunked:
            self._remaining = None
            self.done = False
        else:
            try:
                self._remaining = int(headers.get("Content-Length") or 0)
            except ValueError:
                raise BodyError("bad Content-Length") from None
            if self._remaining < 0:
                raise BodyError("bad Content-Length")
            self.done = self._remaining == 0

    def read(self, limit: int = IO_CHUNK) -> bytes:
        """Up to `limit` bytes of body; b"" once the body is over."""
        if self._buffer:
            data, self._buffer = self._buffer[:limit], self._buffer[limit:]
            return data
        return self._read_raw(limit)

    def _read_raw(self, limit: int = IO_CHUNK) -> bytes:
        """Next bytes from the socket, ignoring what readline() buffered."""
        if self.done:
            return b""
        try:
            data = self._read_chunked(limit) if self._chunked else self._read_sized(limit)
        except OSError as e:  # reset, timeout: the client is gone or stuck
            raise BodyError(f"connection lost while reading the body: {e}") from None
        self.bytes_read += len(data)
        return data

    def _read_sized(self, limit: int) -> bytes:
        data = self._rfile.read1(min(limit, self._remaining))
        if not data:
            raise BodyError("request body ended early")
        self._remaining -= len(data)
        self.done = self._remaining == 0
        return data

    def _read_chunked(self, limit: int) -> bytes:
        if self._chunk_left == 0:
            self._chunk_left = self._next_chunk_size()
            if self._chunk_left == 0:
                self._skip_trailers()
                self.done = True
                return b""
        data = self._rfile.read1(min(limit, self._chunk_left))
        if not data:
            raise BodyError("request body ended early")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and self._rfile.read(2) != b"\r\n":
            raise BodyError("bad chunk terminator")
        return data

    def _next_chunk_size(self) -> int:
        line = self._rfile.readline(1024)
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BodyError("bad chunk size line") from None

    def _skip_trailers(self) -> None:
        while True:
            line = self._rfile.readline(8 * KIB)
            if line in (b"\r\n", b"\n", b""):
                return

    def chunks(self) -> Iterator[bytes]:
        while data := self.read():
            yield data

    def read_all(self, limit: int) -> bytes:
        parts, total = [], 0
        for data in self.chunks():
            total += len(data)
            if total > limit:
                raise HubError(413, f"request body larger than {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def readline(self) -> bytes:
        """One line including its "\\n" (the last line may lack it); b"" at the end."""
        while b"\n" not in self._buffer:
            data = self._read_raw()
            if not data:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def drain(self) -> None:
        """Consume what the handler did not read, so the connection can serve the next request."""
        self._buffer = b""
        while self.read():
            pass


@dataclass
class Request:
    method: str  # as sent; HEAD is routed like GET
    path: str  # raw path, query removed
    query: dict[str, str]
    headers: object
    body: BodyReader
    base_url: str  # scheme://host:port the client used; upload hrefs are built on it
    user: str | None  # owner of a valid bearer token, else None

    def json(self) -> dict:
        raw = self.body.read_all(MAX_JSON_BODY)
        try:
            value = json.loads(raw or b"null")
        except ValueError:
            raise bad_request("request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise bad_request("expected a JSON object body")
        return value

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true", "yes")


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: tuple[Path, int, int] | None = None  # (path, offset, length), streamed instead of body


def json_response(value, status: int = 200, content_type: str = JSON_TYPE,
                  headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", content_type)] + (headers or []), json.dumps(value).encode())


def error_response(err: HubError) -> Response:
    headers = [("X-Error-Message", err.message.encode("ascii", "replace").decode())] + err.headers
    if err.code:
        headers.append(("X-Error-Code", err.code))
    return json_response({"error": err.message, **err.extra}, err.status, headers=headers)


# --------------------------------------------------------------------------- blob store


class BlobStore:
    """Content on disk: regular files by git blob id, LFS objects by sha256."""

    def __init__(self, root: Path):
        self.git_dir = root / "objects" / "git"
        self.lfs_dir = root / "objects" / "lfs"
        self.tmp_dir = root / "tmp"
        self.parts_dir = self.tmp_dir / "parts"
        # Leftovers of a previous run are incomplete uploads: drop them.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        for d in (self.git_dir, self.lfs_dir, self.parts_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path_of(self, entry: FileEntry) -> Path:
        return self.lfs_dir / entry.lfs_oid if entry.lfs_oid else self.git_dir / entry.blob_id

    def lfs_path(self, oid: str) -> Path:
        return self.lfs_dir / oid

    def put_regular(self, data: bytes) -> str:
        """Stores a regular file's content; returns its git blob id."""
        blob_id = git_blob_id(data)
        target = self.git_dir / blob_id
        if not target.exists():
            tmp, _, _ = self.spool(iter([data]))
            os.replace(tmp, target)
        return blob_id

    def spool(self, chunks: Iterator[bytes], algo: str = "sha256") -> tuple[Path, int, str]:
        """Writes chunks to a new temp file, hashing as they pass (one digest only: hashing
        is most of the cost of a large upload). Returns (path, size, hex digest)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        digest, size = hashlib.new(algo, usedforsecurity=False), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for data in chunks:
                    out.write(data)
                    digest.update(data)
                    size += len(data)
        except BaseException:
            os.unlink(name)
            raise
        return Path(name), size, digest.hexdigest()

    def read_file(self, path: Path) -> Iterator[bytes]:
        with open(path, "rb") as f:
            while data := f.read(IO_CHUNK):
                yield data


def discard(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- faults and log


class FaultRules:
    """Injected failures, set by POST /_test/faults and consumed by matching requests."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rules: list[dict] = []

    def replace(self, rules) -> None:
        if not isinstance(rules, list):
            raise bad_request('expected {"rules": [...]}')
        checked = [self._check(rule) for rule in rules]
        with self._lock:
            self._rules = checked

    @staticmethod
    def _check(rule) -> dict:
        if not isinstance(rule, dict) or not isinstance(rule.get("path_regex", ""), str):
            raise bad_request("each rule is an object with a string path_regex")
        try:
            re.compile(rule.get("path_regex", ""))
        except re.error as e:
            raise bad_request(f"bad path_regex: {e}") from None
        has_status, has_drop = "status" in rule, "drop_after_bytes" in rule
        if has_status == has_drop:
            raise bad_request("each rule needs exactly one of status, drop_after_bytes")
        value = rule["status"] if has_status else rule["drop_after_bytes"]
        if not isinstance(value, int) or value < 0 or (has_status and not 100 <= value <= 599):
            raise bad_request("status must be an HTTP status, drop_after_bytes a byte count")
        count = rule.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise bad_request("count must be a positive integer")
        method = rule.get("method")
        return {**rule, "method": method.upper() if isinstance(method, str) else None,
                "path_regex": rule.get("path_regex", ""), "count": count}

    def take(self, method: str, path: str) -> dict | None:
        """The first live rule matching this request, with one use consumed."""
        with self._lock:
            for rule in self._rules:
                if rule["method"] not in (None, method) or not re.search(rule["path_regex"], path):
                    continue
                rule["count"] -= 1
                if rule["count"] == 0:
                    self._rules.remove(rule)
                return dict(rule)
        return None

    def remaining(self) -> list[dict]:
        with self._lock:
            return [dict(rule) for rule in self._rules]


class RequestLog:
    """Every handled request (test-control ones excepted), for tests to inspect."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: list[dict] = []

    def add(self, method: str, path: str, status: int, bytes_in: int, user: str | None) -> None:
        with self._lock:
            self._entries.append({"method": method, "path": path, "status": status,
                                  "bytes_in": bytes_in, "user": user})

    def entries(self) -> list[dict]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# --------------------------------------------------------------------------- the hub


@dataclass
class Config:
    data_dir: Path
    users: dict[str, str]  # bearer token -> user name
    lfs_threshold: int = 10 * MIB
    multipart_threshold: int = 5 * GIB
    chunk_size: int = 512 * MIB


def is_lfs_pattern(path: str) -> bool:
    """Whether the default .gitattributes makes `path` an LFS file."""
    name = path.rsplit("/", 1)[-1]
    for pattern in DEFAULT_LFS_PATTERNS:
        if "/" in pattern:
            # "saved_model/**/*": anything below that directory (fnmatch's * crosses "/").
            if fnmatch.fnmatchcase(path, pattern.replace("/**/", "/")):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def clean_path(path, *, folder: bool = False) -> str:
    """A repo-relative file path, refused if it could escape or confuse the tree."""
    if not isinstance(path, str):
        raise bad_request("path must be a string")
    if folder:
        path = path.rstrip("/")
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise bad_request(f"invalid path in repo: {path!r}")
    return path


def check_no_file_dir_clash(files: dict[str, FileEntry]) -> None:
    dirs = {p.rsplit("/", 1)[0] for p in files if "/" in p}
    dirs |= {d.rsplit("/", i)[0] for d in list(dirs) for i in range(1, d.count("/") + 1)}
    clash = sorted(dirs & files.keys())
    if clash:
        raise bad_request(f"{clash[0]!r} would be both a file and a directory")


class Hub:
    """Repos, commits, uploads and the endpoint logic. Transport-agnostic: takes a
    Request, returns a Response (or raises HubError)."""

    def __init__(self, config: Config):
        self.config = config
        self.store = BlobStore(config.data_dir)
        self.faults = FaultRules()
        self.log = RequestLog()
        self.lock = threading.Lock()  # guards repos, their refs/commits/objects, and grants
        self.repos: dict[str, Repo] = {}
        self.grants: dict[str, UploadGrant] = {}
        # A hostile Hub, on demand (POST /_test/hostile): extra file names that model_info lists
        # and resolve serves, and another host for LFS verify hrefs.
        self.hostile: dict = {}

    # ---- routing

    def dispatch(self, req: Request) -> Response:
        method = "GET" if req.method == "HEAD" else req.method
        # Split before decoding, so a repo id sent as one "ns%2Fname" segment stays one.
        segs = [unquote(s) for s in req.path.split("/")[1:]] or [""]
        head = segs[:2]
        if head == ["api", "whoami-v2"] and method == "GET":
            return self.whoami(req)
        if head == ["api", "repos"] and segs[2:] == ["create"] and method == "POST":
            return self.create_repo(req)
        if head == ["api", "repos"] and segs[2:] == ["delete"] and method == "DELETE":
            return self.delete_repo(req)
        if head == ["api", "validate-yaml"] and method == "POST":
            return json_response({"errors": [], "warnings": []})
        if head == ["api", "models"]:
            return self.route_model_api(req, method, segs[2:])
        if head == ["api", "datasets"]:
            return self.route_model_api(req, method, segs[2:], DATASET)
        if segs[0] == "_test":
            return self.route_test_control(req, method, segs[1:])
        if segs[0] == "_lfs":
            return self.route_lfs_transfer(req, method, segs[1:])
        kind = ""
        if segs[0] == "datasets":
            segs, kind = segs[1:], DATASET
        repo_id, rest = split_repo(segs)
        if repo_id and repo_id.endswith(".git") and rest == ["info", "lfs", "objects", "batch"] and method == "POST":
            return self.lfs_batch(req, repo_id[: -len(".git")] + kind)
        if repo_id and len(rest) >= 3 and rest[0] == "resolve" and method == "GET":
            return self.resolve(req, repo_id + kind, rest[1], "/".join(rest[2:]))
        raise HubError(404, "Not Found")

    def route_model_api(self, req: Request, method: str, segs: list[str], kind: str = "") -> Response:
        repo_id, rest = split_repo(segs)
        if repo_id is None:
            raise HubError(404, "Not Found")
        repo_id += kind
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        routes = {
            ("", "GET"): lambda: self.model_info(req, repo_id, "main"),
            ("revision", "GET"): lambda: self.model_info(req, repo_id, args[0]),
            ("tree", "GET"): lambda: self.tree(req, repo_id, args[0], "/".join(args[1:])),
            ("commits", "GET"): lambda: self.list_commits(req, repo_id, args[0]),
            ("refs", "GET"): lambda: self.refs(req, repo_id),
            ("preupload", "POST"): lambda: self.preupload(req, repo_id, args[0]),
            ("commit", "POST"): lambda: self.commit(req, repo_id, args[0]),
            ("paths-info", "POST"): lambda: self.paths_info(req, repo_id, args[0]),
            ("settings", "PUT"): lambda: self.settings(req, repo_id),
        }
        takes_rev = action in ("revision", "tree", "commits", "preupload", "commit", "paths-info")
        if takes_rev and not args:
            raise HubError(404, "Not Found")
        if (action, method) in routes:
            return routes[(action, method)]()
        if any(a == action for a, _ in routes):
            raise HubError(405, f"{method} not allowed here")
        raise HubError(404, "Not Found")  # includes the xet-*-token endpoints: no Xet here

    # ---- auth and lookups

    def user_for(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return self.config.users.get(authorization[7:].strip())

    @staticmethod
    def require_user(req: Request) -> str:
        if req.user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return req.user

    def require_owner(self, req: Request, namespace: str, what: str = "write to") -> str:
        user = self.require_user(req)
        if user != namespace:
            raise HubError(403, f'You don\'t have the rights to {what} a model under the namespace "{namespace}"')
        return user

    def repo_for_read(self, req: Request, repo_id: str) -> Repo:
        with self.lock:
            repo = self.repos.get(repo_id)
        if repo is None:
            raise repo_not_found(404)
        if repo.private and req.user != repo.namespace:
            raise repo_not_found(401)
        return repo

    def repo_for_write(self, req: Request, repo_id: str) -> Repo:
        self.require_owner(req, repo_id.split("/", 1)[0])
        with self.lock:
            repo = self.repos.get(repo_id)
        if repo is None:
            raise repo_not_found(404)
        return repo

    def resolve_revision(self, repo: Repo, rev: str) -> Commit:
        """A branch name, a full commit id, or an unambiguous commit id prefix."""
        with self.lock:
            commit_id = repo.branches.get(rev)
            if commit_id is None and SHORT_SHA_RE.match(rev):
                matches = [c for c in repo.commits if c.startswith(rev)]
                commit_id = matches[0] if len(matches) == 1 else None
            if commit_id is None:
                raise revision_not_found(rev)
            return repo.commits[commit_id]

    def repo_url(self, req: Request, repo_id: str) -> str:
        if repo_id.endswith(DATASET):
            return f"{req.base_url}/datasets/{repo_id.removesuffix(DATASET)}"
        return f"{req.base_url}/{repo_id}"

    # ---- account and repo management

    def whoami(self, req: Request) -> Response:
        user = self.require_user(req)
        return json_response({
            "type": "user", "name": user, "fullname": user, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
        })

    def create_repo(self, req: Request) -> Response:
        payload = req.json()
        user = self.require_user(req)
        name, namespace = payload.get("name"), payload.get("organization")
        if isinstance(name, str) and "/" in name and not namespace:
            namespace, name = name.split("/", 1)  # old clients sent the full id as "name"
        namespace = namespace or user
        kind = {"model": "", "dataset": DATASET}.get(payload.get("type") or "model")
        if kind is None:
            raise bad_request("this test hub only has model and dataset repos")
        self.require_owner(req, namespace, what="create")
        if not (isinstance(name, str) and NAME_RE.match(name) and NAME_RE.match(namespace)):
            raise bad_request(f"invalid repo name: {namespace}/{name}")
        repo_id = f"{namespace}/{name}{kind}"
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, "You already created this model repo", extra={"url": self.repo_url(req, repo_id)})
            repo = Repo(repo_id, private=wants_private(payload, default=False), created_ts=time.time(),
                        internal_id=secrets.token_hex(12))
            # Like the Hub, a new repo starts with one commit adding .gitattributes.
            blob_id = self.store.put_regular(GITATTRIBUTES)
            files = {".gitattributes": FileEntry(blob_id, len(GITATTRIBUTES))}
            self._add_commit(repo, "main", None, files, "initial commit", "", user)
            self.repos[repo_id] = repo
        url = self.repo_url(req, repo_id)
        public = repo_id.removesuffix(DATASET)
        return json_response({"url": url, "name": public, "id": public})

    def delete_repo(self, req: Request) -> Response:
        payload = req.json()
        user = self.require_user(req)
        name, namespace = payload.get("name"), payload.get("organization") or user
        repo_id = f"{namespace}/{name}"
        self.require_owner(req, namespace, what="delete")
        with self.lock:
            if self.repos.pop(repo_id, None) is None:
                raise repo_not_found(404)
            self.grants = {t: g for t, g in self.grants.items() if g.repo_id != repo_id}
        return json_response({})

    def settings(self, req: Request, repo_id: str) -> Response:
        repo = self.repo_for_write(req, repo_id)
        payload = req.json()
        if "visibility" not in payload and "private" not in payload and "gated" not in payload:
            raise bad_request("nothing to update")
        if "visibility" in payload or "private" in payload:
            private = wants_private(payload, default=repo.private)
            with self.lock:
                repo.private = private
        return json_response({})  # "gated" is accepted and ignored: no gating here

    # ---- reads

    def model_info(self, req: Request, repo_id: str, rev: str) -> Response:
        repo = self.repo_for_read(req, repo_id)
        commit = self.resolve_revision(repo, rev)
        with_sizes = req.flag("blobs")
        siblings = []
        for path in sorted(commit.files):
            entry = commit.files[path]
            sibling = {"rfilename": path, "blobId": entry.blob_id}
            if with_sizes:
                sibling["size"] = entry.size
            if entry.lfs_oid:
                sibling["lfs"] = {"sha256": entry.lfs_oid, "size": entry.size, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        for name, text in self.hostile.get("extra_files", {}).items():
            siblings.append({"rfilename": name, "size": len(text.encode())})
        return json_response({
            "_id": repo.internal_id, "id": repo.public_id, "modelId": repo.public_id, "author": repo.namespace,
            "sha": commit.id, "lastModified": iso_time(commit.ts), "createdAt": iso_time(repo.created_ts),
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": [], "spaces": [], "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        })

    def tree(self, req: Request, repo_id: str, rev: str, path: str) -> Response:
        repo = self.repo_for_read(req, repo_id)
        commit = self.resolve_revision(repo, rev)
        base = path.strip("/")
        if base and base not in commit.tree_ids:
            raise HubError(404, f"{base} is not a directory of {rev}", code="EntryNotFound",
                           headers=[("X-Repo-Commit", commit.id)])
        prefix = f"{base}/" if base else ""
        recursive = req.flag("recursive")

        def listed(p: str) -> bool:
            return p.startswith(prefix) and p != base and (recursive or "/" not in p[len(prefix):])

        entries = [tree_entry(commit, p) for p in commit.tree_ids if p and listed(p)]
        entries += [tree_entry(commit, p) for p in commit.files if listed(p)]
        entries.sort(key=lambda e: e["path"])
        return json_response(entries)

    def paths_info(self, req: Request, repo_id: str, rev: str) -> Response:
        repo = self.repo_for_read(req, repo_id)
        commit = self.resolve_revision(repo, rev)
        paths = paths_from_body(req)
        found = [p for p in paths if p in commit.files or (p and p in commit.tree_ids)]
        return json_response([tree_entry(commit, p) for p in found])

    def list_commits(self, req: Request, repo_id: str, rev: str) -> Response:
        repo = self.repo_for_read(req, repo_id)
        commit: Commit | None = self.resolve_revision(repo, rev)
        listed = []
        while commit is not None:  # newest first, following first parents
            listed.append({
                "id": commit.id, "title": commit.summary,
                "message": commit_message(commit.summary, commit.description),
                "authors": [{"user": commit.user}], "date": iso_time(commit.ts),
            })
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return json_response(listed)

    def refs(self, req: Request, repo_id: str) -> Response:
        repo = self.repo_for_read(req, repo_id)
        with self.lock:
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()]
        body = {"branches": branches, "converts": [], "tags": []}
        if "include_prs" in req.query:
            body["pullRequests"] = []
        return json_response(body)

    def resolve(self, req: Request, repo_id: str, rev: str, path: str) -> Response:
        repo = self.repo_for_read(req, repo_id)
        commit = self.resolve_revision(repo, rev)
        entry = commit.files.get(path)
        extra = self.hostile.get("extra_files", {})
        hostile = extra.get(path, extra.get("/" + path))
        if entry is None and hostile is not None:
            body = hostile.encode()
            return Response(200, [("X-Repo-Commit", commit.id), ("Content-Type", "application/octet-stream"),
                                  ("ETag", f'"{git_blob_id(body)}"')], body)
        if entry is None:
            # X-Repo-Commit lets huggingface_hub cache "this file does not exist at that commit".
            raise HubError(404, "Entry not found", code="EntryNotFound", headers=[("X-Repo-Commit", commit.id)])
        headers = [("X-Repo-Commit", commit.id), ("Accept-Ranges", "bytes"),
                   ("Content-Type", "application/octet-stream")]
        if entry.lfs_oid:
            # Clients prefer X-Linked-* (what the Hub sends next to its CDN redirect);
            # the etag of an LFS file is its sha256, of a regular file its git blob id.
            headers += [("ETag", f'"{entry.lfs_oid}"'), ("X-Linked-Etag", f'"{entry.lfs_oid}"'),
                        ("X-Linked-Size", str(entry.size))]
        else:
            headers.append(("ETag", f'"{entry.blob_id}"'))
        span = byte_range(req.headers.get("Range"), entry.size)
        if span is None:
            return Response(200, headers, file=(self.store.path_of(entry), 0, entry.size))
        start, end = span
        headers.append(("Content-Range", f"bytes {start}-{end}/{entry.size}"))
        return Response(206, headers, file=(self.store.path_of(entry), start, end - start + 1))

    # ---- uploads: preupload and LFS

    def preupload(self, req: Request, repo_id: str, rev: str) -> Response:
        repo = self.repo_for_write(req, repo_id)
        commit = self.resolve_revision(repo, rev)
        files = req.json().get("files")
        if not isinstance(files, list):
            raise bad_request('expected {"files": [...]}')
        answers = []
        for item in files:
            if not isinstance(item, dict) or not isinstance(item.get("size"), int):
                raise bad_request("each file needs a path and an integer size")
            path = clean_path(item.get("path"))
            try:
                sample = base64.b64decode(item.get("sample") or "", validate=True)
            except ValueError:
                raise bad_request(f"sample of {path} is not base64") from None
            answer = {"path": path, "uploadMode": self.upload_mode(path, item["size"], sample), "shouldIgnore": False}
            existing = commit.files.get(path)
            if existing:
                # huggingface_hub skips unchanged files by comparing this with its own
                # oid of the file: the sha256 for LFS, the git blob id for regular files.
                answer["oid"] = existing.lfs_oid or existing.blob_id
            answers.append(answer)
        return json_response({"files": answers, "commitOid": commit.id})

    def upload_mode(self, path: str, size: int, sample: bytes) -> str:
        if size == 0:
            return "regular"  # an empty LFS object cannot be stored; the Hub keeps them in git
        if size >= self.config.lfs_threshold or b"\0" in sample[:512] or is_lfs_pattern(path):
            return "lfs"
        return "regular"

    def lfs_batch(self, req: Request, repo_id: str) -> Response:
        repo = self.repo_for_write(req, repo_id)
        payload = req.json()
        if payload.get("operation") != "upload":
            raise HubError(422, "this test hub only serves the LFS upload operation")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise bad_request('expected "objects": [...]')
        transfers = payload.get("transfers") or ["basic"]
        grant = UploadGrant(secrets.token_urlsafe(24), repo.id)
        answers, used_multipart = [], False
        for obj in objects:
            oid, size = (obj.get("oid"), obj.get("size")) if isinstance(obj, dict) else (None, None)
            if not (isinstance(oid, str) and SHA256_RE.match(oid) and isinstance(size, int) and size >= 0):
                raise bad_request("each object needs a lowercase sha256 oid and an integer size")
            answer = {"oid": oid, "size": size, "authenticated": True}
            with self.lock:
                stored_size = repo.lfs_objects.get(oid)
            if stored_size == size:
                answers.append(answer)  # already here: no actions, the client skips it
                continue
            if stored_size is not None:
                answers.append({**answer, "error": {"code": 422, "message": f"object {oid} exists with size {stored_size}"}})
                continue
            grant.objects[oid] = size
            if size > self.config.multipart_threshold and "multipart" in transfers:
                answer["actions"] = self.multipart_actions(req, grant, oid, size)
                used_multipart = True
            else:
                answer["actions"] = {"upload": {"href": self.lfs_href(req, grant, oid)},
                                     "verify": {"href": self.verify_href(req, grant, oid), "header": {}}}
            answers.append(answer)
        with self.lock:
            self.grants[grant.token] = grant
        body = {"transfer": "multipart" if used_multipart else "basic", "objects": answers, "hash_algo": "sha256"}
        return json_response(body, content_type=LFS_JSON_TYPE)

    def multipart_actions(self, req: Request, grant: UploadGrant, oid: str, size: int) -> dict:
        """huggingface_hub's multipart shape: the part URLs sit in "header" under
        zero-padded part numbers next to "chunk_size", and "href" is where the client
        POSTs {"oid", "parts": [{"partNumber", "etag"}]} once all parts are up."""
        chunk = self.config.chunk_size
        count = max(1, -(-size // chunk))
        grant.parts[oid] = count
        header = {"chunk_size": str(chunk)}
        for n in range(1, count + 1):
            header[f"{n:05d}"] = self.lfs_href(req, grant, oid, f"part/{n}")
        return {"upload": {"href": self.lfs_href(req, grant, oid, "complete"), "header": header},
                "verify": {"href": self.verify_href(req, grant, oid), "header": {}}}

    def verify_href(self, req: Request, grant: UploadGrant, oid: str) -> str:
        href = self.lfs_href(req, grant, oid, "verify")
        host = self.hostile.get("verify_host")
        if host:  # this same server under another name: another origin to the client
            href = re.sub(r"^(https?://)[^:/]+", lambda m: m.group(1) + host, href)
        return href

    @staticmethod
    def lfs_href(req: Request, grant: UploadGrant, oid: str, action: str = "") -> str:
        suffix = f"/{action}" if action else ""
        return f"{req.base_url}/_lfs/{grant.repo_id}/{oid}{suffix}?t={quote(grant.token)}"

    def route_lfs_transfer(self, req: Request, method: str, segs: list[str]) -> Response:
        repo_id, rest = split_repo(segs)
        if repo_id is None or not rest or not SHA256_RE.match(rest[0]):
            raise HubError(404, "Not Found")
        oid, action = rest[0], rest[1:]
        if action == ["verify"] and method == "POST":
            return self.lfs_verify(req, repo_id, oid)
        grant = self.grant_for(req, repo_id, oid)
        if action == [] and method == "PUT":
            return self.lfs_put(req, grant, oid)
        if len(action) == 2 and action[0] == "part" and action[1].isdigit() and method == "PUT":
            return self.lfs_put_part(req, grant, oid, int(action[1]))
        if action == ["complete"] and method == "POST":
            return self.lfs_complete(req, grant, oid)
        raise HubError(404, "Not Found")

    def grant_for(self, req: Request, repo_id: str, oid: str) -> UploadGrant:
        with self.lock:
            grant = self.grants.get(req.query.get("t", ""))
        if grant is None or grant.repo_id != repo_id or oid not in grant.objects:
            raise HubError(403, "upload URL is not valid for this object")
        return grant

    def lfs_put(self, req: Request, grant: UploadGrant, oid: str) -> Response:
        tmp, size, sha256 = self.store.spool(req.body.chunks())
        try:
            self.check_content(oid, grant.objects[oid], sha256, size)
            os.replace(tmp, self.store.lfs_path(oid))
        finally:
            discard(tmp)
        self.register_lfs_object(grant.repo_id, oid, size)
        return Response(200, [("ETag", f'"{sha256}"')])

    def lfs_put_part(self, req: Request, grant: UploadGrant, oid: str, number: int) -> Response:
        count, size, chunk = grant.parts.get(oid, 0), grant.objects[oid], self.config.chunk_size
        if not 1 <= number <= count:
            raise HubError(404, f"no part {number} for {oid}")
        expected = min(chunk, size - (number - 1) * chunk)
        tmp, got, md5 = self.store.spool(req.body.chunks(), "md5")
        if got != expected:
            discard(tmp)
            raise bad_request(f"part {number} of {oid} must be {expected} bytes, got {got}")
        part_dir = self.store.parts_dir / grant.token / oid
        part_dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, part_dir / str(number))
        with self.lock:
            grant.part_etags[(oid, number)] = md5
        return Response(200, [("ETag", f'"{md5}"')])  # S3 answers parts with an md5 ETag too

    def lfs_complete(self, req: Request, grant: UploadGrant, oid: str) -> Response:
        payload = req.json()
        parts = payload.get("parts")
        if payload.get("oid") != oid or not isinstance(parts, list):
            raise bad_request('expected {"oid": <this oid>, "parts": [...]}')
        count = grant.parts.get(oid, 0)
        numbers = [p.get("partNumber") if isinstance(p, dict) else None for p in parts]
        if numbers != list(range(1, count + 1)):
            raise bad_request(f"expected parts 1..{count} in order")
        for p in parts:
            with self.lock:
                etag = grant.part_etags.get((oid, p["partNumber"]))
            if etag is None or str(p.get("etag", "")).strip('"') != etag:
                raise bad_request(f"part {p['partNumber']} of {oid} is missing or its etag does not match")
        part_dir = self.store.parts_dir / grant.token / oid
        chunks = (data for n in range(1, count + 1) for data in self.store.read_file(part_dir / str(n)))
        tmp, size, sha256 = self.store.spool(chunks)
        try:
            self.check_content(oid, grant.objects[oid], sha256, size)
            os.replace(tmp, self.store.lfs_path(oid))
        finally:
            discard(tmp)
        shutil.rmtree(part_dir, ignore_errors=True)
        try:
            part_dir.parent.rmdir()  # the grant's directory, once its last object is complete
        except OSError:
            pass
        self.register_lfs_object(grant.repo_id, oid, size)
        return json_response({"oid": oid, "size": size})

    def lfs_verify(self, req: Request, repo_id: str, oid: str) -> Response:
        # Reached with the href's grant token, or with the owner's bearer token.
        with self.lock:
            grant = self.grants.get(req.query.get("t", ""))
        if grant is None or grant.repo_id != repo_id:
            self.repo_for_write(req, repo_id)
        payload = req.json()
        with self.lock:
            repo = self.repos.get(repo_id)
            stored = repo.lfs_objects.get(oid) if repo else None
        if payload.get("oid") != oid or stored is None or stored != payload.get("size"):
            raise HubError(404, f"object {oid} of size {payload.get('size')} is not stored")
        return json_response({"oid": oid, "size": stored})

    @staticmethod
    def check_content(oid: str, size: int, got_sha256: str, got_size: int) -> None:
        if got_size != size or got_sha256 != oid:
            raise bad_request(f"uploaded content does not match: expected sha256 {oid} and {size} bytes, "
                              f"got sha256 {got_sha256} and {got_size} bytes")

    def register_lfs_object(self, repo_id: str, oid: str, size: int) -> None:
        with self.lock:
            repo = self.repos.get(repo_id)
            if repo is None:
                raise repo_not_found(404)
            repo.lfs_objects[oid] = size

    # ---- commits

    def commit(self, req: Request, repo_id: str, rev: str) -> Response:
        repo = self.repo_for_write(req, repo_id)
        if req.flag("create_pr"):
            raise bad_request("this test hub has no pull requests")
        with self.lock:
            if rev not in repo.branches:
                raise revision_not_found(rev)  # commits go to branches, not to commit ids
        header, ops = self.read_commit_payload(req)
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise bad_request("the commit needs a summary")
        description = header.get("description") or ""
        parent_wanted = header.get("parentCommit")
        with self.lock:
            # The whole commit is checked and applied under the lock: either every
            # operation lands in one new commit, or nothing changes.
            head = repo.branches[rev]
            if parent_wanted and not head.startswith(str(parent_wanted).lower()):
                raise HubError(412, f"parentCommit {parent_wanted} is not the head of {rev} ({head})")
            files = self.apply_operations(repo, dict(repo.commits[head].files), ops)
            # A new commit is made even when the tree does not change (as the Hub does).
            commit = self._add_commit(repo, rev, head, files, summary, description, req.user)
        return json_response({"commitUrl": f"{self.repo_url(req, repo_id)}/commit/{commit.id}",
                              "commitOid": commit.id, "pullRequestUrl": None})

    def read_commit_payload(self, req: Request) -> tuple[dict, list[tuple]]:
        """Parses the NDJSON body line by line. Inline file contents are written to the
        blob store as they are read, so only one line is held at a time."""
        header, ops = None, []
        while line := req.body.readline():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError):
                raise bad_request("each commit line must be JSON {\"key\", \"value\"}") from None
            if header is None:
                if key != "header" or not isinstance(value, dict):
                    raise bad_request("the first commit line must be the header")
                header = value
            elif key == "file":
                ops.append(("add", clean_path(value.get("path")), self.store_inline_file(value)))
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256" or not SHA256_RE.match(str(value.get("oid"))):
                    raise bad_request("lfsFile needs a sha256 oid")
                ops.append(("lfs", clean_path(value.get("path")), value["oid"], value.get("size")))
            elif key == "deletedFile":
                ops.append(("delete_file", clean_path(value.get("path"))))
            elif key == "deletedFolder":
                ops.append(("delete_folder", clean_path(value.get("path"), folder=True)))
            else:
                raise bad_request(f"unknown commit operation {key!r}")
        if header is None:
            raise bad_request("empty commit payload")
        return header, ops

    def store_inline_file(self, value: dict) -> FileEntry:
        content = value.get("content", "")
        if not isinstance(content, str):
            raise bad_request("file content must be a string")
        if value.get("encoding", "base64") == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError:
                raise bad_request("file content is not valid base64") from None
        else:
            data = content.encode()
        return FileEntry(self.store.put_regular(data), len(data))

    @staticmethod
    def apply_operations(repo: Repo, files: dict[str, FileEntry], ops: list[tuple]) -> dict[str, FileEntry]:
        for op in ops:
            kind, path = op[0], op[1]
            if kind == "add":
                files[path] = op[2]
            elif kind == "lfs":
                oid, size = op[2], op[3]
                stored = repo.lfs_objects.get(oid)
                if stored is None or (size is not None and size != stored):
                    raise HubError(422, f"LFS object {oid} ({size} bytes) for {path} has not been uploaded "
                                        f"to {repo.id}: upload it through the LFS batch API first")
                files[path] = FileEntry(git_blob_id(lfs_pointer(oid, stored)), stored, oid)
            elif kind == "delete_file":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
            elif kind == "delete_folder":
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                for p in doomed:
                    del files[p]
        check_no_file_dir_clash(files)
        return files

    def _add_commit(self, repo: Repo, branch: str, parent: str | None, files: dict[str, FileEntry],
                    summary: str, description: str, user: str) -> Commit:
        """Creates a commit and moves the branch to it. Caller holds self.lock."""
        ts = int(time.time())
        tree_ids = git_tree_ids({p: e.blob_id for p, e in files.items()})
        commit_id = git_commit_id(tree_ids[""], parent, ts, summary, description)
        commit = Commit(commit_id, parent, files, tree_ids, summary, description, user, ts)
        repo.commits[commit_id] = commit
        repo.branches[branch] = commit_id
        return commit

    # ---- test control (no auth: tests only)

    def route_test_control(self, req: Request, method: str, segs: list[str]) -> Response:
        if segs == ["faults"] and method == "POST":
            self.faults.replace(req.json().get("rules"))
            return json_response({"rules": self.faults.remaining()})
        if segs == ["faults"] and method == "GET":
            return json_response({"rules": self.faults.remaining()})
        if segs == ["hostile"] and method == "POST":
            payload = req.json()
            extra, host = payload.get("extra_files", {}), payload.get("verify_host")
            if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
                raise bad_request('expected {"extra_files": {name: text}, "verify_host": host}')
            self.hostile = {"extra_files": extra, "verify_host": host}
            return json_response(self.hostile)
        if segs == ["log"] and method == "GET":
            return json_response(self.log.entries())
        if segs == ["log", "clear"] and method == "POST":
            self.log.clear()
            return json_response({})
        if segs == ["repos"] and method == "GET":
            with self.lock:
                return json_response({
                    repo.id: {"private": repo.private, "head": repo.branches.get("main"),
                              "commits": list(repo.commits)}
                    for repo in self.repos.values()
                })
        raise HubError(404, "Not Found")


# Dataset repos live beside model repos under "ns/name@dataset", so every lookup, grant and
# ownership check works unchanged; URLs and answers use the public "ns/name".
DATASET = "@dataset"


def split_repo(segs: list[str]) -> tuple[str | None, list[str]]:
    """("ns/name", rest) from decoded path segments; the id may come as one "%2F" segment."""
    if segs and "/" in segs[0]:
        return segs[0], segs[1:]
    if len(segs) >= 2 and segs[0] and segs[1]:
        return f"{segs[0]}/{segs[1]}", segs[2:]
    return None, segs


def wants_private(payload: dict, default: bool) -> bool:
    """Visibility from either spelling clients use: "visibility" or "private"."""
    visibility = payload.get("visibility")
    if visibility is not None:
        if visibility not in ("private", "public"):
            raise bad_request(f"unsupported visibility {visibility!r}")
        return visibility == "private"
    private = payload.get("private")
    return default if private is None else bool(private)


def tree_entry(commit: Commit, path: str) -> dict:
    if path in commit.tree_ids:
        return {"type": "directory", "oid": commit.tree_ids[path], "size": 0, "path": path}
    entry = commit.files[path]
    item = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
    if entry.lfs_oid:
        item["lfs"] = {"oid": entry.lfs_oid, "size": entry.size, "pointerSize": entry.pointer_size}
    return item


def paths_from_body(req: Request) -> list[str]:
    """paths-info takes JSON {"paths": [...]} (hf-hub) or a form with repeated paths= (huggingface_hub)."""
    raw = req.body.read_all(MAX_JSON_BODY)
    if "json" in req.headers.get("Content-Type", ""):
        try:
            paths = json.loads(raw or b"{}").get("paths", [])
        except (ValueError, AttributeError):
            raise bad_request("request body is not a JSON object") from None
    else:
        paths = parse_qs(raw.decode("utf-8", "replace")).get("paths", [])
    if not isinstance(paths, list):
        raise bad_request("paths must be a list")
    return [str(p).strip("/") for p in paths]


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single "bytes=a-b" range, or None to send everything.

    Multiple ranges and empty files are answered in full (allowed by RFC 9110);
    a range outside the file is a 416.
    """
    if not header or size == 0:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or not any(match.groups()):
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HubError(416, "Range Not Satisfiable", headers=[("Content-Range", f"bytes */{size}")])
    return start, end


# --------------------------------------------------------------------------- HTTP server


class HubHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 front end: body framing, fault injection, the request log, sending."""

    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries a Content-Length
    server_version = "taominer-test-hub/1"
    timeout = 600  # an idle keep-alive connection is closed after this long

    def do_GET(self):
        self.handle_request()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    @property
    def hub(self) -> Hub:
        return self.server.hub

    def handle_request(self) -> None:
        path, _, query = self.path.partition("?")
        user = self.hub.user_for(self.headers.get("Authorization"))
        try:
            body = BodyReader(self.rfile, self.headers)
        except BodyError as e:
            self.finish_request(error_response(bad_request(str(e))), path, 0, user, close=True)
            return
        req = Request(self.command, path, {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()},
                      self.headers, body, self.base_url(), user)
        is_control = path.startswith("/_test/")
        fault = None if is_control else self.hub.faults.take(self.command, path)
        if fault and "drop_after_bytes" in fault:
            self.drop_connection(body, fault["drop_after_bytes"])
            self.record(path, 0, body.bytes_read, user)
            return
        close = False
        try:
            if fault:
                body.drain()  # answer only after the whole request is in, like a real server
                response = json_response({"error": "injected"}, fault["status"])
            else:
                response = self.run_endpoint(req)
            body.drain()
        except BodyError as e:
            # Malformed or cut-off body: answer if the client still listens, then hang up,
            # since where the next request would start is unknown.
            response, close = error_response(bad_request(str(e))), True
        self.finish_request(response, path, body.bytes_read, user, close=close, control=is_control)

    def run_endpoint(self, req: Request) -> Response:
        try:
            return self.hub.dispatch(req)
        except HubError as e:
            return error_response(e)
        except BodyError:
            raise
        except Exception:  # a bug here must not kill the connection thread silently
            traceback.print_exc(file=sys.stderr)
            return error_response(HubError(500, "internal error in the test hub"))

    def finish_request(self, response: Response, path: str, bytes_in: int, user: str | None,
                       close: bool = False, control: bool = False) -> None:
        try:
            self.send(response, close)
        except OSError:
            self.close_connection = True
        self.record(path, response.status, bytes_in, user, control=control)

    def send(self, response: Response, close: bool) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        length = response.file[2] if response.file else len(response.body)
        self.send_header("Content-Length", str(length))
        if close:
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.file is None:
            self.wfile.write(response.body)
            return
        file_path, offset, length = response.file
        with open(file_path, "rb") as f:
            # Zero-copy from the blob file to the socket: downloads of multi-GiB
            # benchmark models stay cheap. (wfile is unbuffered, headers are out.)
            sent = self.connection.sendfile(f, offset, length)
        if sent != length:
            raise OSError(f"blob {file_path} is shorter than recorded")

    def drop_connection(self, body: BodyReader, after: int) -> None:
        """Reads `after` bytes of body, then resets the connection without answering."""
        try:
            while body.bytes_read < after and body.read(min(IO_CHUNK, after - body.bytes_read)):
                pass
        except (BodyError, OSError):
            pass
        # Linger 0 makes close() send a RST: the client sees the connection die mid-request.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def base_url(self) -> str:
        """Where the client reached us, so the URLs we hand out (upload hrefs, repo and
        commit URLs) work for it. A Host without a port gets ours: nothing here is on 80."""
        address, port = self.server.server_address[:2]
        host = self.headers.get("Host") or address
        if not re.search(r":\d+$", host):
            host = f"{host}:{port}"
        return f"http://{host}"

    def record(self, path: str, status: int, bytes_in: int, user: str | None, control: bool = False) -> None:
        # One stderr line per request. The path is logged without its query (upload
        # hrefs carry a grant token there) and the Authorization header never is.
        sys.stderr.write(f"hub: {self.command} {path} -> {status or 'dropped'} "
                         f"({bytes_in} B in{', user ' + user if user else ''})\n")
        if not control:
            self.hub.log.add(self.command, path, status, bytes_in, user)

    def log_request(self, code="-", size="-"):
        pass  # record() logs each request once, after it is answered

    def log_message(self, format, *args):
        message = re.sub(r"\?\S*", "?...", format % args)  # never leak query tokens
        sys.stderr.write(f"hub: {self.address_string()} {message}\n")


class HubServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client connection must not block shutdown
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: Hub):
        super().__init__(address, HubHandler)
        self.hub = hub


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="the bound port is written here (atomically)")
    parser.add_argument("--data", type=Path, required=True, help="directory for blob contents")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:TOKEN",
                        help="bearer token TOKEN authenticates user NAME (repeatable)")
    parser.add_argument("--lfs-threshold", type=int, default=10 * MIB,
                        help="files at least this large are LFS at preupload (default 10 MiB)")
    parser.add_argument("--multipart-threshold", type=int, default=5 * GIB,
                        help="LFS objects larger than this upload in parts (default 5 GiB)")
    parser.add_argument("--chunk-size", type=int, default=512 * MIB,
                        help="part size of multipart uploads (default 512 MiB)")
    args = parser.parse_args(argv)
    if args.chunk_size < 1 or args.lfs_threshold < 1 or args.multipart_threshold < 0:
        parser.error("sizes must be positive")
    return args


def parse_users(specs: list[str]) -> dict[str, str]:
    users = {}
    for spec in specs:
        name, sep, token = spec.partition(":")
        if not sep or not name or not token:
            raise SystemExit(f"--user wants NAME:TOKEN, got {spec.split(':')[0]}:...")
        users[token] = name
    return users


def write_port_file(path: Path, port: int) -> None:
    # Write-then-rename, so a test polling for the file never reads half a number.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hub = Hub(Config(args.data, parse_users(args.user), args.lfs_threshold,
                     args.multipart_threshold, args.chunk_size))
    server = HubServer((args.host, args.port), hub)
    port = server.server_address[1]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # serve_forever runs in a thread so the main thread can take signals and then call
    # shutdown(), which would deadlock if called from the serving thread itself.
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()
    if args.port_file:
        write_port_file(args.port_file, port)
    sys.stderr.write(f"hub: listening on http://{args.host}:{port} (data in {args.data})\n")
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    sys.stderr.write("hub: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
