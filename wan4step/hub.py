"""Download exactly the files a plan needs from the Hugging Face Hub.

- `resolve` turns catalog `FileSpec`s into concrete files (real names, sizes, sha256)
  by reading the repository listing once per repo (`HfApi.model_info(files_metadata=True)`).
- `download` skips files already present and verified (sha256 of LFS files, git blob
  sha1 of small files, or size when the hub gives no hash), fetches the rest into a
  staging folder next to the destination (`<folder>/.wan4step_download/`), checks the
  hash and moves the file into place. huggingface_hub resolves the URL, redirects, size
  and auth; the bytes arrive by ranged GETs appended to a `.part` file, so a download
  stopped by a cancel, a crash or a lost connection resumes where it stopped (hub 2.x's
  own `hf_hub_download` deletes partial files). Verified files are remembered (size +
  mtime + hash) so the next run does not hash 15 GB again.
- Every failure is a `DownloadError` that names the file and says what to do: offline,
  gated repository, missing file, checksum mismatch, disk full.

Nothing here runs at import time; the endpoint comes from `HF_ENDPOINT` (huggingface_hub's
own setting) or the `endpoint` argument, which the tests point at a local fake hub.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import FileSpec
from .errors import DownloadError

STAGING_DIR = ".wan4step_download"
MANIFEST = "verified.json"
HASH_CHUNK = 16 * 1024 * 1024
DOWNLOAD_CHUNK = 4 * 1024 * 1024

ProgressFn = Callable[[int, int, str], None]  # (bytes done, bytes total, what)


@dataclass(frozen=True)
class RemoteFile:
    repo_id: str
    path: str  # path inside the repository
    revision: str  # the commit the listing came from
    size: int | None
    sha256: str | None  # LFS files
    git_sha1: str | None  # small (non-LFS) files: the git blob id
    folder: str  # ComfyUI folder key
    dest: str  # path relative to that folder


@dataclass
class FileResult:
    remote: RemoteFile
    local: Path
    status: str  # "downloaded" | "present" | "present-unverified"

    @property
    def checked_by(self) -> str:
        """What vouched for the bytes: the listing's sha256, its git blob id, or only the size."""
        if self.status == "present-unverified":
            return "nothing (hub unreachable)"
        return "sha256" if self.remote.sha256 else ("git blob id" if self.remote.git_sha1 else "size only")


@dataclass
class DownloadReport:
    results: list[FileResult] = field(default_factory=list)
    offline: bool = False

    @property
    def downloaded(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "downloaded"]

    def summary(self) -> str:
        n = len(self.results)
        got = self.downloaded
        size = sum(r.remote.size or 0 for r in got)
        present = n - len(got)
        unverified = sum(r.status == "present-unverified" for r in self.results)
        parts = [f"{n} file(s): {len(got)} downloaded ({size / 1e9:.2f} GB), {present} already present"]
        if unverified:
            parts.append(f"{unverified} present but not verified (hub unreachable)")
        no_sha = [r for r in self.results if r.status != "present-unverified" and not r.remote.sha256]
        if no_sha:
            names = ", ".join(r.remote.dest for r in no_sha[:3]) + (" ..." if len(no_sha) > 3 else "")
            how = " / ".join(sorted({r.checked_by for r in no_sha}))
            parts.append(f"{len(no_sha)} unverified: the listing gives no sha256 ({names}; checked by {how})")
        return "; ".join(parts)

    @property
    def unverified(self) -> list[FileResult]:
        """Files no sha256 vouches for (the listing had none, or the hub was unreachable)."""
        return [r for r in self.results if r.status == "present-unverified" or not r.remote.sha256]


# --------------------------------------------------------------------------------------
# hub errors -> DownloadError
# --------------------------------------------------------------------------------------
def _is_network_error(exc: BaseException) -> bool:
    from huggingface_hub.utils import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ProxyError",
                         "ConnectionError", "ReadTimeout", "RemoteProtocolError", "ReadError"})


HF_HOSTS = ("huggingface.co", "hf.co")


def sends_token(url: str) -> bool:
    """Only Hugging Face's own hosts, over https, ever see the user's token: an HF_ENDPOINT
    mirror (or a plain-http one anyone on the path can read) gets anonymous requests."""
    from urllib.parse import urlparse

    u = urlparse(url)
    host = (u.hostname or "").lower()
    return u.scheme == "https" and any(host == h or host.endswith("." + h) for h in HF_HOSTS)


