"""`reca-eval fetch NAME`: download a benchmark's official files into the data folder, verified.

Every file has a pinned URL (a git commit or a Hugging Face revision, never a branch) in its
benchmark's ``benchmark.yaml`` and, where it
could be verified, a sha256 and size. A download goes to ``<file>.part`` and resumes with an HTTP
``Range`` request after a dropped connection; a body that ends short of its announced size is
resumed, a body whose sha256 differs is thrown away and fetched again, and after ``retries`` tries the
error says what went wrong. A checksum that is still ``None`` (no network where this table was
written) is printed after the download, so a maintainer can pin it.

Offline, the error names each file, where to place it, and where it comes from: the harness reads
files from the data folder only (``core.paths.data_dir()``, ``$RECA_EVAL_DATA``), so a copy
placed there by hand works the same as a fetched one.

Files on the Hugging Face Hub (``hub:`` sources) come through ``huggingface_hub.hf_hub_download`` at
the source's revision (its cache, resume and retries), then pass the same sha256 and size checks
before they are placed in the data folder. A source is pinned when its revision is a commit (40 hex
digits) and its sha256 is known; ``pinning`` says what is missing, and ``reca-eval list`` shows it.

Tests point every download at a loopback server with ``base_url`` (or ``$RECA_EVAL_FETCH_BASE_URL``):
the file's URL becomes ``<base_url>/<relative path>``; Hub files take the Hub client's ``endpoint``
(``$HF_ENDPOINT``).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reca_eval.core.paths import DATA_ENV, data_dir
from reca_eval.core.records import atomic_write_text, sha256_file

BASE_URL_ENV = "RECA_EVAL_FETCH_BASE_URL"
CHUNK = 1 << 16
USER_AGENT = "reca-eval-fetch/1"


@dataclass(frozen=True)
class RemoteFile:
    """One official file: where it lands under the data folder, where it comes from, what it must hash to."""

    relative: str  # path under the data folder, e.g. "geneval/evaluation_metadata.jsonl"
    url: str
    sha256: str | None  # None: pin on first verified download (fetch prints the computed value)
    size: int | None = None
    extract: bool = False  # a tar archive to unpack beside itself (after its checksum passed)


@dataclass(frozen=True)
class HubSnapshot:
    """A Hugging Face dataset at a pinned revision, converted by ``convert`` into our fetched layout."""

    relative: str  # folder under the data folder that receives the snapshot
    repo_id: str
    revision: str
    convert: Callable[[Path, Path], int]  # (snapshot folder, benchmark folder) -> items written


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repository at a revision, verified by sha256 like a RemoteFile."""

    relative: str  # path under the data folder
    repo_id: str
    filename: str  # path inside the repository
    revision: str  # a commit (pinned) or, until one is recorded, a branch
    repo_type: str = "dataset"
    sha256: str | None = None
    size: int | None = None
    extract: bool = False

    @property
    def url(self) -> str:
        kind = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"hf://{kind}{self.repo_id}@{self.revision}/{self.filename}"


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def pinning(entry: dict) -> str:
    """How a benchmark.yaml source entry is pinned: "" when fully (a commit and a sha256), else what is
    missing, in words for ``reca-eval list``."""
    missing = []
    revision = str(entry.get("revision", ""))
    if ("hub" in entry or "snapshot" in entry) and not _COMMIT.match(revision):
        missing.append(f"revision {revision or '?'!r} is a branch, not a commit")
    if "url" in entry and "/resolve/main/" in str(entry["url"]):
        missing.append("URL on a branch")
    if "snapshot" not in entry and not entry.get("sha256"):
        missing.append("no sha256")
    return "; ".join(missing)


def describe_source(entry: dict) -> tuple[str, str]:
    """(what lands in the data folder, "address (pinning)") of a source entry, for ``reca-eval list``."""
    name = str(entry.get("file") or entry.get("snapshot") or "?")
    kind = "" if entry.get("repo_type") == "model" else f"{entry.get('repo_type', 'dataset')}s/"
    if "hub" in entry:
        address = f"hf://{kind}{entry['hub']}@{entry.get('revision', '?')}/{entry.get('path', '?')}"
    elif "snapshot" in entry:
        address = f"hf://{kind}{entry.get('repo', '?')}@{entry.get('revision', '?')}"
    else:
        address = str(entry.get("url", "no url"))
    if why := pinning(entry):
        return name, f"{address} (NOT PINNED yet: {why})"
    pinned = f"sha256 {entry['sha256'][:12]}…" if entry.get("sha256") else "revision pinned"
    return name, f"{address} ({pinned})"


