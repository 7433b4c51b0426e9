"""Stage `download`: fetch LFW-a and the official protocol files into a verified dataset folder.

Reads:  params `download.*`; the archive at `download.url`, or the local archive named by the
        environment variable LFW_A_ARCHIVE (then the URL is not contacted; LFW_A_CHECKSUM,
        '<algo>:<hex>', optionally pins that archive's checksum).
Writes: OUT (default data/lfw-a): `lfw2/<name>/<name>_NNNN.jpg` and the protocol files;
        REPORT (default metrics/data.json): counts and the structural checks.

Every check that fails raises one error naming the file; OUT is built in a temporary folder
and renamed into place only when everything passed, so no half-made dataset is ever left.
"""
from __future__ import annotations

import argparse
import http.client
import logging
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pipeline import files, lfw, views
from pipeline.record import runner
from pipeline.params import DownloadParams, flatten, load_params

log = logging.getLogger("pipeline.stages.download")
TIMEOUT_S = 60  # per request
RETRIES = 3  # after the first try, with growing pauses


class DataError(files.StageError):
    """The data cannot be fetched or is not what it should be; the message names the file."""


def verify_checksum(path: str | Path, checksum: str) -> None:
    """Raise DataError unless `path` has `checksum` ('<algo>:<hex>')."""
    algo, _, expected = checksum.partition(":")
    actual = files.digest(path, algo)
    if actual != expected.lower():
        raise DataError(f"{path}: {algo} checksum mismatch: expected {expected}, got {actual}")


def fetch(url: str, dest: str | Path, timeout_s: float = TIMEOUT_S, retries: int = RETRIES, backoff_s: float = 1.0) -> Path:
    """Download `url` to `dest` with a progress bar; retry transient failures; never leave a partial file."""
    dest = Path(dest)
    last_error = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
            log.warning("retrying %s (attempt %d of %d): %s", url, attempt + 1, retries + 1, last_error)
        try:
            with files.atomic_path(dest) as tmp:
                _fetch_once(url, tmp, timeout_s)
            return dest
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:  # the URL is wrong: retrying will not help
                raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
            last_error = f"HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
                http.client.HTTPException, _Truncated) as e:
            last_error = str(getattr(e, "reason", None) or e) or type(e).__name__
    raise DataError(f"{url}: download failed after {retries + 1} attempts: {last_error}")


class _Truncated(Exception):
    pass


def _fetch_once(url: str, dest: Path, timeout_s: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "faceverify-pipeline"})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        done = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=PurePosixPath(url).name, disable=None) as bar:
            while block := resp.read(1 << 16):
                out.write(block)
                done += len(block)
                bar.update(len(block))
    if total is not None and done != total:
        raise _Truncated(f"truncated: got {done} of {total} bytes")


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    where = f"{archive}: member {name!r}"
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{where} has an absolute path; refusing to extract")
    if ".." in path.parts:
        raise DataError(f"{where} contains '..'; refusing to extract")
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise DataError(f"{where} is a device or special file; refusing to extract")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        resolved = target if member.islnk() else path.parent / target
        if target.is_absolute() or ".." in PurePosixPath(os.path.normpath(resolved)).parts or os.path.normpath(resolved).startswith(".."):
            raise DataError(f"{where} is a link pointing outside the archive ({member.linkname!r}); refusing to extract")


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar(.gz) archive into `dest`, refusing any member that could land outside it."""
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            tar.extractall(dest, members=members, filter="data")  # the stdlib's own guard, as a second line
    except (tarfile.ReadError, EOFError, OSError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{archive}: not a readable tar/tar.gz archive ({e})") from None
    except tarfile.FilterError as e:
        raise DataError(f"{archive}: refused member: {e}") from None


def find_root(extracted: Path) -> Path:
    """The folder holding `lfw2/` (the archive's top folder, or the extraction folder itself)."""
    for candidate in [extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())]:
        if (candidate / lfw.IMAGE_DIR).is_dir():
            return candidate
    raise DataError(f"the archive has no '{lfw.IMAGE_DIR}/' image folder at its top or one level down")


