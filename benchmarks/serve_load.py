"""Load figures of the served model: requests/s and latency at several concurrency levels.

    python -m benchmarks.serve_load [--model models:/faceverify@champion] [--requests 300] [--concurrency 1 4 16]

Starts `mlflow models serve` on the pipeline's registered model (the store of MLFLOW_TRACKING_URI,
else the repository's mlflow.db) on a free local port, sends a bounded number of one-pair requests
from this process's threads at each concurrency level (two LFW-a test images, as base64), and prints
requests/s, p50 and p99 latency and errors. Then it sends the hostile requests of the serving tests
and checks that the server still answers a good one. Needs `dvc repro` first; sends nothing beyond
127.0.0.1.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, timeout: float = 120) -> tuple[int, bytes, float]:
    """(HTTP status, body, seconds)."""
    t0 = time.perf_counter()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.perf_counter() - t0


def request(image1: str, image2: str) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["image1", "image2"], "data": [[image1, image2]]}}).encode()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def hostile() -> dict[str, bytes]:
    from PIL import Image
    big = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(big, format="PNG")
    good = base64.b64encode((ROOT / "data/lfw-a/lfw2/Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes()).decode()
    return {"not base64": request("not base64!", good),
            "base64 of text": request(base64.b64encode(b"hello").decode(), good),
            "a number": json.dumps({"dataframe_split": {"columns": ["image1", "image2"], "data": [[1, good]]}}).encode(),
            "no rows": json.dumps({"dataframe_split": {"columns": ["image1", "image2"], "data": []}}).encode(),
            "12000x12000 PNG": request(base64.b64encode(big.getvalue()).decode(), good)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/faceverify@champion")
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    pairs = (ROOT / "data/lfw-a/pairsDevTest.txt").read_text().splitlines()[1].split("\t")
    image = lambda name, i: base64.b64encode(  # noqa: E731
        (ROOT / "data/lfw-a/lfw2" / name / f"{name}_{int(i):04d}.jpg").read_bytes()).decode()
    body = request(image(pairs[0], pairs[1]), image(pairs[0], pairs[2]))
    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", args.model, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while True:
            try:
                if post(url, body)[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("mlflow models serve did not answer within 180 s")
            time.sleep(1)
        print(f"model {args.model}; {args.requests} one-pair requests per level; CPU {os.cpu_count()} cores")
        print("concurrency  requests/s  p50 ms  p99 ms  errors")
        for c in args.concurrency:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=c) as pool:
                results = list(pool.map(lambda _: post(url, body), range(args.requests)))
            wall = time.perf_counter() - t0
            latency = [s for status, _, s in results if status == 200]
            errors = sum(status != 200 for status, _, _ in results)
            print(f"{c:>11}  {args.requests / wall:>10.1f}  {1000 * percentile(latency, 0.5):>6.0f}  "
                  f"{1000 * percentile(latency, 0.99):>6.0f}  {errors:>6}")
        print("hostile requests:")
        for name, bad in hostile().items():
            status, answer, seconds = post(url, bad)
            message = json.loads(answer).get("message", "") if answer.startswith(b"{") else answer[:80].decode()
            print(f"  {name}: HTTP {status} in {1000 * seconds:.0f} ms, stack_trace={'stack_trace' in answer.decode()}: {message[:110]}")
        status, _, _ = post(url, body)
        print(f"a good request after them: HTTP {status}")
        return 0 if status == 200 else 1
    finally:
        os.killpg(server.pid, 9)
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
