#!/usr/bin/env python3
"""Proves that hub_server.py speaks the Hugging Face Hub protocol.

It starts the server on a temp dir and drives it with the official client,
`huggingface_hub` (2.4.0, from the repo's .venv), so that every request shape and
every answer the client parses is the real client's, not ours. Small thresholds
(LFS at 1000 bytes, multipart above 300 kB in 100 kB parts) make small fixtures
exercise the LFS basic and multipart transfers. A few checks use raw stdlib HTTP
where the client cannot produce the request we need (a commit pointing at an LFS
object that was never uploaded, a chunked upload, a mismatching upload).

Run:  cd /work/main && .venv/bin/python tests/hub/check_hub_server.py
Prints one line per check and ends with "N passed, M failed"; exits 1 on failure.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER = HERE / "hub_server.py"
REPO = "alice/m"
ALICE, BOB = "tok-alice", "tok-bob"
HEX40 = re.compile(r"^[0-9a-f]{40}$")


# --------------------------------------------------------------------------- server process


def start_server(workdir: Path) -> tuple[subprocess.Popen, int]:
    port_file = workdir / "port"
    log = open(workdir / "server.log", "wb")
    # -S: no site-packages, so the server provably needs nothing but the stdlib.
    proc = subprocess.Popen(
        [sys.executable, "-S", str(SERVER), "--port", "0", "--port-file", str(port_file),
         "--data", str(workdir / "data"), "--user", f"alice:{ALICE}", "--user", f"bob:{BOB}",
         "--lfs-threshold", "1000", "--multipart-threshold", "300000", "--chunk-size", "100000"],
        stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start; see {workdir / 'server.log'}")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


# --------------------------------------------------------------------------- raw HTTP helpers


class Raw:
    """Stdlib HTTP to the server, for the test-control API and hand-made requests."""

    def __init__(self, base: str):
        self.base = base

    def call(self, method: str, path: str, body=None, token: str | None = None,
             content_type: str = "application/json") -> tuple[int, dict, bytes]:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method: str, path: str, body=None, token: str | None = None):
        status, _, raw = self.call(method, path, body, token)
        assert status == 200, f"{method} {path} -> {status} {raw[:200]!r}"
        return json.loads(raw)

    def log(self) -> list[dict]:
        return self.json("GET", "/_test/log")

    def clear_log(self) -> None:
        self.json("POST", "/_test/log/clear")

    def faults(self, rules: list[dict]) -> None:
        self.json("POST", "/_test/faults", {"rules": rules})

    def head(self, repo: str = REPO) -> str:
        return self.json("GET", "/_test/repos")[repo]["head"]


def ndjson(*items: dict) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below root (huggingface_hub's .cache folder excepted), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(root).parts}


# --------------------------------------------------------------------------- the checks


class Checks:
    def __init__(self, workdir: Path, raw: Raw):
        from huggingface_hub import HfApi

        self.work = workdir
        self.raw = raw
        self.api = HfApi(token=ALICE)
        self.anon = HfApi(token=False)
        self.fixture = workdir / "fixture"
        self.commit1 = ""
        self.passed = self.failed = 0

    def run(self, name: str, fn) -> None:
        try:
            detail = fn()
        except Exception as e:  # a failed check must not stop the others
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}".splitlines()[0])
            traceback.print_exc(limit=3, file=sys.stderr)
        else:
            self.passed += 1
            print(f"ok   {name}" + (f": {detail}" if detail else ""))
        sys.stdout.flush()

    def write_fixture(self) -> dict[str, bytes]:
        rnd = os.urandom
        files = {
            "hello.txt": b"hello from the test hub\n",
            "nested/deeper/config.json": b'{"layers": 2}\n',
            "weights.bin": rnd(5000),  # LFS: pattern, NUL bytes and size
            "notes.txt": b"plain text, but past the LFS threshold\n" * 80,  # LFS by size only
            "big.safetensors": rnd(700_000),  # LFS multipart: 7 parts of 100 kB
        }
        for path, data in files.items():
            (self.fixture / path).parent.mkdir(parents=True, exist_ok=True)
            (self.fixture / path).write_bytes(data)
        return files

    # 1
    def create_repo_twice(self):
        url = self.api.create_repo(REPO, private=True, exist_ok=True)
        again = self.api.create_repo(REPO, private=True, exist_ok=True)
        assert url.repo_id == again.repo_id == REPO, (url, again)
        state = self.raw.json("GET", "/_test/repos")[REPO]
        assert state["private"] is True and len(state["commits"]) == 1, state
        statuses = [e["status"] for e in self.raw.log() if e["path"] == "/api/repos/create"]
        assert statuses == [200, 409], statuses
        return f"{url} (second call answered 409, taken as exists)"

    # 2
    def upload_folder(self):
        self.files = self.write_fixture()
        self.raw.clear_log()
        info = self.api.upload_folder(folder_path=self.fixture, repo_id=REPO, commit_message="upload fixtures")
        self.commit1 = info.oid
        assert HEX40.match(info.oid), info.oid
        refs = self.api.list_repo_refs(REPO)
        assert [(b.name, b.target_commit) for b in refs.branches] == [("main", info.oid)], refs
        return f"commit {info.oid} = refs/heads/main"

    def lfs_transfers_used(self):
        log = self.raw.log()

        def count(method, pattern, status=200):
            return sum(1 for e in log if e["method"] == method and re.search(pattern, e["path"])
                       and e["status"] == status)

        basic = count("PUT", r"^/_lfs/alice/m/[0-9a-f]{64}$")
        parts = count("PUT", r"^/_lfs/alice/m/[0-9a-f]{64}/part/\d+$")
        completes = count("POST", r"/complete$")
        verifies = count("POST", r"/verify$")
        assert (basic, parts, completes, verifies) == (2, 7, 1, 3), (basic, parts, completes, verifies)
        assert count("POST", r"^/alice/m\.git/info/lfs/objects/batch$") == 1
        assert count("POST", r"^/api/models/alice/m/commit/main$") == 1
        return "2 basic PUTs, 7 part PUTs + completion, 3 verifies, 1 commit"

    def git_ids_are_real(self):
        tree = {f.path: f for f in self.api.list_repo_tree(REPO, revision=self.commit1, recursive=True)}
        hello = self.files["hello.txt"]
        assert tree["hello.txt"].blob_id == git_blob_id(hello)
        weights = self.files["weights.bin"]
        assert tree["weights.bin"].blob_id == git_blob_id(lfs_pointer(weights))
        assert tree["weights.bin"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
        assert tree["weights.bin"].size == len(weights)
        # A directory's id is the sha1 of its git tree object.
        config = self.files["nested/deeper/config.json"]
        entry = b"100644 config.json\0" + bytes.fromhex(git_blob_id(config))
        assert tree["nested/deeper"].tree_id == hashlib.sha1(b"tree %d\0" % len(entry) + entry).hexdigest()
        return "blob ids (regular and LFS pointer) and a tree id recomputed with hashlib"

    def unchanged_upload_is_skipped(self):
        before = self.raw.head()
        self.raw.clear_log()
        info = self.api.upload_folder(folder_path=self.fixture, repo_id=REPO, commit_message="same again")
        assert info.oid == before == self.raw.head(), (info.oid, before)
        puts = [e for e in self.raw.log() if e["method"] == "PUT" or "/commit/" in e["path"]]
        assert puts == [], puts
        return "preupload oids let the client skip every file: no upload, no commit"

    # 3
    def snapshot_download(self):
        from huggingface_hub import snapshot_download

        target = self.work / "snapshot"
        snapshot_download(REPO, revision=self.commit1, token=ALICE, local_dir=target)
        got = files_under(target)
        assert ".gitattributes" in got and b"*.safetensors filter=lfs" in got[".gitattributes"]
        del got[".gitattributes"]
        assert got.keys() == self.files.keys(), sorted(got)
        for path, data in self.files.items():
            assert got[path] == data, f"{path} differs"
        return f"{len(self.files)} files byte-identical, plus .gitattributes"

    # 4
    def model_info_sizes(self):
        info = self.api.model_info(REPO, revision=self.commit1, files_metadata=True)
        sizes = {s.rfilename: s.size for s in info.siblings}
        local = {p: len(d) for p, d in files_under(self.work / "snapshot").items()}
        assert sizes == local, (sizes, local)
        assert info.sha == self.commit1 and info.private is True
        lfs = {s.rfilename for s in info.siblings if s.lfs}
        assert lfs == {"weights.bin", "notes.txt", "big.safetensors"}, lfs
        return f"sizes sum to {sum(sizes.values())} bytes, as local"

    # 5
    def private_is_hidden(self):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RepositoryNotFoundError

        for attempt in (lambda: self.anon.model_info(REPO),
                        lambda: hf_hub_download(REPO, "hello.txt", token=False, local_dir=self.work / "anon0")):
            try:
                attempt()
            except RepositoryNotFoundError:
                continue
            raise AssertionError("anonymous read of a private repo succeeded")
        return "anonymous model_info and hf_hub_download raise RepositoryNotFoundError"

    def bad_tokens_rejected(self):
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        def status_of(call):
            try:
                call()
            except HfHubHTTPError as e:
                return e.response.status_code
            raise AssertionError("call succeeded")

        wrong = status_of(lambda: HfApi(token="not-a-token").upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO))
        other_user = status_of(lambda: HfApi(token=BOB).upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO))
        foreign_ns = status_of(lambda: HfApi(token=BOB).create_repo("alice/bobs"))
        assert (wrong, other_user, foreign_ns) == (401, 403, 403), (wrong, other_user, foreign_ns)
        assert HfApi(token=BOB).whoami()["name"] == "bob"
        return "wrong token 401, other user's token 403 (upload and create)"

    def make_public(self):
        from huggingface_hub import snapshot_download

        self.api.update_repo_settings(REPO, private=False)
        assert self.anon.model_info(REPO).private is False
        target = self.work / "anon"
        snapshot_download(REPO, token=False, local_dir=target)
        got = files_under(target)
        assert all(got[p] == d for p, d in self.files.items()), "anonymous download differs"
        return "update_repo_settings(private=False), then anonymous snapshot_download is identical"

    # 6
    def commits_are_immutable(self):
        from huggingface_hub import hf_hub_download

        info = self.api.upload_file(path_or_fileobj=b"changed\n", path_in_repo="hello.txt", repo_id=REPO,
                                    commit_message="change hello", commit_description="second version")
        old = hf_hub_download(REPO, "hello.txt", revision=self.commit1, token=ALICE, local_dir=self.work / "old")
        assert Path(old).read_bytes() == self.files["hello.txt"]
        new = hf_hub_download(REPO, "hello.txt", token=ALICE, local_dir=self.work / "new")
        assert Path(new).read_bytes() == b"changed\n"
        commits = self.api.list_repo_commits(REPO)
        ids = [c.commit_id for c in commits]
        assert ids[:2] == [info.oid, self.commit1] and len(ids) == 3, ids
        assert commits[0].title == "change hello" and commits[0].authors == ["alice"]
        return f"old commit still serves old bytes; commits newest first: {[i[:7] for i in ids]}"

    # 7
    def status_faults(self):
        from huggingface_hub.errors import HfHubHTTPError

        self.raw.clear_log()
        self.raw.faults([{"method": "POST", "path_regex": "/commit/", "status": 500, "count": 2}])
        outcomes = []
        for i in range(3):
            try:
                self.api.upload_file(path_or_fileobj=b"try %d\n" % i, path_in_repo="retry.txt", repo_id=REPO)
                outcomes.append("ok")
            except HfHubHTTPError as e:
                outcomes.append(e.response.status_code)
        # huggingface_hub does not retry the commit POST itself: each injected 500 surfaces.
        assert outcomes == [500, 500, "ok"], outcomes
        commit_statuses = [e["status"] for e in self.raw.log() if "/commit/" in e["path"]]
        assert commit_statuses == [500, 500, 200], commit_statuses
        assert self.raw.json("GET", "/_test/faults")["rules"] == []
        return "two injected 500s surfaced as HfHubHTTPError, third commit went through"

    def dropped_connection(self):
        self.raw.clear_log()
        self.raw.faults([{"method": "PUT", "path_regex": "^/_lfs/", "drop_after_bytes": 1000, "count": 1}])
        host, port = self.raw.base.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("PUT", f"/_lfs/{REPO}/{'0' * 64}?t=x", body=b"\0" * 50_000)
            conn.getresponse().read()
            raise AssertionError("the server answered instead of dropping the connection")
        except (ConnectionError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        entry = self.raw.log()[-1]
        assert (entry["status"], entry["bytes_in"]) == (0, 1000), entry
        return "connection reset after 1000 body bytes, no answer (logged as status 0)"

    def client_retries_dropped_upload(self):
        from huggingface_hub import hf_hub_download

        data = os.urandom(5000)
        self.raw.clear_log()
        self.raw.faults([{"method": "PUT", "path_regex": "^/_lfs/", "drop_after_bytes": 1000, "count": 1}])
        self.api.upload_file(path_or_fileobj=data, path_in_repo="retried.bin", repo_id=REPO)
        puts = [e["status"] for e in self.raw.log() if e["method"] == "PUT"]
        assert puts == [0, 200], puts
        got = hf_hub_download(REPO, "retried.bin", token=ALICE, local_dir=self.work / "retried")
        assert Path(got).read_bytes() == data
        return "first LFS PUT dropped, huggingface_hub's retry uploaded it, content intact"

    # 8
    def commit_of_missing_lfs_object(self):
        head = self.raw.head()
        body = ndjson({"key": "header", "value": {"summary": "dangling pointer"}},
                      {"key": "lfsFile", "value": {"path": "ghost.bin", "algo": "sha256",
                                                   "oid": hashlib.sha256(b"never uploaded").hexdigest(), "size": 14}})
        status, _, raw = self.raw.call("POST", f"/api/models/{REPO}/commit/main", body, ALICE, "application/x-ndjson")
        assert status == 422, (status, raw)
        assert self.raw.head() == head, "a refused commit moved the branch"
        return f"422: {json.loads(raw)['error'][:60]}..."

    # protocol details beyond the client's happy path
    def chunked_upload_on_keepalive(self):
        data = os.urandom(3000)
        oid = hashlib.sha256(data).hexdigest()
        host, port = self.raw.base.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        auth = {"Authorization": f"Bearer {ALICE}"}
        batch = {"operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
                 "objects": [{"oid": oid, "size": len(data)}], "ref": {"name": "main"}}
        conn.request("POST", f"/{REPO}.git/info/lfs/objects/batch", json.dumps(batch),
                     {**auth, "Content-Type": "application/vnd.git-lfs+json", "Accept": "application/vnd.git-lfs+json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.getheader("Content-Type") == "application/vnd.git-lfs+json" and answer["transfer"] == "basic"
        actions = answer["objects"][0]["actions"]
        sock = conn.sock
        upload_path = actions["upload"]["href"].split(self.raw.base, 1)[1]
        conn.request("PUT", upload_path, body=iter([data[:1234], data[1234:]]), encode_chunked=True)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status
        verify_path = actions["verify"]["href"].split(self.raw.base, 1)[1]
        conn.request("POST", verify_path, json.dumps({"oid": oid, "size": len(data)}), auth)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and conn.sock is sock, "verify failed or the connection was not kept alive"
        conn.close()
        body = ndjson({"key": "header", "value": {"summary": "raw lfs commit", "parentCommit": self.raw.head()}},
                      {"key": "lfsFile", "value": {"path": "raw/chunked.bin", "algo": "sha256", "oid": oid,
                                                   "size": len(data)}})
        status, _, raw = self.raw.call("POST", f"/api/models/{REPO}/commit/main", body, ALICE, "application/x-ndjson")
        assert status == 200 and json.loads(raw)["commitOid"] == self.raw.head(), (status, raw)
        again = self.raw.json("POST", f"/{REPO}.git/info/lfs/objects/batch", batch, ALICE)
        assert "actions" not in again["objects"][0], "a stored object was asked for again"
        return "batch, chunked PUT and verify on one kept-alive connection; stored object gets no actions"

    def corrupt_upload_refused(self):
        data = os.urandom(2000)
        oid = hashlib.sha256(data).hexdigest()
        batch = {"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
                 "objects": [{"oid": oid, "size": len(data)}]}
        actions = self.raw.json("POST", f"/{REPO}.git/info/lfs/objects/batch", batch, ALICE)["objects"][0]["actions"]
        upload = actions["upload"]["href"].split(self.raw.base, 1)[1]
        status, _, _ = self.raw.call("PUT", upload, data[:-1] + b"!", content_type="application/octet-stream")
        assert status == 400, status
        status, _, _ = self.raw.call("POST", actions["verify"]["href"].split(self.raw.base, 1)[1],
                                     {"oid": oid, "size": len(data)})
        assert status == 404, status
        return "PUT with the wrong sha256 gets 400, and verify then says 404"

    def resolve_headers_and_ranges(self):
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        data = self.files["big.safetensors"]
        meta = get_hf_file_metadata(hf_hub_url(REPO, "big.safetensors", revision=self.commit1), token=ALICE)
        assert (meta.commit_hash, meta.etag, meta.size) == (self.commit1, hashlib.sha256(data).hexdigest(), len(data))
        status, headers, body = self.raw.call("GET", f"/{REPO}/resolve/{self.commit1}/big.safetensors", token=ALICE)
        assert status == 200 and body == data
        req = urllib.request.Request(f"{self.raw.base}/{REPO}/resolve/main/big.safetensors",
                                     headers={"Range": "bytes=1000-1999"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and resp.read() == data[1000:2000]
            assert resp.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        status, headers, _ = self.raw.call("GET", f"/{REPO}/resolve/main/nope.txt")
        assert status == 404 and headers.get("X-Error-Code") == "EntryNotFound"
        status, headers, _ = self.raw.call("GET", f"/{REPO}/resolve/{'f' * 40}/hello.txt")
        assert status == 404 and headers.get("X-Error-Code") == "RevisionNotFound"
        return "HEAD metadata (X-Repo-Commit, linked etag/size), full GET, 206 range, Entry/RevisionNotFound"

    def stale_parent_refused(self):
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self.api.create_commit(REPO, [CommitOperationAdd("stale.txt", b"stale")], commit_message="stale",
                                   parent_commit=self.commit1)
        except HfHubHTTPError as e:
            assert e.response.status_code == 412, e.response.status_code
            return "create_commit(parent_commit=<old>) gets 412"
        raise AssertionError("a commit on a stale parent was accepted")

    def dataset_round_trip(self):
        """What the trainer relies on for `trainer.dataset_repo`: a dataset repo with Parquet
        shards, uploaded and listed and downloaded by the official client at a revision."""
        ds = "alice/corpus"
        url = self.api.create_repo(ds, repo_type="dataset", private=True, exist_ok=True)
        assert url.repo_type == "dataset" and url.repo_id == ds, url
        folder = self.work / "dataset"
        files = {"data/train-00000-of-00002.parquet": os.urandom(3000),
                 "data/train-00001-of-00002.parquet": os.urandom(2000), "README.md": b"# corpus\n"}
        for path, data in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
        info = self.api.upload_folder(folder_path=folder, repo_id=ds, repo_type="dataset")
        names = sorted(s.rfilename for s in self.api.dataset_info(ds, revision=info.oid).siblings)
        assert names == sorted([".gitattributes", *files]), names
        local = self.api.snapshot_download(ds, repo_type="dataset", revision=info.oid,
                                           local_dir=self.work / "dataset-dl")
        got = {p: d for p, d in files_under(Path(local)).items() if not p.startswith(".")}
        assert got == files, sorted(got)
        try:
            self.api.model_info(ds)
        except Exception:
            pass
        else:
            raise AssertionError("the dataset answered as a model")
        return f"dataset {ds} at {info.oid[:12]}: listed and downloaded byte-identical; not a model"

    def delete_repo(self):
        from huggingface_hub.errors import RepositoryNotFoundError

        self.api.create_repo("alice/scratch")
        self.api.delete_repo("alice/scratch")
        try:
            self.api.model_info("alice/scratch")
        except RepositoryNotFoundError:
            self.api.delete_repo("alice/scratch", missing_ok=True)
            return "deleted repo is gone; delete_repo(missing_ok=True) tolerates it"
        raise AssertionError("deleted repo still answers")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hub-check-"))
    proc, port = start_server(workdir)
    base = f"http://127.0.0.1:{port}"
    # The client reads these at import time, so set them before importing it.
    os.environ.update(HF_ENDPOINT=base, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                      HF_HOME=str(workdir / "hf_home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        os.environ.pop(var, None)
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry warnings would print upload URLs
    checks = Checks(workdir, Raw(base))
    try:
        for name, fn in [
            ("1 create_repo(private, exist_ok) twice", checks.create_repo_twice),
            ("2 upload_folder: commit id is the branch head", checks.upload_folder),
            ("2 upload_folder: LFS basic + multipart transfers", checks.lfs_transfers_used),
            ("2 git ids are real", checks.git_ids_are_real),
            ("2 re-upload of unchanged files", checks.unchanged_upload_is_skipped),
            ("3 snapshot_download at the commit", checks.snapshot_download),
            ("4 model_info(files_metadata=True) sizes", checks.model_info_sizes),
            ("5 private repo hidden from anonymous reads", checks.private_is_hidden),
            ("5 bad tokens rejected on writes", checks.bad_tokens_rejected),
            ("5 made public, anonymous download works", checks.make_public),
            ("6 old commits are immutable", checks.commits_are_immutable),
            ("7 injected 500s on /commit/", checks.status_faults),
            ("7 injected connection drop", checks.dropped_connection),
            ("7 dropped LFS upload, client retry succeeds", checks.client_retries_dropped_upload),
            ("8 commit of a never-uploaded LFS object", checks.commit_of_missing_lfs_object),
            ("+ chunked upload, keep-alive, dedup", checks.chunked_upload_on_keepalive),
            ("+ corrupt LFS upload refused", checks.corrupt_upload_refused),
            ("+ resolve headers, ranges, not-found codes", checks.resolve_headers_and_ranges),
            ("+ stale parentCommit refused", checks.stale_parent_refused),
            ("+ delete_repo", checks.delete_repo),
            ("+ dataset repo: upload, dataset_info, snapshot_download", checks.dataset_round_trip),
        ]:
            checks.run(name, fn)
    finally:
        code = stop_server(proc)
    def exited_cleanly():
        assert code == 0, f"exit code {code}"

    checks.run("+ server exits 0 on SIGTERM", exited_cleanly)
    if checks.failed:
        print(f"server log: {workdir / 'server.log'}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"({time.monotonic() - started:.1f} s)")
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