def _token_for(url: str, token: str | bool | None) -> str | bool | None:
    """`token` (None = huggingface_hub's stored one) for a Hugging Face https URL, else False (none)."""
    return token if sends_token(url) else False


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _translate(exc: BaseException, repo_id: str, path: str | None, endpoint: str | None) -> DownloadError:
    """A hub/network exception as a message a ComfyUI user can act on."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}/{path}" if path else repo_id
    url = f"{_endpoint(endpoint)}/{repo_id}"
    if isinstance(exc, GatedRepoError):
        return DownloadError(
            "the repository is gated: the Hub refused the download without an accepted license",
            path=where,
            fix=f"open {url}, accept its terms, then log in (`huggingface-cli login`) or set HF_TOKEN and run again.",
        )
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError("the revision does not exist on the Hub", path=where, fix="use revision 'main'.")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(
            "the repository was not found (or is private)",
            path=where,
            fix=f"check that {url} exists; for a private repository log in or set HF_TOKEN.",
        )
    if isinstance(exc, EntryNotFoundError):
        return DownloadError(
            "the file is not in the repository",
            path=where,
            fix=f"the repository layout may have changed: look at {url}/tree/main and report it.",
        )
    if _is_network_error(exc):
        return DownloadError(
            f"cannot reach the Hugging Face Hub at {_endpoint(endpoint)} ({type(exc).__name__})",
            path=where,
            fix="connect to the internet (or set HF_ENDPOINT to a reachable mirror) and run again; "
            "a partial download resumes where it stopped.",
        )
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return DownloadError(f"the Hub answered HTTP {status}", path=where, found=str(exc).splitlines()[0],
                             fix="try again later; a partial download resumes where it stopped.")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DownloadError("the disk is full", path=where, fix="free disk space and run again (the download resumes).")
    raise exc


# --------------------------------------------------------------------------------------
# resolve
# --------------------------------------------------------------------------------------
def _listing(repo_id: str, revision: str, endpoint: str | None, token: str | bool | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True,
                                               token=_token_for(endpoint, token))


def _match(spec: FileSpec, names: Sequence[str]) -> list[str]:
    pat = spec.pattern.lower()
    if spec.is_glob:
        return sorted((n for n in names if fnmatch.fnmatchcase(n.lower(), pat)), key=_natural)
    return [n for n in names if n.lower() == pat]


def _natural(name: str) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _dest_for(spec: FileSpec, repo_path: str) -> str:
    if spec.is_glob:
        return f"{spec.dest.rstrip('/')}/{repo_path.rsplit('/', 1)[-1]}"
    return spec.dest


def resolve(specs: Sequence[FileSpec], *, endpoint: str | None = None, token: str | bool | None = None) -> list[RemoteFile]:
    """The concrete files behind `specs`, with sizes and hashes from the Hub."""
    endpoint = _endpoint(endpoint)
    listings: dict[tuple[str, str], object] = {}
    out: list[RemoteFile] = []
    for spec in specs:
        key = (spec.repo_id, spec.revision)
        if key not in listings:
            try:
                listings[key] = _listing(spec.repo_id, spec.revision, endpoint, token)
            except Exception as exc:  # noqa: BLE001 - translated or re-raised
                raise _translate(exc, spec.repo_id, None, endpoint) from exc
        info = listings[key]
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        hits = _match(spec, list(siblings))
        if len(hits) != spec.count:
            similar = [n for n in siblings if n.lower().endswith(Path(spec.pattern).suffix.lower())][:8]
            raise DownloadError(
                "the repository does not hold the expected file(s)",
                path=f"{spec.repo_id}/{spec.pattern}",
                expected=f"{spec.count} file(s) matching {spec.pattern}",
                found=f"{len(hits)}" + (f"; files of that type: {', '.join(similar)}" if similar else ""),
                fix=f"check {_endpoint(endpoint)}/{spec.repo_id}/tree/main; if the files were renamed, "
                "update wan4step/catalog.py.",
            )
        for name in hits:
            s = siblings[name]
            lfs = s.lfs
            sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
            out.append(RemoteFile(
                repo_id=spec.repo_id, path=name, revision=getattr(info, "sha", None) or spec.revision,
                size=s.size, sha256=sha256, git_sha1=None if sha256 else s.blob_id,
                folder=spec.folder, dest=_dest_for(spec, name),
            ))
    return out


# --------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------
def file_hash_ok(path: Path, remote: RemoteFile) -> bool | None:
    """True/False against the hub's hash; None when the hub gave none (size is all we have)."""
    if remote.sha256:
        h = hashlib.sha256()
        prefix = b""
    elif remote.git_sha1:
        h = hashlib.sha1()  # noqa: S324 - git's blob id, not a security hash
        prefix = f"blob {path.stat().st_size}\0".encode()
    else:
        return None
    h.update(prefix)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest() == (remote.sha256 or remote.git_sha1)


