"""Stage `prepare`: decode, check, crop and resize every LFW-a image once into one compact array.

Reads:  DATA/lfw2/<name>/<name>_NNNN.jpg; params `prepare.*`.
Writes: OUT/images.npy, uint8 (N, size, size), rows in sorted path order; OUT/index.tsv, the
        `name<TAB>number` of each row; REPORT (metrics/prepare.json): counts and checks.

Every image must decode and be 250x250 8-bit grayscale; the first that is not stops the stage
with an error naming the file. No training epoch ever decodes a JPEG.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import files, lfw
from pipeline.record import runner
from pipeline.images import list_images, load_image
from pipeline.params import flatten, load_params

log = logging.getLogger("pipeline.stages.prepare")


def prepare(data: Path, crop, size: int, workers: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    index = list_images(data)
    paths = [data / lfw.image_relpath(n, i) for n, i in index]
    work = partial(load_image, crop=crop, size=size)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        arrays = list(tqdm(pool.map(work, paths, chunksize=256), total=len(paths), desc="prepare", unit="img", disable=None))
    return np.stack(arrays), index


def parser() -> argparse.ArgumentParser:
    return runner.parser(__doc__, "data", "out", "report")


def main(argv: list[str] | None = None) -> int:
    return runner.main("prepare", parser(), run, argv)


def run(args, rec) -> None:
    params = load_params(args.params)
    p = params.prepare
    rec.params({"seed": params.seed, **flatten(p, "prepare.")})
    images, index = prepare(args.data, p.crop, p.image_size, workers=os.cpu_count() or 1)
    with files.atomic_dir(args.out) as tmp:
        np.save(tmp / "images.npy", images)
        (tmp / "index.tsv").write_text("".join(f"{n}\t{i}\n" for n, i in index))
    report = {"images": len(index), "people": len({n for n, _ in index}), "size": p.image_size, "all_decoded_250x250_gray": True}
    files.write_metrics(args.report, report, rec)
    log.info("prepared %d images into %s (%.1f MB)", len(index), args.out, images.nbytes / 1e6)


if __name__ == "__main__":
    sys.exit(main())
