"""`reca-eval fetch`: checksums, resume, retries and the offline message, against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from reca_eval import fetch

BODY = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    # Per-server behaviour: "ok", "truncate_first" (first response cut short), "corrupt" (wrong bytes).
    mode = "ok"
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        if server.mode == "corrupt":
            data = bytes(len(data))
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.mode == "truncate_first" and len(server.requests) == 1:
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.timeout = 5
    httpd.files = {"bench/file.bin": BODY}
    httpd.mode = "ok"
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_download_verifies_checksum(server, tmp_path):
    dest = tmp_path / "bench" / "file.bin"
    digest = fetch.download_file(
        f"{_url(server)}/bench/file.bin", dest, sha256=SHA, size=len(BODY), backoff=0
    )
    assert digest == SHA
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "bench" / "file.bin.part").exists()


def test_truncated_first_response_is_resumed_with_range(server, tmp_path):
    server.mode = "truncate_first"
    dest = tmp_path / "file.bin"
    fetch.download_file(f"{_url(server)}/bench/file.bin", dest, sha256=SHA, backoff=0, timeout=5)
    assert dest.read_bytes() == BODY
    assert len(server.requests) == 2
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(BODY) // 3}-"  # resumed, not restarted


def test_part_file_resumes_with_range(server, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(BODY[:1000])
    fetch.download_file(f"{_url(server)}/bench/file.bin", dest, sha256=SHA, backoff=0)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/bench/file.bin", "bytes=1000-")]


def test_corrupt_body_is_retried_then_a_clear_error(server, tmp_path):
    server.mode = "corrupt"
    dest = tmp_path / "file.bin"
    with pytest.raises(fetch.FetchError, match="sha256 mismatch") as info:
        fetch.download_file(f"{_url(server)}/bench/file.bin", dest, sha256=SHA, retries=2, backoff=0)
    assert len(server.requests) == 3  # first try + two retries, each from scratch
    assert all(r[1] is None for r in server.requests)
    assert str(dest) in str(info.value)
    assert not dest.exists()


def test_offline_error_names_file_and_place(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = fetch.RemoteFile("geneval/evaluation_metadata.jsonl", "https://example.invalid/x", SHA)
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch_file(
            source, tmp_path, base_url=f"http://127.0.0.1:{port}", retries=1, backoff=0, log=lambda m: None
        )
    message = str(info.value)
    assert "offline" in message
    assert str(tmp_path / "geneval" / "evaluation_metadata.jsonl") in message
    assert "RECA_EVAL_DATA" in message


def test_fetch_benchmark_via_base_url_and_unpinned_checksum_is_printed(server, tmp_path, monkeypatch):
    server.files = {"x/a.txt": b"alpha\n", "x/b.txt": b"beta\n"}
    sources = [
        fetch.RemoteFile("x/a.txt", "https://example.invalid/a", hashlib.sha256(b"alpha\n").hexdigest(), 6),
        fetch.RemoteFile("x/b.txt", "https://example.invalid/b", None),
    ]
    monkeypatch.setattr(fetch, "benchmark_sources", lambda name: sources if name == "toy" else [])
    monkeypatch.setenv(fetch.BASE_URL_ENV, _url(server))
    lines: list[str] = []
    fetched = fetch.fetch_benchmark("toy", root=tmp_path, backoff=0, log=lines.append)
    assert [f.path.read_bytes() for f in fetched] == [b"alpha\n", b"beta\n"]
    assert any(hashlib.sha256(b"beta\n").hexdigest() in line and "pin" in line for line in lines)
    # A second run keeps the verified pinned copy and asks the server only for the unpinned one.
    server.requests.clear()
    fetch.fetch_benchmark("toy", root=tmp_path, backoff=0, log=lines.append)
    assert [r[0] for r in server.requests] == ["/x/b.txt"]


def test_tar_is_unpacked_after_verification(server, tmp_path, monkeypatch):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Benchmark/singleturn/animal/1.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    server.files = {"imgedit/Benchmark.tar": buffer.getvalue()}
    source = fetch.RemoteFile("imgedit/Benchmark.tar", "https://example.invalid/t", None, extract=True)
    fetch.fetch_file(source, tmp_path, base_url=_url(server), backoff=0, log=lambda m: None)
    assert (tmp_path / "imgedit/Benchmark/singleturn/animal/1.jpg").read_bytes() == b"abc"


def test_pinned_checksums_match_the_shared_copies():
    shared = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
    if not shared.exists():
        pytest.skip(f"{shared} absent: the official files are not on this machine")
    from reca_eval.core.records import sha256_file

    pinned = {
        s.relative: s.sha256
        for name in ("geneval", "geneval-long", "dpg")
        for s in fetch.benchmark_sources(name)
        if hasattr(s, "url")
    }
    assert (
        sha256_file(shared / "geneval/evaluation_metadata.jsonl")
        == pinned["geneval/evaluation_metadata.jsonl"]
    )
    assert (
        sha256_file(shared / "geneval/evaluation_metadata_long.jsonl")
        == pinned["geneval/evaluation_metadata_long.jsonl"]
    )
    assert sha256_file(shared / "dpgbench/prompts.json") == pinned["dpg/prompts.json"]
    assert sha256_file(shared / "geneval/object_names.txt") == pinned["geneval/object_names.txt"]


# --- Hugging Face Hub files: hf_hub_download at a pinned revision, then our sha256 check ------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """The two requests hf_hub_download makes of the Hub: HEAD (metadata) and GET of /<type>s/<repo>/resolve/<rev>/<file>."""

    def log_message(self, *args):
        pass

    def _reply(self, with_body: bool) -> None:
        server = self.server
        server.requests.append((self.command, self.path))
        prefix = f"/datasets/{server.repo}/resolve/"
        revision, _, filename = self.path.removeprefix(prefix).partition("/")
        data = server.files.get(filename)
        if not self.path.startswith(prefix) or revision not in (COMMIT, "main") or data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802
        self._reply(False)

    def do_GET(self):  # noqa: N802
        self._reply(True)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    httpd.repo, httpd.files, httpd.requests = "org/bench", {"data/file.bin": BODY}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _hub_source(**kw) -> fetch.HubFile:
    fields = {
        "relative": "bench/file.bin",
        "repo_id": "org/bench",
        "filename": "data/file.bin",
        "revision": COMMIT,
    }
    return fetch.HubFile(**{**fields, "sha256": SHA, "size": len(BODY), **kw})


def test_hub_file_comes_through_hf_hub_download_at_its_revision_and_is_verified(hub, tmp_path):
    logs = []
    got = fetch.fetch_hub_file(_hub_source(), tmp_path / "data", endpoint=_url(hub), log=logs.append)
    assert got.path.read_bytes() == BODY and got.sha256 == SHA and got.pinned and got.downloaded
    assert any(path == f"/datasets/org/bench/resolve/{COMMIT}/data/file.bin" for method, path in hub.requests)
    # nothing is written outside the data folder (not even huggingface_hub's cache), and nothing is
    # left beside the file; a second fetch keeps the verified copy
    assert not (tmp_path / "hf-cache").exists()
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == ["bench", "file.bin"]
    again = fetch.fetch_hub_file(_hub_source(), tmp_path / "data", endpoint=_url(hub), log=logs.append)
    assert not again.downloaded and not any("not pinned" in m for m in logs)


def test_hub_file_with_the_wrong_sha256_is_not_placed(hub, tmp_path):
    with pytest.raises(fetch.FetchError, match="sha256 mismatch"):
        fetch.fetch_hub_file(
            _hub_source(sha256="0" * 64), tmp_path / "data", endpoint=_url(hub), log=lambda m: None
        )
    assert not (tmp_path / "data" / "bench" / "file.bin").exists()


def test_hub_file_on_a_branch_is_fetched_but_said_to_be_unpinned(hub, tmp_path):
    logs = []
    got = fetch.fetch_hub_file(
        _hub_source(revision="main", sha256=None), tmp_path / "data", endpoint=_url(hub), log=logs.append
    )
    assert got.path.read_bytes() == BODY and not got.pinned
    assert any(f"sha256={SHA}" in m for m in logs)
    assert any("not pinned yet: revision 'main' is a branch, not a commit; no sha256" in m for m in logs)


def test_unreachable_hub_file_names_the_hf_download_command_and_the_place(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    waits = []
    monkeypatch.setattr(hub_http.time, "sleep", waits.append)  # the Hub client's own retries, not waited out
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch_hub_file(
            _hub_source(), tmp_path / "data", endpoint=f"http://127.0.0.1:{port}", log=lambda m: None
        )
    message = str(info.value)
    assert waits  # the Hub client retried before giving up
    assert f"hf download org/bench data/file.bin --repo-type dataset --revision {COMMIT}" in message
    assert str(tmp_path / "data" / "bench" / "file.bin") in message


def test_pinning_of_source_entries_and_the_list_command():
    assert fetch.pinning({"file": "a", "url": "https://x/a", "sha256": "ab" * 32}) == ""
    assert fetch.pinning({"file": "a", "url": "https://x/a", "sha256": None}) == "no sha256"
    assert fetch.pinning({"hub": "o/r", "path": "f", "revision": COMMIT, "sha256": "ab" * 32}) == ""
    assert "branch" in fetch.pinning({"hub": "o/r", "path": "f", "revision": "main", "sha256": "ab" * 32})
    assert fetch.pinning({"snapshot": "d", "repo": "o/r", "revision": COMMIT}) == ""
    from typer.testing import CliRunner

    from reca_eval.cli import app

    listed = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    assert (
        "imgedit: imgedit/Benchmark.tar (revision 'main' is a branch, not a commit; no sha256)"
        in listed.output
    )
    shown = CliRunner().invoke(app, ["list", "imgedit"], env={"COLUMNS": "200"})
    assert "hf://datasets/sysuyy/ImgEdit@main/Benchmark.tar (NOT PINNED yet" in shown.output
    assert isinstance(fetch.benchmark_sources("imgedit")[-1], fetch.HubFile)


def test_a_tar_member_leaving_the_folder_is_refused_naming_the_archive(server, tmp_path):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    server.files = {"imgedit/Benchmark.tar": buffer.getvalue()}
    source = fetch.RemoteFile("imgedit/Benchmark.tar", "https://example.invalid/t", None, extract=True)
    with pytest.raises(fetch.FetchError, match=r"Benchmark\.tar: not unpacked"):
        fetch.fetch_file(source, tmp_path / "data", base_url=_url(server), backoff=0, log=lambda m: None)
    assert not (tmp_path / "escape.txt").exists()
