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
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline import files, lfw, tracking
from pipeline.params import flatten, load_params

log = logging.getLogger("pipeline.prepare")

SOURCE_SIZE = 250  # side of an LFW-a image; the crop box is given in these coordinates


class ImageError(ValueError):
    """An image that cannot be used; the message names the file."""


def preprocess(img: Image.Image, crop: list[int] | tuple[int, ...], size: int) -> np.ndarray:
    """Grayscale, crop the face box (scaled to the image's size), resize to (size, size) uint8."""
    gray = img.convert("L")
    sx, sy = gray.width / SOURCE_SIZE, gray.height / SOURCE_SIZE
    box = (crop[0] * sx, crop[1] * sy, crop[2] * sx, crop[3] * sy)
    return np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)


def load_image(path: str | Path, crop, size: int, strict: bool = True) -> np.ndarray:
    """Decode and preprocess one file; with `strict`, insist on LFW-a's 250x250 grayscale."""
    try:
        with Image.open(path) as img:
            img.load()
            if strict and (img.size != (SOURCE_SIZE, SOURCE_SIZE) or img.mode != "L"):
                raise ImageError(f"{path}: expected a {SOURCE_SIZE}x{SOURCE_SIZE} grayscale (mode L) image, got {img.size[0]}x{img.size[1]} mode {img.mode}")
            return preprocess(img, crop, size)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None


def list_images(data: Path) -> list[tuple[str, int]]:
    """(name, number) of every image under DATA/lfw2, sorted."""
    out = []
    for path in sorted((data / lfw.IMAGE_DIR).glob("*/*")):
        stem = path.stem
        name, _, number = stem.rpartition("_")
        if path.suffix != ".jpg" or name != path.parent.name or not number.isdigit():
            raise ImageError(f"{path}: not an LFW image name (<name>/<name>_NNNN.jpg)")
        out.append((name, int(number)))
    if not out:
        raise ImageError(f"{data / lfw.IMAGE_DIR}: no images found")
    return out


def prepare(data: Path, crop, size: int, workers: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    index = list_images(data)
    paths = [data / lfw.image_relpath(n, i) for n, i in index]
    work = partial(load_image, crop=crop, size=size)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        arrays = list(tqdm(pool.map(work, paths, chunksize=256), total=len(paths), desc="prepare", unit="img", disable=None))
    return np.stack(arrays), index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/lfw-a"))
    parser.add_argument("--out", type=Path, default=Path("data/prepared"))
    parser.add_argument("--report", type=Path, default=Path("metrics/prepare.json"))
    args = parser.parse_args(argv)
    tracking.setup_logging()
    with tracking.stage_run("prepare", args.params) as rec:
        try:
            params = load_params(args.params)
            p = params.prepare
            rec.params({"seed": params.seed, **flatten(p, "prepare.")})
            images, index = prepare(args.data, p.crop, p.image_size, workers=os.cpu_count() or 1)
        except ValueError as e:
            log.error("%s", e)
            rec.fail()
            return 1
        with files.atomic_dir(args.out) as tmp:
            np.save(tmp / "images.npy", images)
            (tmp / "index.tsv").write_text("".join(f"{n}\t{i}\n" for n, i in index))
        report = {"images": len(index), "people": len({n for n, _ in index}), "size": p.image_size, "all_decoded_250x250_gray": True}
        tracking.write_metrics(args.report, report, rec)
    log.info("prepared %d images into %s (%.1f MB)", len(index), args.out, images.nbytes / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
