"""Fixtures: a tiny, learnable, synthetic LFW-a (layout, protocol files, archive) and shrunk params."""
from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.params import set_dotted

ROOT = Path(__file__).resolve().parents[1]
REAL_ARCHIVE = ROOT.parent / "shared" / "data" / "lfw-a.tar.gz"
FACE_BOX = (65, 70, 185, 190)  # left, top, right, bottom of the synthetic faces (120x120) in the 250x250 image


def face(template: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 250x250 grayscale image: the identity's template, jittered, in the face box, plus noise."""
    img = rng.normal(100, 20, (250, 250))
    patch = np.kron(template, np.ones((15, 15)))  # (120, 120) blocky identity pattern
    dy, dx = rng.integers(-3, 4, size=2)
    left, top, right, bottom = FACE_BOX
    img[top + dy:bottom + dy, left + dx:right + dx] = patch + rng.normal(0, 12, patch.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


def make_lfw(root: Path, n_train: int = 24, n_test: int = 10, per_person: int = 4, seed: int = 0) -> Path:
    """Write a View 1-shaped dataset under root/lfw-a; return that folder."""
    rng = np.random.default_rng(seed)
    base = root / "lfw-a"
    names = [f"Person_{k:03d}" for k in range(n_train + n_test)]
    counts = {}
    for k, name in enumerate(names):
        template = rng.uniform(20, 235, (8, 8))
        n = per_person if k % 3 else 1  # some people with a single image, as in LFW
        counts[name] = n
        folder = base / "lfw2" / name
        folder.mkdir(parents=True)
        for i in range(1, n + 1):
            face(template, rng).save(folder / f"{name}_{i:04d}.jpg", quality=95)
    train, test = names[:n_train], names[n_train:]
    for split, people in (("Train", train), ("Test", test)):
        (base / f"peopleDev{split}.txt").write_text(f"{len(people)}\n" + "".join(f"{n}\t{counts[n]}\n" for n in people))
        multi = [n for n in people if counts[n] >= 2]
        same = [(n, 1 + k % (counts[n] - 1), counts[n]) for k, n in enumerate(multi)]
        # each different pair joins two people half the list apart, so the pair graph falls into small
        # connected components, as LFW's does (restricted mode splits validation by component)
        diff = [(people[k], 1, people[(k + len(people) // 2) % len(people)], 1) for k in range(len(same))]
        lines = [f"{len(same)}"] + ["\t".join(map(str, s)) for s in same] + ["\t".join(map(str, d)) for d in diff]
        (base / f"pairsDev{split}.txt").write_text("\n".join(lines) + "\n")
    write_view2(base, names, counts)
    return base


def write_view2(base: Path, names: list[str], counts: dict[str, int]) -> None:
    """View 2's files over all `names`: fold k holds names[k::10], one same and one different pair each."""
    folds = [names[k::10] for k in range(10)]
    people = ["10"]
    pairs = ["10\t1"]
    for fold in folds:
        multi = [n for n in fold if counts[n] >= 2]
        assert multi and len(fold) >= 2, "each View 2 fold needs two people, one with two images"
        people += [str(len(fold))] + [f"{n}\t{counts[n]}" for n in fold]
        pairs += [f"{multi[0]}\t1\t2", f"{fold[0]}\t1\t{fold[1]}\t1"]
    (base / "people.txt").write_text("\n".join(people) + "\n")
    (base / "pairs.txt").write_text("\n".join(pairs) + "\n")


def make_archive(dataset: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(dataset, arcname=dataset.name)
    return out


def add_member(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    """Rewrite a tar.gz with one extra member (used to plant a malicious entry)."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:
        for m, content in members:
            tar.addfile(m, io.BytesIO(content) if content is not None else None)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


@pytest.fixture(scope="session")
def lfw_dir(tmp_path_factory) -> Path:
    return make_lfw(tmp_path_factory.mktemp("lfw"))


@pytest.fixture(scope="session")
def lfw_archive(lfw_dir, tmp_path_factory) -> Path:
    return make_archive(lfw_dir, tmp_path_factory.mktemp("archive") / "lfw-a.tar.gz")


def small_params(**overrides) -> dict:
    """The real params.yaml, shrunk for CPU tests on the synthetic data."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["pairs"].update(mode="unrestricted", val_fraction=0.3, n_train_pairs=64, n_val_pairs=32)
    p["prepare"].update(crop=list(FACE_BOX), image_size=32)  # the box `face` draws the synthetic faces in
    p["train"].update(width=8, embedding_dim=16, batch_size=16, epochs=3, warmup_epochs=0, patience=3, device="cpu")
    for key, value in overrides.items():
        set_dotted(p, key, value)
    return p


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params()))
    return path


def run_stage(module, lfw_dir: Path, out: Path, name: str, **overrides) -> Path:
    """Run a data stage's main() on the synthetic dataset with the shrunk params; return its output folder."""
    params = out / "params.yaml"
    params.write_text(yaml.safe_dump(small_params(**overrides)))
    assert module.main(["--params", str(params), "--data", str(lfw_dir), "--out", str(out / name),
                        "--report", str(out / f"{name}.json")]) == 0
    return out / name


@pytest.fixture(scope="session")
def prepared(lfw_dir, tmp_path_factory) -> Path:
    """The synthetic dataset run through the prepare stage (size 32)."""
    from pipeline.stages import prepare
    return run_stage(prepare, lfw_dir, tmp_path_factory.mktemp("prepared"), "prepared")


@pytest.fixture(scope="session")
def tables(lfw_dir, tmp_path_factory) -> Path:
    """The synthetic dataset's pair tables, as the pairs stage writes them."""
    from pipeline.stages import pairs
    return run_stage(pairs, lfw_dir, tmp_path_factory.mktemp("pairs"), "pairs")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True, timeout: float = 900):
    """`cmd` in `cwd`, output captured; a non-zero exit (with `check`) or a hang past `timeout` fails the test."""
    import subprocess
    try:
        result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        raise AssertionError(f"{' '.join(cmd)} still running after {timeout:.0f} s, killed\n{out[-4000:]}") from None
    if check and result.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def start_queue(repo: Path, env: dict, jobs: int) -> None:
    """`dvc queue start --jobs N`, its output in a file. The workers it spawns keep the command's
    stdout and stderr open until they exit, so over a pipe (`run`) the call lasts as long as they do."""
    import subprocess
    with open(repo / "queue-start.log", "w") as log:
        result = subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], cwd=repo, env=env,
                                stdout=log, stderr=subprocess.STDOUT, timeout=120)
    assert result.returncode == 0, (repo / "queue-start.log").read_text()[-4000:]


def stop_queue_workers(repo: Path, grace: float = 30) -> list[str]:
    """Waits up to `grace` seconds for the `dvc queue start` workers of `repo` to exit, kills those
    still running, and returns their names.

    A worker can outlive an empty queue. Workers that start in the same millisecond (`--jobs N`)
    race to create the broadcast table of kombu's filesystem broker
    (.dvc/tmp/exps/celery/broker/control/celery.pidbox.exchange), which kombu writes without a lock
    when the file is new: the last writer's binding wins. The other worker's monitor then gets no
    answer about its own tasks, calls the queue empty, and sends a shutdown that never reaches it."""
    import json
    import os
    import signal

    import psutil
    workers = {}
    for info in sorted((repo / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json")):
        try:
            proc = psutil.Process(json.loads(info.read_text())["pid"])
            if "queue-worker" in " ".join(proc.cmdline()):  # else gone, and the pid reused
                workers[proc] = info.stem
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(workers), timeout=grace)
    for proc in alive:
        # dvc-task gives each worker's supervisor a process group of its own: end both
        with contextlib.suppress(ProcessLookupError):
            if (group := os.getpgid(proc.pid)) != os.getpgid(0):
                os.killpg(group, signal.SIGKILL)
            else:
                proc.kill()
    psutil.wait_procs(alive, timeout=30)
    return sorted(workers[proc] for proc in alive)


def make_repo(dest: Path, archive: Path, params: dict) -> tuple[Path, dict]:
    """A fresh git + DVC repository holding this project's pipeline, shrunk params, ready for `dvc repro`."""
    import os
    import sys

    shutil.copytree(ROOT / "pipeline", dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "LFW_A_ARCHIVE": str(archive), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    run(["git", "init", "-q", "-b", "main"], dest, env)
    run(["dvc", "init", "-q"], dest, env)
    run(["dvc", "config", "core.autostage", "true"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "init"], dest, env)
    return dest, env


@pytest.fixture(autouse=True, scope="session")
def _synthetic_protocol_files():
    """The synthetic archive's pair files are not LFW's: the download stage skips their official MD5s."""
    import os
    old = os.environ.get("LFW_A_PROTOCOL_MD5")
    os.environ["LFW_A_PROTOCOL_MD5"] = "skip"
    yield
    if old is None:
        os.environ.pop("LFW_A_PROTOCOL_MD5", None)
    else:
        os.environ["LFW_A_PROTOCOL_MD5"] = old


@pytest.fixture(autouse=True)
def _same_store_for_every_test(_mlflow_store, monkeypatch):
    """`mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI; undo whatever a test left there."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _mlflow_store)


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store(tmp_path_factory):
    """Every test records to a throwaway SQLite store, never to the repository's mlflow.db."""
    import os
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    yield f"sqlite:///{store}"
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@contextlib.contextmanager
def start_mlflow_server(backend_uri: str, artifacts: Path):
    """A real `mlflow server` on 127.0.0.1 over `backend_uri`; yields its URL, killed on exit."""
    import os
    import socket
    import subprocess
    import sys
    import time
    port = free_port()
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(artifacts.parent / f"mlflow-server-{port}.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"mlflow server over {backend_uri} did not start:\n{log.read()[-3000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        log.close()


def committed(rel: str) -> str:
    """The text of `rel` (a path from the repository root) as the checked-out commit holds it.

    A test of committed docs reads committed files: `dvc repro` on another CPU, `dvc exp run` and
    `dvc exp apply` rewrite the workspace's metrics and params.yaml, never the committed README.
    Outside a git checkout (an unpacked release) the files are the committed ones."""
    import subprocess
    try:
        done = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:  # no git
        return (ROOT / rel).read_text(encoding="utf-8")
    if done.returncode == 0:
        return done.stdout
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True)
    if inside.returncode:
        return (ROOT / rel).read_text(encoding="utf-8")
    raise FileNotFoundError(f"{rel}: not in the commit HEAD")