def _source(entry: dict, where: str) -> RemoteFile | HubSnapshot | HubFile:
    """One entry of a benchmark.yaml's ``sources`` list."""
    import importlib

    try:
        if "snapshot" in entry:
            module, _, attr = entry["convert"].partition(":")
            convert = getattr(importlib.import_module(module), attr)
            return HubSnapshot(entry["snapshot"], entry["repo"], str(entry["revision"]), convert)
        if "hub" in entry:
            return HubFile(
                entry["file"],
                entry["hub"],
                entry["path"],
                str(entry["revision"]),
                entry.get("repo_type", "dataset"),
                entry.get("sha256"),
                entry.get("size"),
                bool(entry.get("extract", False)),
            )
        return RemoteFile(
            entry["file"],
            entry["url"],
            entry.get("sha256"),
            entry.get("size"),
            bool(entry.get("extract", False)),
        )
    except (KeyError, ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{where}: bad source entry {entry!r} ({exc!r})") from None


def benchmark_sources(name: str) -> list[RemoteFile | HubSnapshot | HubFile]:
    """The pinned sources a benchmark's benchmark.yaml declares (a URL at a commit, a sha256, a size)."""
    from reca_eval import registry

    fetchable = {n: s for n, s in registry.specs().items() if s.sources}
    if name not in fetchable:
        raise KeyError(f"nothing to fetch for {name!r}; fetchable: {', '.join(sorted(fetchable))}")
    spec = fetchable[name]
    return [_source(entry, str(spec.folder / "benchmark.yaml")) for entry in spec.sources]


class FetchError(RuntimeError):
    """A download that could not be completed and verified; the message says what to place where."""


@dataclass
class FetchedFile:
    path: Path
    sha256: str
    pinned: bool  # False: the table has no checksum yet (print it so a maintainer can pin it)
    downloaded: bool  # False: an already-present, verified copy was kept


def _placement_hint(dest: Path, source: str) -> str:
    return (
        f"place the file at {dest} by hand (source: {source}), or set ${DATA_ENV} to a folder that holds it, "
        "then run the command again"
    )


def _expected_total(response: http.client.HTTPResponse, offset: int) -> int | None:
    """The full file's size from Content-Range (206) or Content-Length (200), when announced."""
    content_range = response.headers.get("Content-Range")
    if response.status == 206 and content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return int(length) + (offset if response.status == 206 else 0)


def _retry_after(exc: urllib.error.HTTPError, fallback: float) -> float:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else fallback
    except ValueError:
        return fallback


def _download_once(url: str, part: Path, timeout: float) -> int | None:
    """Append to ``part`` from its current size; returns the announced total size (None if unknown).

    Raises on connection trouble; a short body is not an error here (the caller compares sizes).
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part is complete (or too long)
            return offset
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored Range and sends the whole file: start over
        total = _expected_total(response, offset)
        with open(part, "ab" if offset else "wb") as fh:
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    fh.write(chunk)
            except (TimeoutError, http.client.IncompleteRead, ConnectionError):
                pass  # keep what arrived; the size check below resumes from here
    return total


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    log: Callable[[str], None] = lambda _m: None,
) -> str:
    """Download ``url`` to ``dest`` via ``dest.part`` with resume, size and sha256 checks; returns the sha256.

    A truncated body is resumed with a Range request; a checksum mismatch discards the part and
    starts over; connection errors, 429 and 5xx are retried after ``backoff * 2**attempt`` seconds
    (or the server's Retry-After). After ``retries`` retries: :class:`FetchError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    problems: list[str] = []
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            total = _download_once(url, part, timeout)
        except urllib.error.HTTPError as exc:
            problems.append(f"HTTP {exc.code} {exc.reason}")
            if exc.code in (429, 500, 502, 503, 504):
                time.sleep(_retry_after(exc, 0.0))
                continue
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}; {_placement_hint(dest, url)}") from exc
        except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            problems.append(f"connection failed ({reason})")
            log(f"  {dest.name}: connection failed ({reason}); retrying")
            continue
        have = part.stat().st_size if part.exists() else 0
        want = size if size is not None else total
        if want is not None and have < want:
            problems.append(f"truncated ({have} of {want} bytes)")
            log(f"  {dest.name}: got {have} of {want} bytes; resuming")
            continue
        if want is not None and have > want:
            problems.append(f"too long ({have} bytes, expected {want})")
            part.unlink(missing_ok=True)
            continue
        digest = sha256_file(part)
        if sha256 is not None and digest != sha256:
            problems.append(f"sha256 mismatch (got {digest}, expected {sha256})")
            log(f"  {dest.name}: sha256 mismatch; downloading again")
            part.unlink(missing_ok=True)
            continue
        os.replace(part, dest)
        return digest
    offline = problems and all(p.startswith("connection failed") for p in problems)
    what = "could not be reached (offline?)" if offline else "failed verification"
    raise FetchError(
        f"{url} {what} after {retries + 1} tries: {'; '.join(problems[-3:])}. {_placement_hint(dest, url)}"
    )


def _safe_extract(archive: Path, into: Path) -> int:
    """Unpack a tar archive with the stdlib's 'data' filter (no absolute paths, links out, devices)."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            tar.extractall(into, filter="data")
    except (tarfile.TarError, EOFError) as exc:  # FilterError (a member leaving the folder), ReadError, ...
        raise FetchError(f"{archive}: not unpacked: {type(exc).__name__}: {exc}") from exc
    return len(members)


def _resolve_url(source: RemoteFile, base_url: str | None) -> str:
    return f"{base_url.rstrip('/')}/{source.relative}" if base_url else source.url


def fetch_file(
    source: RemoteFile,
    root: Path,
    *,
    base_url: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> FetchedFile:
    dest = Path(root) / source.relative
    if dest.exists() and source.sha256 is not None and sha256_file(dest) == source.sha256:
        log(f"ok {dest} (already present, sha256 verified)")
        digest, downloaded = source.sha256, False
    else:
        if dest.exists():
            log(f"{dest}: present but unverified or different; downloading again")
        url = _resolve_url(source, base_url)
        log(f"fetching {url}")
        try:
            digest = download_file(
                url,
                dest,
                sha256=source.sha256,
                size=source.size,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                log=log,
            )
        except FetchError as exc:
            if base_url is None:
                raise
            raise FetchError(f"{exc} (official source: {source.url})") from exc
        downloaded = True
        if source.sha256 is None:
            log(f"  unpinned: {source.relative} sha256={digest} (pin on first verified download)")
        else:
            log(f"ok {dest} (sha256 verified)")
    _extract_once(source.extract, dest, digest, downloaded, log)
    return FetchedFile(dest, digest, source.sha256 is not None, downloaded)


def fetch_hub_file(
    source: HubFile, root: Path, *, endpoint: str | None = None, log: Callable[[str], None] = print
) -> FetchedFile:
    """A Hub file at its revision through ``hf_hub_download`` (into the Hub cache, resumable), then the
    sha256 and size checks, then a copy into the data folder; a file that fails them is not placed."""
    dest = Path(root) / source.relative
    if dest.exists() and source.sha256 is not None and sha256_file(dest) == source.sha256:
        log(f"ok {dest} (already present, sha256 verified)")
        digest, downloaded = source.sha256, False
    else:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise FetchError(f"{source.url}: needs huggingface_hub (pip install 'reca-eval[edit]')") from exc
        if dest.exists():
            log(f"{dest}: present but unverified or different; fetching again")
        log(f"fetching {source.url}")
        # Downloaded into a hidden folder beside its destination, not huggingface_hub's own cache: the
        # file lands only under the data folder the user named, once, and is moved (not copied) into place.
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".hub-", dir=dest.parent))
        try:
            try:
                cached = Path(
                    hf_hub_download(
                        source.repo_id,
                        source.filename,
                        repo_type=source.repo_type,
                        revision=source.revision,
                        endpoint=endpoint,
                        local_dir=staging,
                    )
                )
            except Exception as exc:  # the hub client raises many types; all mean "not fetched"
                raise FetchError(
                    f"{source.url} could not be fetched ({type(exc).__name__}: {exc}). Download it elsewhere "
                    f"(hf download {source.repo_id} {source.filename} --repo-type {source.repo_type} "
                    f"--revision {source.revision}); {_placement_hint(dest, source.url)}"
                ) from exc
            digest = sha256_file(cached)
            if source.size is not None and cached.stat().st_size != source.size:
                raise FetchError(
                    f"{source.url}: {cached.stat().st_size} bytes, expected {source.size}; not placed at {dest}"
                )
            if source.sha256 is not None and digest != source.sha256:
                raise FetchError(
                    f"{source.url}: sha256 mismatch (got {digest}, expected {source.sha256}); not placed at {dest}"
                )
            os.replace(cached, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        downloaded = True
        if source.sha256 is None:
            log(f"  unpinned: {source.relative} sha256={digest} (pin on first verified download)")
        else:
            log(f"ok {dest} (sha256 verified)")
    if why := pinning({"hub": source.repo_id, "revision": source.revision, "sha256": source.sha256}):
        log(f"  {source.relative} is not pinned yet: {why}")
    _extract_once(source.extract, dest, digest, downloaded, log)
    return FetchedFile(dest, digest, source.sha256 is not None, downloaded)


def _extract_once(
    extract: bool, dest: Path, digest: str, downloaded: bool, log: Callable[[str], None]
) -> None:
    marker = dest.parent / f".extracted-{dest.name}"
    if extract and (downloaded or not marker.exists()):
        count = _safe_extract(dest, dest.parent)
        atomic_write_text(marker, digest + "\n")
        log(f"  unpacked {count} entries from {dest.name}")


def fetch_snapshot(source: HubSnapshot, root: Path, *, log: Callable[[str], None] = print) -> FetchedFile:
    """A Hugging Face dataset snapshot at a pinned revision (huggingface_hub keeps its own resume/retry)."""
    target = Path(root) / source.relative
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise FetchError(f"{source.repo_id}: needs huggingface_hub (pip install huggingface_hub)") from exc
    log(f"fetching hf://datasets/{source.repo_id}@{source.revision} into {target}")
    try:
        snapshot_download(
            repo_id=source.repo_id, repo_type="dataset", revision=source.revision, local_dir=str(target)
        )
    except Exception as exc:  # the hub client raises many types; all mean "not fetched"
        raise FetchError(
            f"hf://datasets/{source.repo_id}@{source.revision} could not be fetched ({type(exc).__name__}: {exc}). "
            f"Download it elsewhere (hf download --repo-type dataset {source.repo_id} "
            f"--revision {source.revision} --local-dir {target}) and copy it to {target}, then run again."
        ) from exc
    benchmark_dir = target.parent
    n = source.convert(target, benchmark_dir)
    log(f"  converted {n} items into {benchmark_dir}")
    return FetchedFile(target, source.revision, True, True)


def fetch_benchmark(
    name: str,
    *,
    root: Path | None = None,
    base_url: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    hub_endpoint: str | None = None,
    log: Callable[[str], None] = print,
) -> list[FetchedFile]:
    """Fetch every official file of benchmark ``name`` into ``root`` (default: the data folder);
    ``hub_endpoint`` replaces the Hugging Face Hub's address (default ``$HF_ENDPOINT``, else the Hub)."""
    sources = benchmark_sources(name)
    root = Path(root) if root is not None else data_dir()
    base_url = base_url or os.environ.get(BASE_URL_ENV) or None
    fetched, failures = [], []
    for source in sources:
        try:
            if isinstance(source, HubSnapshot):
                fetched.append(fetch_snapshot(source, root, log=log))
            elif isinstance(source, HubFile):
                fetched.append(fetch_hub_file(source, root, endpoint=hub_endpoint, log=log))
            else:
                fetched.append(
                    fetch_file(
                        source,
                        root,
                        base_url=base_url,
                        retries=retries,
                        backoff=backoff,
                        timeout=timeout,
                        log=log,
                    )
                )
        except FetchError as exc:
            failures.append(str(exc))  # go on: one error listing every file still missing
    if failures:
        raise FetchError(f"{name}: {len(failures)} file(s) not fetched:\n- " + "\n- ".join(failures))
    return fetched
