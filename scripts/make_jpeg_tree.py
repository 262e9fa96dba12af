#!/usr/bin/python3
"""Writes an ImageNet-style tree of JPEGs for input-pipeline benchmarks and smoke training runs.

DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG, about 500x375 (ImageNet's typical size), quality 90.
Each image is smooth colour gradients and blobs plus pixel noise, so files come out at a realistic
100-150 KB (flat synthetic images compress to a few KB and decode unrealistically fast). The content depends
on the class (a base hue and a stripe orientation per class), so a network can learn it; everything else
is random. Not a data set for accuracy claims. Needs Pillow and NumPy (a benchmark tool, never a product
dependency).

Usage: scripts/make_jpeg_tree.py DIR [--classes 10] [--per-class 50] [--val-per-class 2] [--seed 0]
"""
import argparse
import colorsys
import os

import numpy as np
from PIL import Image


def make_image(rng, cls, nclasses, w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    # Class signal: a base hue and stripes at a class-specific angle (survive random crops and flips).
    hue = cls / nclasses
    base = np.array(colorsys.hsv_to_rgb(hue, 0.6, 0.75), np.float32) * 255.0
    angle = np.pi * cls / nclasses
    period = rng.uniform(25, 45)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period + phase)
    img = base[None, None, :] * (0.75 + 0.25 * stripes[..., None])
    # Random smooth structure: a gradient and a few soft blobs of random colours.
    gx, gy = rng.uniform(-60, 60, size=(2, 3))
    img += (x[..., None] / w - 0.5) * gx + (y[..., None] / h - 0.5) * gy
    for _ in range(rng.integers(3, 7)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 120)
        col = rng.uniform(-70, 70, size=3)
        img += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None] * col
    # Texture: per-pixel noise, which is what makes JPEG files (and their decoding) realistically heavy.
    img += rng.normal(0, 24, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--val-per-class", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", type=int, default=90)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    total = 0
    for split, count in (("train", a.per_class), ("val", a.val_per_class)):
        for c in range(a.classes):
            cdir = os.path.join(a.dir, split, "n%08d" % c)
            os.makedirs(cdir, exist_ok=True)
            for i in range(count):
                # ImageNet's typical shapes: mostly 500x375 landscape, some portrait.
                w, h = (500, 375) if rng.uniform() < 0.8 else (375, 500)
                path = os.path.join(cdir, "%s_%05d.JPEG" % (split, i))
                make_image(rng, c, a.classes, w, h).save(path, quality=a.quality)
                total += os.path.getsize(path)
    n = a.classes * (a.per_class + a.val_per_class)
    print("%s: %d JPEGs, %d classes, mean %.0f KB" % (a.dir, n, a.classes, total / max(n, 1) / 1024))


if __name__ == "__main__":
    main()