class _Manifest:
    """Which files under one folder root were verified, so they are not hashed again."""

    def __init__(self, root: Path) -> None:
        self.path = root / STAGING_DIR / MANIFEST
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    def _stamp(self, local: Path) -> dict:
        st = local.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def verified(self, dest: str, local: Path, remote: RemoteFile | None) -> bool:
        rec = self.data.get(dest)
        if not rec or not local.is_file() or {k: rec.get(k) for k in ("size", "mtime_ns")} != self._stamp(local):
            return False
        if remote is None:
            return True
        return rec.get("hash") == (remote.sha256 or remote.git_sha1) and (remote.size in (None, rec["size"]))

    def record(self, dest: str, local: Path, remote: RemoteFile) -> None:
        self.data[dest] = dict(self._stamp(local), hash=remote.sha256 or remote.git_sha1, repo=remote.repo_id,
                               path=remote.path, revision=remote.revision)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------
def _folder_root(folders: Mapping[str, str | Path] | Callable[[str], str | Path], key: str) -> Path:
    root = folders(key) if callable(folders) else folders[key]
    return Path(root)


def _part_path(staging: Path, remote: RemoteFile) -> Path:
    """The partial file for one remote version: a changed file on the hub never appends to an old part."""
    tag = (remote.sha256 or remote.git_sha1 or "nohash")[:16]
    return staging / f"{remote.dest.replace('/', '__')}.{tag}.part"


def _http_error(resp, remote: RemoteFile, endpoint) -> DownloadError:
    code = resp.headers.get("X-Error-Code", "")
    where = f"{remote.repo_id}/{remote.path}"
    if code == "GatedRepo" or (resp.status_code in (401, 403) and "gated" in resp.text.lower()):
        return DownloadError(
            "the repository is gated: the Hub refused the download without an accepted license",
            path=where,
            fix=f"open {_endpoint(endpoint)}/{remote.repo_id}, accept its terms, then log in "
            "(`huggingface-cli login`) or set HF_TOKEN and run again.",
        )
    if resp.status_code == 404:
        return DownloadError("the file is not in the repository (anymore)", path=where,
                             fix="run again to re-read the listing; if it persists, report it.")
    return DownloadError(f"the download answered HTTP {resp.status_code}", path=where,
                         fix="try again later; a partial download resumes where it stopped.")


