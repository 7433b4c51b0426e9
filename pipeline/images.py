"""Decoding and preprocessing of face images, shared by the prepare stage, scoring and serving."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline import lfw

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
