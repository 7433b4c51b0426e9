"""A screenshot of the MLflow UI comparing pipeline runs side by side (docs/mlflow_compare.png).

Serves `mlflow ui` over the repository's store (mlflow.db) on a free local port, opens its compare
page for the named pipeline runs (default: the two newest that evaluated) in headless Chromium
(Debian's `chromium`), and saves what it shows. Needs no network beyond 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORE = f"sqlite:///{ROOT / 'mlflow.db'}"
OUT = ROOT / "docs" / "mlflow_compare.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data, {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def wait_for(base: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/health", timeout=5)
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("mlflow ui exited before it answered")
            time.sleep(0.5)
    raise SystemExit(f"mlflow ui did not answer within {seconds:.0f} s")


def browser(args: list[str], user_dir: str, timeout: float = 180) -> subprocess.CompletedProcess:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}", *args],
                          capture_output=True, text=True, timeout=timeout)


def pipeline_runs(base: str, experiment: str = "faceverify") -> tuple[str, list[dict]]:
    exp = api(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + urllib.parse.quote(experiment))
    exp_id = exp["experiment"]["experiment_id"]
    found = api(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 200,
                                                      "filter": "tags.kind = 'pipeline'",
                                                      "order_by": ["attributes.start_time DESC"]})
    return exp_id, found.get("runs", [])


def screenshot(store: str = STORE, runs: list[str] | None = None, out: Path = OUT, size: str = "1600,2600") -> int:
    """`screenshot`: the compare page of pipeline runs `runs` (names; default the two newest that evaluated)
    of the MLflow store `store`, as `out`, in a window of `size` ("width,height" in pixels)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                           "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        wait_for(base, ui)
        exp_id, found = pipeline_runs(base)
        evaluated = [r for r in found if any(m["key"] == "evaluate.accuracy" for m in r["data"].get("metrics", []))]
        chosen = [r for r in evaluated if r["info"]["run_name"] in runs] if runs else evaluated[:2]
        if len(chosen) < 2:
            raise SystemExit(f"need two evaluated pipeline runs to compare, found {[r['info']['run_name'] for r in chosen]}")
        ids = [r["info"]["run_id"] for r in chosen]
        url = (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
               f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}&workflowType=machine_learning")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            shot = Path(tmp) / "shot.png"
            done = browser([f"--window-size={size}", "--virtual-time-budget=30000", f"--screenshot={shot}", url], tmp)
            if not shot.is_file():
                raise SystemExit(f"chromium wrote no screenshot:\n{done.stderr[-2000:]}")
            shutil.move(str(shot), out)
        print(f"{out}: {', '.join(r['info']['run_name'] for r in chosen)} compared ({url})")
        return 0
    finally:
        os.killpg(ui.pid, 9)
        ui.wait()

