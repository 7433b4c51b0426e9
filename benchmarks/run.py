"""Benchmark: prints the pipeline's speed and memory figures on this machine. Not a test.

    python -m benchmarks.run [--archive PATH] [--full-repro]

Measures, in one run: model FLOPs and parameters; training throughput (images/s) in fp32 and
bf16 (bf16 only on a CPU that runs it natively; elsewhere the pipeline trains in fp32) and the
achieved FLOP/s as a fraction of this machine's matmul peak, measured right before and right after
each training window (a shared VM's peak moves from minute to minute), in three rounds; data
preparation time (extract, verify, decode, crop, resize all images); evaluation throughput
(pairs/s), its ceiling (the embedding's FLOPs at the whole measured peak), what embedding in bf16
and/or without the mirror pass would gain and cost (not used), the embedding time by batch size,
and the latency of verifying one pair from files, model load included; peak RSS of a training
process; and with --full-repro, the wall time of every stage of `dvc repro -f`
in a clean clone of this repository on the real archive (forced: a clone holds the committed
metrics, so a plain `dvc repro` skips calibrate and evaluate once training has reproduced the
committed model bit for bit).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.data import augment
from pipeline.embedding import autocast_dtype
from pipeline.model import Siamese, batch_all_contrastive_loss
from pipeline.params import load_params
from pipeline.stages.train import make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(dtype: torch.dtype, n: int = 4096, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def training_vs_peak(params, dtype: torch.dtype | None, rounds: int = 3) -> list[tuple[float, float, float]]:
    """(matmul peak FLOP/s, images/s, FLOPs per image) of each round: the peak of the training's
    precision is the mean of one measured right before and one right after the training window."""
    out = []
    for _ in range(rounds):
        before = matmul_peak(dtype or torch.float32, seconds=1.5)
        ips, flops = train_throughput(params, dtype)
        after = matmul_peak(dtype or torch.float32, seconds=1.5)
        out.append(((before + after) / 2, ips, flops))
    return out


def report_training(name: str, rounds: list[tuple[float, float, float]]) -> None:
    """One line: each round's images/s, GFLOP/s and fraction of its peak, and the median fraction."""
    flops = rounds[0][2]
    shares = [100 * ips * flops / peak for peak, ips, _ in rounds]
    print(f"training {name}, {len(rounds)} rounds: {' / '.join(f'{ips:.0f}' for _, ips, _ in rounds)} images/s, "
          f"{flops / 1e6:.0f} MFLOPs per image (fwd+bwd) -> {' / '.join(f'{ips * flops / 1e9:.0f}' for _, ips, _ in rounds)} "
          f"GFLOP/s = {' / '.join(f'{x:.1f}' for x in shares)}% of the matmul peak measured around each "
          f"({' / '.join(f'{peak / 1e9:.0f}' for peak, _, _ in rounds)} GFLOP/s); median {statistics.median(shares):.1f}%")


