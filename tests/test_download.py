"""The download stage against a real HTTP server on 127.0.0.1, and the archive safety checks."""
import hashlib
import http.server
import shutil
import tarfile
import threading

import pytest

from conftest import add_member, make_archive
from pipeline import lfw, views
from pipeline.stages import download
from pipeline.params import DownloadParams


class Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}  # path -> (body, advertised length)

    def do_GET(self):  # noqa: N802
        if self.path not in self.routes:
            self.send_error(404)
            return
        body, length = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)  # fewer bytes than advertised = a truncated download

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.routes = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", Handler.routes
    httpd.shutdown()


def sha256(path):
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def run(tmp_path, url, checksum, local=None, protocol_url=None):
    out, report = tmp_path / "data" / "lfw-a", tmp_path / "metrics" / "data.json"
    result = download.build_dataset(out, DownloadParams(url, checksum, protocol_url or url),
                                    download.Source(local_archive=local, timeout_s=5, retries=0))
    return out, report, result


def test_http_download_success(tmp_path, server, lfw_archive):
    base, routes = server
    body = lfw_archive.read_bytes()
    routes["/lfw.tar.gz"] = (body, len(body))
    out, report, result = run(tmp_path, base + "/lfw.tar.gz", sha256(lfw_archive))
    assert result["images"] == sum(1 for _ in (out / "lfw2").glob("*/*.jpg")) > 0
    assert result["train_test_shared_people"] == 0
    assert (out / "pairsDevTest.txt").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["lfw-a"]  # no temporary leftovers


def test_protocol_files_fetched_when_the_archive_lacks_them(tmp_path, server, lfw_dir):
    base, routes = server
    images_only = tmp_path / "src" / "lfw-a"
    shutil.copytree(lfw_dir / "lfw2", images_only / "lfw2")
    archive = make_archive(images_only, tmp_path / "images.tar.gz")
    for name in lfw.REQUIRED + views.VIEW2_FILES:
        body = (lfw_dir / name).read_bytes()
        routes["/protocol/" + name] = (body, len(body))
    out, _, result = run(tmp_path, "unused", "", local=str(archive), protocol_url=base + "/protocol/")
    assert (out / "pairsDevTrain.txt").read_bytes() == (lfw_dir / "pairsDevTrain.txt").read_bytes()
    assert result["train_pairs"] > 0


def test_checksum_mismatch_is_one_clear_error_and_leaves_nothing(tmp_path, server, lfw_archive):
    base, routes = server
    body = lfw_archive.read_bytes()
    routes["/lfw.tar.gz"] = (body, len(body))
    with pytest.raises(download.DataError, match=r"sha256 checksum mismatch: expected 00ff"):
        run(tmp_path, base + "/lfw.tar.gz", "sha256:00ff")
    assert not (tmp_path / "data" / "lfw-a").exists()
    assert not list((tmp_path / "data").glob("*"))


def test_truncated_download_is_an_error_and_leaves_no_file(tmp_path, server, lfw_archive):
    base, routes = server
    body = lfw_archive.read_bytes()
    routes["/lfw.tar.gz"] = (body[: len(body) // 2], len(body))
    with pytest.raises(download.DataError, match=r"download failed after 1 attempts: .*(truncated|Incomplete|Remote)"):
        run(tmp_path, base + "/lfw.tar.gz", "")
    assert not list((tmp_path / "data").glob("*"))


def test_fetch_retries_then_succeeds(tmp_path, server):
    base, routes = server
    routes["/f"] = (b"abc", 10)  # truncated on every attempt
    with pytest.raises(download.DataError, match="after 3 attempts"):
        download.fetch(base + "/f", tmp_path / "f", timeout_s=5, retries=2, backoff_s=0)
    assert not (tmp_path / "f").exists()
    routes["/f"] = (b"abc", 3)
    assert download.fetch(base + "/f", tmp_path / "f", timeout_s=5, retries=2, backoff_s=0).read_bytes() == b"abc"


def test_http_404_is_not_retried(tmp_path, server):
    base, _ = server
    with pytest.raises(download.DataError, match="HTTP 404"):
        download.fetch(base + "/missing", tmp_path / "f", retries=5)


def planted(lfw_archive, tmp_path, info, data=b"x"):
    archive = tmp_path / "evil.tar.gz"
    shutil.copy(lfw_archive, archive)
    add_member(archive, info, data)
    return archive


def symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def device(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("info, message", [
    (tarfile.TarInfo("lfw-a/../../escape.txt"), r"member 'lfw-a/../../escape.txt' contains '\.\.'"),
    (tarfile.TarInfo("/tmp/abs.txt"), r"member '/tmp/abs.txt' has an absolute path"),
    (symlink("lfw-a/link", "../../../etc/passwd"), r"is a link pointing outside the archive"),
    (symlink("lfw-a/link2", "/etc/passwd"), r"is a link pointing outside the archive"),
    (device("lfw-a/dev"), r"is a device or special file"),
])
def test_unsafe_members_are_refused(tmp_path, lfw_archive, info, message):
    archive = planted(lfw_archive, tmp_path, info)
    with pytest.raises(download.DataError, match=message):
        run(tmp_path, "unused", "", local=str(archive))
    assert not (tmp_path / "data" / "lfw-a").exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.parametrize("content, message", [
    (b"this is not an archive", r"not a readable tar/tar.gz archive"),
    (None, r"not a readable tar/tar.gz archive"),  # truncated gzip
])
def test_unreadable_archives(tmp_path, lfw_archive, content, message):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(content if content is not None else lfw_archive.read_bytes()[:5000])
    with pytest.raises(download.DataError, match=message):
        run(tmp_path, "unused", "", local=str(archive))
    assert not (tmp_path / "data" / "lfw-a").exists()


def test_structural_checks_name_the_file(tmp_path, lfw_dir):
    broken = tmp_path / "lfw-a"
    shutil.copytree(lfw_dir, broken)
    victim = sorted((broken / "lfw2").glob("*/*_0002.jpg"))[0]
    victim.unlink()
    with pytest.raises(download.DataError, match=rf"peopleDev(Train|Test).txt: {victim.parent.name} should have images"):
        download.check_dataset(broken, None)
    shutil.rmtree(broken)
    shutil.copytree(lfw_dir, broken)
    with open(broken / "peopleDevTest.txt", "a") as f:
        first_train = (broken / "peopleDevTrain.txt").read_text().splitlines()[1]
        f.write(first_train + "\n")
    text = (broken / "peopleDevTest.txt").read_text().splitlines()
    (broken / "peopleDevTest.txt").write_text("\n".join([str(int(text[0]) + 1)] + text[1:]) + "\n")
    with pytest.raises(download.DataError, match=r"peopleDevTest.txt: 1 identities also in peopleDevTrain.txt"):
        download.check_dataset(broken, None)


def test_protocol_md5_mismatch_names_the_file(tmp_path, lfw_dir):
    with pytest.raises(download.DataError, match=r"pairsDevTrain.txt: md5 checksum mismatch"):
        download.check_dataset(lfw_dir, lfw.PROTOCOL_MD5)


def test_pairs_file_naming_a_missing_image(tmp_path, lfw_dir):
    broken = tmp_path / "lfw-a"
    shutil.copytree(lfw_dir, broken)
    lines = (broken / "pairsDevTest.txt").read_text().splitlines()
    name = lines[1].split("\t")[0]
    lines[1] = f"{name}\t1\t99"
    (broken / "pairsDevTest.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(download.DataError, match=rf"pairsDevTest.txt:2: image lfw2/{name}/{name}_0099.jpg does not exist"):
        download.check_dataset(broken, None)