def _fetch(remote: RemoteFile, staging: Path, endpoint, token, on_bytes: Callable[[int], None]) -> Path:
    """Bring one file into `staging` as a complete `.part` file, resuming an earlier part.

    huggingface_hub resolves the URL (redirects to its CDN), the size and the auth
    headers; the transfer itself is a ranged GET appended to a `.part` file because
    hf_hub_download (2.x) discards partial files when a download is interrupted.
    Each chunk is on disk before `on_bytes` runs, so a cancel raised there loses nothing.
    """
    import time
    from urllib.parse import quote, urlparse

    import requests
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import build_hf_headers

    # The Hub's resolve URL, built from the endpoint in use (hf_hub_url fills a template
    # fixed when huggingface_hub was imported).
    url = f"{_endpoint(endpoint)}/{remote.repo_id}/resolve/{quote(remote.revision, safe='')}/{quote(remote.path)}"
    token = _token_for(url, token)
    meta = get_hf_file_metadata(url, token=token)
    size = remote.size if remote.size is not None else meta.size  # the listing's size bounds the transfer
    location = meta.location or url
    headers = dict(build_hf_headers(token=token))
    if urlparse(location).netloc != urlparse(url).netloc or not sends_token(location):
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}  # signed CDN url
    headers["Accept-Encoding"] = "identity"
    part = _part_path(staging, remote)
    staging.mkdir(parents=True, exist_ok=True)
    attempts = 4
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if size is not None and have == size:
            break
        h = dict(headers, Range=f"bytes={have}-") if have else headers
        try:
            with requests.get(location, headers=h, stream=True, timeout=(15, 120)) as resp:
                if resp.status_code == 416:  # our part is already complete or stale
                    part.unlink(missing_ok=True)
                    continue
                if resp.status_code >= 400:
                    raise _http_error(resp, remote, endpoint)
                if have and resp.status_code != 206:  # server ignored the range: start over
                    have = 0
                on_bytes(have)
                overflow = False
                with open(part, "ab" if have else "wb") as f:
                    for chunk in resp.iter_content(chunk_size=DOWNLOAD_CHUNK):
                        if size is not None and have + len(chunk) > size:
                            overflow = True  # more than listed: never write past the size (a full disk)
                            break
                        if chunk:
                            f.write(chunk)
                            have += len(chunk)
                            on_bytes(have)
                if overflow:
                    part.unlink(missing_ok=True)
                    raise _wrong_size(remote, size, f"more than {size} bytes (the server kept sending)")
            if size is None or have >= size:
                break
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == attempts - 1:
                raise DownloadError(
                    f"the connection to the Hub broke off repeatedly ({type(exc).__name__})",
                    path=f"{remote.repo_id}/{remote.path}",
                    fix="run again: the download resumes where it stopped.",
                ) from exc
            time.sleep(1.0)
    for old in staging.glob(f"{remote.dest.replace('/', '__')}.*.part"):
        if old != part:
            old.unlink(missing_ok=True)
    return part


def _wrong_size(remote: RemoteFile, size: int | None, found: str) -> DownloadError:
    return DownloadError("the downloaded file has the wrong size", path=f"{remote.repo_id}/{remote.path}",
                         expected=f"{size} bytes", found=found, fix="run again to download it afresh.")


def _target(root: Path, dest: str, where: str) -> Path:
    """root/dest, refusing a destination that could leave the model folder (catalog or listing names)."""
    from .paths import name_parts

    try:
        return root.joinpath(*name_parts(dest, "destination"))
    except DownloadError:
        raise
    except Exception as exc:  # SettingsError from name_parts
        raise DownloadError("refused a download destination outside the model folder", path=where,
                            found=str(exc).split(" was refused")[0], fix="report it: the catalog or the "
                            "repository listing names a path that is not a plain file name.") from None


def _local_plan_offline(specs: Sequence[FileSpec], folders) -> list[tuple[FileSpec, str, Path]]:
    """Without the hub: the local files that satisfy each spec (pattern matched on disk)."""
    out = []
    for spec in specs:
        root = _folder_root(folders, spec.folder)
        if spec.is_glob:
            d = _target(root, spec.dest, spec.repo_id)
            base = spec.pattern.rsplit("/", 1)[-1].lower()
            found = sorted(p for p in d.iterdir() if fnmatch.fnmatchcase(p.name.lower(), base)) if d.is_dir() else []
            if len(found) != spec.count:
                raise DownloadError(
                    "files are missing and the Hugging Face Hub cannot be reached",
                    path=d,
                    expected=f"{spec.count} file(s) matching {base}",
                    found=f"{len(found)}",
                    fix="connect to the internet (or set HF_ENDPOINT to a reachable mirror) and run again.",
                )
            out += [(spec, f"{spec.dest.rstrip('/')}/{p.name}", p) for p in found]
        else:
            p = _target(root, spec.dest, spec.repo_id)
            if not p.is_file():
                raise DownloadError(
                    "the file is missing and the Hugging Face Hub cannot be reached",
                    path=p,
                    expected=f"{spec.repo_id}/{spec.pattern}",
                    fix="connect to the internet (or set HF_ENDPOINT to a reachable mirror) and run again, "
                    "or place the file there yourself.",
                )
            out.append((spec, spec.dest, p))
    return out