def verify_sha256sums(root: Path) -> int:
    """Check every file listed in root/SHA256SUMS, if the archive ships one; return how many."""
    sums = root / "SHA256SUMS"
    if not sums.exists():
        return 0
    n = 0
    for lineno, line in enumerate(sums.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        target = root / rel
        if not target.is_file():
            raise DataError(f"{sums}:{lineno}: listed file {rel} is missing")
        if files.digest(target, "sha256") != digest:
            raise DataError(f"{target}: sha256 differs from {sums}:{lineno}")
        n += 1
    return n


def check_dataset(root: Path, protocol_md5: dict[str, str] | None) -> dict:
    """Structural checks of an extracted dataset; returns the report, raises DataError on the first failure."""
    for name in lfw.REQUIRED + views.VIEW2_FILES:
        if not (root / name).is_file():
            raise DataError(f"{root / name}: protocol file missing")
        if protocol_md5 and name in protocol_md5:
            verify_checksum(root / name, "md5:" + protocol_md5[name])
    images_dir = root / lfw.IMAGE_DIR
    folders = {p.name: sorted(q.name for q in p.iterdir()) for p in images_dir.iterdir() if p.is_dir()}
    n_images = sum(len(v) for v in folders.values())

    people = {}
    for split in ("Train", "Test"):
        path = root / f"peopleDev{split}.txt"
        people[split] = lfw.parse_people(path)
        for name, count in people[split].items():
            expected = [PurePosixPath(lfw.image_relpath(name, i)).name for i in range(1, count + 1)]
            if folders.get(name) != expected:
                have = len(folders.get(name, []))
                raise DataError(f"{path}: {name} should have images 1..{count}, folder {images_dir / name} has {have} files")
    shared = sorted(set(people["Train"]) & set(people["Test"]))
    if shared:
        raise DataError(f"{root / 'peopleDevTest.txt'}: {len(shared)} identities also in peopleDevTrain.txt, e.g. {shared[0]}")

    pairs = {}
    for split in ("Train", "Test"):
        path = root / f"pairsDev{split}.txt"
        pairs[split] = lfw.parse_pairs(path)
        allowed = people[split]
        for k, p in enumerate(pairs[split], start=2):
            for name, i in ((p.name1, p.i1), (p.name2, p.i2)):
                if not (root / lfw.image_relpath(name, i)).is_file():
                    raise DataError(f"{path}:{k}: image {lfw.image_relpath(name, i)} does not exist")
                if name not in allowed:
                    raise DataError(f"{path}:{k}: {name} is not a View 1 {split.lower()} identity (peopleDev{split}.txt)")
    path = root / "pairs.txt"
    view2 = views.pair_folds(path)
    fold_people = views.people_folds(root / "people.txt")
    for fold, (fold_pairs, allowed) in enumerate(zip(view2, fold_people), start=1):
        for k, p in enumerate(fold_pairs, start=2 + (fold - 1) * len(fold_pairs)):
            for name, i in ((p.name1, p.i1), (p.name2, p.i2)):
                if not (root / lfw.image_relpath(name, i)).is_file():
                    raise DataError(f"{path}:{k}: image {lfw.image_relpath(name, i)} does not exist")
                if name not in allowed:
                    raise DataError(f"{path}:{k}: {name} is not in fold {fold} of people.txt")
    return {
        "images": n_images,
        "people": len(folders),
        "train_people": len(people["Train"]),
        "test_people": len(people["Test"]),
        "train_pairs": len(pairs["Train"]),
        "test_pairs": len(pairs["Test"]),
        "view2_pairs": sum(map(len, view2)),
        "train_test_shared_people": len(shared),
        "protocol_md5_checked": bool(protocol_md5),
    }


@dataclass(frozen=True)
class Source:
    """Where the archive comes from besides params.yaml's `download` section: a local copy (LFW_A_ARCHIVE,
    optionally pinned by LFW_A_CHECKSUM, '<algo>:<hex>') instead of the URL, the official protocol files'
    MD5s to check (None: skip, LFW_A_PROTOCOL_MD5=skip) and the network's patience."""
    local_archive: str | None = None
    local_checksum: str | None = None
    protocol_md5: dict[str, str] | None = None
    timeout_s: float = TIMEOUT_S
    retries: int = RETRIES

    @classmethod
    def from_env(cls) -> "Source":
        return cls(os.environ.get("LFW_A_ARCHIVE"), os.environ.get("LFW_A_CHECKSUM"), expected_protocol_md5())


def build_dataset(out: Path, p: DownloadParams, source: Source) -> dict:
    """Fetch (or copy), verify and extract LFW-a into `out`, built aside and renamed into place; the report."""
    with tempfile.TemporaryDirectory(prefix="lfw-download-", dir=out.parent if out.parent.exists() else None) as tmp:
        tmp = Path(tmp)
        if source.local_archive:
            archive = Path(source.local_archive)
            if not archive.is_file():
                raise DataError(f"{archive}: LFW_A_ARCHIVE points to no file")
            expected = source.local_checksum
            log.info("using the local archive %s (LFW_A_ARCHIVE)", archive)
        else:
            try:
                archive = fetch(p.url, tmp / "archive.tar.gz", source.timeout_s, source.retries)
            except DataError as e:
                raise DataError(f"{e}. Without access to it, set LFW_A_ARCHIVE to a local copy of the archive "
                                "(docs/TROUBLESHOOTING.md)") from None
            expected = p.checksum
        if expected:
            verify_checksum(archive, expected)
            log.info("%s: %s verified", archive, expected.split(":")[0])
        else:
            log.warning("%s: no checksum pinned (sha256 %s); relying on the content checks", archive, files.digest(archive, "sha256"))
        with files.atomic_dir(out) as staging:
            extracted = tmp / "extracted"
            extracted.mkdir()
            log.info("extracting %s", archive)
            safe_extract(archive, extracted)
            root = find_root(extracted)
            for name in lfw.REQUIRED + views.VIEW2_FILES:
                if not (root / name).exists():
                    log.info("%s not in the archive: fetching it from %s", name, p.protocol_url)
                    fetch(p.protocol_url.rstrip("/") + "/" + name, root / name, source.timeout_s, source.retries)
            n_sums = verify_sha256sums(root)
            report = check_dataset(root, source.protocol_md5)
            report["sha256sums_checked"] = n_sums
            for item in root.iterdir():
                shutil.move(str(item), staging / item.name)
    return report


def expected_protocol_md5() -> dict[str, str] | None:
    """The official protocol files' MD5s, or None where LFW_A_PROTOCOL_MD5=skip (an archive whose pair
    files are not LFW's own, such as the tests' synthetic one)."""
    value = os.environ.get("LFW_A_PROTOCOL_MD5", "check")
    if value not in ("check", "skip"):
        raise DataError(f"LFW_A_PROTOCOL_MD5={value!r}: expected 'check' or 'skip'")
    return lfw.PROTOCOL_MD5 if value == "check" else None


def parser() -> argparse.ArgumentParser:
    return runner.parser(__doc__, "out", "report")


def main(argv: list[str] | None = None) -> int:
    return runner.main("download", parser(), run, argv)


def run(args, rec) -> None:
    params = load_params(args.params)
    p = params.download
    rec.params({"seed": params.seed, **flatten(p, "download.")})
    source = Source.from_env()
    rec.tags({"source": "local archive" if source.local_archive else p.url})
    report = build_dataset(args.out, p, source)
    files.write_metrics(args.report, report, rec)
    log.info("dataset ready in %s: %s", args.out, report)


if __name__ == "__main__":
    sys.exit(main())