def train_step_flops(model: Siamese, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        model.embed(x).sum().backward()
    return counter.get_total_flops()


def train_throughput(params, dtype: torch.dtype | None, steps: int = 12) -> tuple[float, float]:
    """(images/s, FLOPs per image for forward + backward) of the real training step."""
    p = params.train
    torch.manual_seed(0)
    model = Siamese.from_params(params).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, p)
    n = 2 * p.batch_size
    x = torch.randint(0, 256, (n, 1, params.prepare.image_size, params.prepare.image_size), dtype=torch.uint8)
    ids = torch.arange(n) // 2
    gen = torch.Generator().manual_seed(0)
    flops = train_step_flops(model, x[:8].float()) / 8
    for k in range(steps + 3):
        if k == 3:
            t0 = time.perf_counter()
        xa = augment(x.float(), gen, **vars(p.augment))
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            emb = model.embed(xa)
        loss = batch_all_contrastive_loss(emb, ids, p.margin, p.pos_margin, p.neg_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * n / (time.perf_counter() - t0), flops


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0, out.stdout + out.stderr


def evaluation(model_path: Path, tmp: Path, env: dict, fwd_flops: float, peaks: dict, bf16: bool) -> None:
    """Scoring the official test pairs from JPEG files, its ceiling at the measured matmul `peaks`
    {name: FLOP/s} given `fwd_flops` per image, and verifying one pair: in-process and as a command.
    `bf16`: whether the what-if tries bf16 (only where the CPU runs it natively)."""
    import numpy as np
    from PIL import Image

    from pipeline import lfw
    from pipeline.stages import export
    from pipeline.bundle import Bundle
    from pipeline.scoring import image_path, pair_images, pair_rows, score_pairs
    from pipeline.verifier import Verifier

    images = tmp / "lfw-a" / "lfw2"
    pairs = lfw.parse_pairs(tmp / "lfw-a" / "pairsDevTest.txt")
    verifier = Verifier(model_path, 1.0)
    t0 = time.perf_counter()
    score_pairs(verifier, images, pairs)
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    keys, arrays = pair_images(verifier, images, pairs)
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    e32 = verifier.embed(arrays)
    t_embed = time.perf_counter() - t0
    print(f"evaluation: {len(pairs)} test pairs ({len(keys)} distinct images) from JPEG files in {dt:.2f} s = "
          f"{len(pairs) / dt:.0f} pairs/s; the two parts timed again apart: decode {t_decode:.2f} s, embed {t_embed:.2f} s = "
          f"{len(keys) / t_embed:.0f} images/s ({verifier.tta.count} views of each: {verifier.tta})")
    passes = verifier.tta.count
    total = fwd_flops * passes * len(keys)
    print(f"evaluation ceiling: embedding the {len(keys)} images{f' in {passes} views' if passes > 1 else ''} is "
          f"{total / 1e9:.0f} GFLOP; even at the whole measured matmul peak, without decoding: " + "; ".join(
              f"{name} ({peak / 1e9:.0f} GFLOP/s) >= {total / peak:.2f} s, <= {len(pairs) * peak / total:.0f} pairs/s"
              for name, peak in peaks.items()))
    x = torch.from_numpy(np.ascontiguousarray(arrays)).unsqueeze(1)  # (N, 1, H, W) uint8, as Verifier.embed makes it
    inference_what_if(verifier, x, pair_rows(keys, pairs), e32, pairs, t_decode, bf16)
    batch_sweep(verifier, x, e32)

    bundle = tmp / "faceverify.npz"
    export.export(model_path, 1.0, bundle)
    first = pairs[0]
    a, b = image_path(images, first.name1, first.i1), image_path(images, first.name2, first.i2)
    for name, load in (("checkpoint (PyTorch)", lambda: Verifier(model_path, 1.0)), ("bundle (NumPy)", lambda: Bundle(bundle))):
        t0 = time.perf_counter()
        load().distances([Image.open(a)], [Image.open(b)])
        print(f"verify one pair in-process, {name}, model load included: {1000 * (time.perf_counter() - t0):.0f} ms")
    command = [shutil.which("faceverify") or "faceverify", "verify", str(a), str(b), "--threshold", "1.0", "--model"]
    for name, model in (("bundle", bundle), ("checkpoint", model_path)):
        times = [timed(command + [str(model)], ROOT, env)[0] for _ in range(3)]
        print(f"verify one pair with `faceverify verify --model {model.name}` (interpreter start included): "
              f"{min(times):.2f} s best of 3 ({', '.join(f'{t:.2f}' for t in times)})")


def inference_what_if(verifier, x: torch.Tensor, test_rows: tuple[list[int], list[int]], e32, pairs: list,
                      t_decode: float, bf16: bool) -> None:
    """What embedding in bf16 and/or without the mirror pass would gain and cost (not used: evaluation,
    `faceverify verify` and the served model agree in fp32 with the mirror pass); the bf16 variants only
    with `bf16`. For each variant:
    its embedding time for the test images `x` (`test_rows`: each test pair's two rows in `x`) and
    the pairs/s with `t_decode`; the threshold chosen again on this workspace's validation pairs the
    way the calibrate stage chooses it, in the same variant; the test accuracy and AUC at that
    threshold; the test distances against `e32`'s (the verifier's)."""
    import numpy as np

    from pipeline.data import load_images, load_pairs
    from pipeline.metrics import choose_threshold, verification_metrics
    from pipeline.model import embed_all, euclidean
    from pipeline.embedding import pair_distances
    from pipeline.tta import TTA
    from pipeline.verifier import BATCH

    prepared, val_table = ROOT / "data" / "prepared", ROOT / "data" / "pairs" / "val.tsv"
    if not (prepared / "images.npy").exists() or not val_table.exists():
        print(f"no {prepared} or {val_table} (run `dvc repro` first): the bf16 and mirror-pass what-if skipped")
        return
    calibrate = load_params(ROOT / "params.yaml").calibrate
    images, rows = load_images(prepared)
    val = load_pairs(val_table, rows)
    a, b = map(torch.tensor, test_rows)
    y = np.array([p.same for p in pairs])
    d_used = euclidean(torch.from_numpy(e32)[a], torch.from_numpy(e32)[b]).numpy()
    for dtype, mirror in ((None, True), (None, False), (torch.bfloat16, True), (torch.bfloat16, False))[:4 if bf16 else 2]:
        tta = TTA(mirror, verifier.tta.shift)
        embed_all(verifier.fast, x[:BATCH], tta, BATCH, dtype)  # warm-up
        t0 = time.perf_counter()
        e = embed_all(verifier.fast, x, tta, BATCH, dtype)
        t = time.perf_counter() - t0
        d = euclidean(e[a], e[b]).numpy()
        d_val = pair_distances(verifier.model, images, val, tta, dtype)
        threshold = choose_threshold(d_val, val.label, calibrate.criterion, calibrate.target_far)
        m, m_val = verification_metrics(d, y, threshold), verification_metrics(d_val, val.label, threshold)
        name = f"{'bf16' if dtype else 'fp32'}, {'with' if mirror else 'without'} the mirror pass"
        print(f"evaluation what-if, {name}{' (used)' if dtype is None and mirror == verifier.tta.flip else ''}: "
              f"embed {t:.2f} s = {len(pairs) / (t_decode + t):.0f} pairs/s with the decode above; validation AUC "
              f"{m_val['roc_auc']:.4f}, threshold ({calibrate.criterion}) {threshold:.4f} -> test accuracy "
              f"{m['accuracy']:.3f}, AUC {m['roc_auc']:.4f}; test distances differ from the used ones by "
              f"{np.abs(d - d_used).mean():.4f} on average, {np.abs(d - d_used).max():.4f} at most")


def batch_sweep(verifier, x: torch.Tensor, e32, sizes: tuple[int, ...] = (32, 64, 128, 256), rounds: int = 2) -> None:
    """The fp32 embedding of the images `x` at several batch sizes, alternating, best of `rounds` each (the
    verifier's BATCH is the one chosen), and whether each gives `e32`, the verifier's embeddings, bit for bit."""
    import numpy as np

    from pipeline.model import embed_all
    from pipeline.verifier import BATCH

    best, same = {}, {}
    for _ in range(rounds):
        for size in sizes:
            t0 = time.perf_counter()
            e = embed_all(verifier.fast, x, verifier.tta, size).numpy()
            best[size] = min(best.get(size, float("inf")), time.perf_counter() - t0)
            same[size] = bool(np.array_equal(e, e32))
    print(f"evaluation embed by batch size (fp32, best of {rounds}, alternating; the verifier uses {BATCH}): " + ", ".join(
        f"{size}: {best[size]:.2f} s{'' if same[size] else ' (other embeddings)'}" for size in sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path(os.environ.get("LFW_A_ARCHIVE", ROOT.parent / "shared/data/lfw-a.tar.gz")))
    parser.add_argument("--full-repro", action="store_true", help="also time `dvc repro -f` of the whole pipeline in a clean clone")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    p = params.train
    native = autocast_dtype(torch.device("cpu"), "auto") is not None
    used = autocast_dtype(torch.device("cpu"), p.precision)  # what the train stage runs in here
    used_name = "bf16" if used else "fp32"
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 native: {native}; train.precision {p.precision} -> the pipeline trains in {used_name}")
    if not native:
        print("bf16 figures skipped: this CPU runs no bf16 natively (AVX-512 BF16, AMX, ARM bf16), so the default "
              "train.precision (auto) trains in fp32 here and the fp32 figures below are the default's")

    model = Siamese.from_params(params).eval()
    with FlopCounterMode(display=False) as fc:
        model.embed(torch.zeros(1, 1, params.prepare.image_size, params.prepare.image_size))
    print(f"model: width {p.width}, stage_convs {p.stage_convs}, input {params.prepare.image_size}x{params.prepare.image_size}: "
          f"{fc.get_total_flops() / 1e6:.1f} MFLOPs forward per image, {sum(q.numel() for q in model.parameters()) / 1e6:.2f} M parameters")

    peaks = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))[:2 if native else 1]:
        rounds = training_vs_peak(params, dtype)
        report_training(name, rounds)
        peaks[name] = statistics.median(peak for peak, _, _ in rounds)

    if not args.archive.exists():
        print(f"no archive at {args.archive}: data, evaluation and repro figures skipped")
        return
    env = {**os.environ, "LFW_A_ARCHIVE": str(args.archive.resolve()), "FACEVERIFY_TRACKING": "off"}
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_dl, _ = timed([py, "-m", "pipeline.stages.download", "--params", str(ROOT / "params.yaml"), "--out", str(tmp / "lfw-a"),
                         "--report", str(tmp / "data.json")], ROOT, env)
        t_prep, _ = timed([py, "-m", "pipeline.stages.prepare", "--params", str(ROOT / "params.yaml"), "--data", str(tmp / "lfw-a"),
                           "--out", str(tmp / "prepared"), "--report", str(tmp / "prep.json")], ROOT, env)
        print(f"data: extract + verify {t_dl:.1f} s, decode + crop + resize 13,233 images {t_prep:.1f} s "
              f"(total {t_dl + t_prep:.1f} s, process start included)")

        model_path = ROOT / "models" / "model.pt"
        if model_path.exists():
            evaluation(model_path, tmp, env, fc.get_total_flops(), peaks, native)
        else:
            print(f"no {model_path} (run `dvc repro` first): evaluation and verification figures skipped")

        pairs_dir = tmp / "pairs"
        short = tmp / "params.yaml"
        import yaml
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["train"]["epochs"] = 1
        raw["pairs"]["n_train_pairs"] = min(raw["pairs"]["n_train_pairs"], 4000)
        short.write_text(yaml.safe_dump(raw))
        timed([py, "-m", "pipeline.stages.pairs", "--params", str(short), "--data", str(tmp / "lfw-a"),
               "--out", str(pairs_dir), "--report", str(tmp / "pairs.json")], ROOT, env)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        timed([py, "-m", "pipeline.stages.train", "--params", str(short), "--prepared", str(tmp / "prepared"), "--pairs", str(pairs_dir),
               "--model", str(tmp / "m.pt"), "--metrics", str(tmp / "t.json"), "--plot", str(tmp / "t.csv"),
               "--resume", str(tmp / "r.pt")], ROOT, env)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"training peak RSS: {max(rss, before) / 1024:.0f} MiB (largest child process so far; 1 short epoch)")

    if args.full_repro:
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "repo"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            renv = {**env, "PATH": f"{Path(py).parent}{os.pathsep}{env['PATH']}"}
            renv.pop("FACEVERIFY_TRACKING")
            t0 = time.perf_counter()
            proc = subprocess.Popen(["dvc", "repro", "-f"], cwd=clone, env=renv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            stamps = []
            for line in proc.stdout:
                m = re.match(r"Running stage '(\w+)'", line)
                if m:
                    stamps.append((m.group(1), time.perf_counter()))
            proc.wait()
            end = time.perf_counter()
            if proc.returncode:
                raise SystemExit("dvc repro failed")
            print(f"full `dvc repro -f` in a clean clone: {end - t0:.0f} s ({(end - t0) / 60:.1f} min)")
            for (stage, t), nxt in zip(stamps, [s[1] for s in stamps[1:]] + [end]):
                print(f"  {stage:<10} {nxt - t:7.1f} s")


if __name__ == "__main__":
    main()