def download(
    specs: Sequence[FileSpec],
    folders: Mapping[str, str | Path] | Callable[[str], str | Path],
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    progress: ProgressFn | None = None,
) -> DownloadReport:
    """Make every file of `specs` present and verified under its ComfyUI folder.

    folders: ComfyUI folder key -> directory (or a function doing that lookup).
    progress: called with (bytes done, bytes total, message); it may raise to cancel
    (ComfyUI's interrupt) and the partial file is kept for resuming.
    """
    endpoint = _endpoint(endpoint)  # read HF_ENDPOINT once and pass it everywhere explicitly
    report = DownloadReport()
    manifests: dict[Path, _Manifest] = {}

    def manifest_for(folder_key: str) -> _Manifest:
        root = _folder_root(folders, folder_key)
        if root not in manifests:
            manifests[root] = _Manifest(root)
        return manifests[root]

    try:
        remotes = resolve(specs, endpoint=endpoint, token=token)
    except DownloadError as err:
        if err.__cause__ is None or not _is_network_error(err.__cause__):
            raise
        # Offline: fine if everything is already here.
        report.offline = True
        for spec, dest, local in _local_plan_offline(specs, folders):
            manifest = manifest_for(spec.folder)
            status = "present" if manifest.verified(dest, local, None) else "present-unverified"
            rf = RemoteFile(spec.repo_id, spec.pattern, spec.revision, local.stat().st_size, None, None, spec.folder, dest)
            report.results.append(FileResult(rf, local, status))
        if progress:
            progress(1, 1, "all files present (hub unreachable)")
        return report

    # 1. what is already here
    todo: list[tuple[RemoteFile, Path, _Manifest]] = []
    for remote in remotes:
        root = _folder_root(folders, remote.folder)
        local = _target(root, remote.dest, f"{remote.repo_id}/{remote.path}")
        manifest = manifest_for(remote.folder)
        if local.is_file() and (remote.size is None or local.stat().st_size == remote.size):
            if manifest.verified(remote.dest, local, remote):
                report.results.append(FileResult(remote, local, "present"))
                continue
            if progress:
                progress(0, 1, f"verifying {remote.dest}")
            ok = file_hash_ok(local, remote)
            if ok is not False:
                manifest.record(remote.dest, local, remote)
                report.results.append(FileResult(remote, local, "present"))
                continue
        todo.append((remote, local, manifest))

    # 2. room for the rest, per destination folder (they may sit on different disks)
    total = sum(r.size or 0 for r, _, _ in todo)
    need: dict[Path, int] = {}
    for remote, _local, _m in todo:
        staging = _folder_root(folders, remote.folder) / STAGING_DIR
        part = _part_path(staging, remote)
        have = part.stat().st_size if part.exists() else 0
        need[staging] = need.get(staging, 0) + max((remote.size or 0) - have, 0)
    for staging, nbytes in need.items():
        staging.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(staging).free
        if nbytes > free:
            raise DownloadError(
                "not enough free disk space for the download",
                path=staging.parent,
                expected=f"{nbytes / 1e9:.2f} GB free",
                found=f"{free / 1e9:.2f} GB",
                fix="free disk space or move ComfyUI's models folder (extra_model_paths.yaml), then run again.",
            )

    # 3. fetch, verify, move into place
    done = 0
    for remote, local, manifest in todo:
        staging = _folder_root(folders, remote.folder) / STAGING_DIR
        label = f"{remote.repo_id}/{remote.path}"

        def on_bytes(n: int, _base=done, _label=label) -> None:
            if progress:
                progress(_base + n, total, _label)

        try:
            staged = _fetch(remote, staging, endpoint, token, on_bytes)
        except DownloadError:
            raise
        except Exception as exc:  # noqa: BLE001 - hub errors translated; anything else re-raised
            raise _translate(exc, remote.repo_id, remote.path, endpoint) from exc
        got = staged.stat().st_size
        if remote.size is not None and got != remote.size:
            staged.unlink(missing_ok=True)
            raise _wrong_size(remote, remote.size, f"{got} bytes")
        if progress:
            progress(done + (remote.size or 0), total, f"verifying {remote.dest}")
        if file_hash_ok(staged, remote) is False:
            staged.unlink(missing_ok=True)
            raise DownloadError(
                "checksum mismatch: the downloaded bytes are not the file the Hub lists",
                path=label,
                expected=f"sha256 {remote.sha256}" if remote.sha256 else f"git blob {remote.git_sha1}",
                fix="the bad copy was deleted; run again (a proxy or mirror serving stale files can cause this).",
            )
        local.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, local)
        manifest.record(remote.dest, local, remote)
        report.results.append(FileResult(remote, local, "downloaded"))
        done += remote.size or 0
    if progress:
        progress(max(total, 1), max(total, 1), "done")
    return report
