#!/usr/bin/python3
"""The reference input pipeline for `qil bench-data`: PIL + torchvision on the same folder.

torchvision.datasets.ImageFolder(DIR/train) with RandomResizedCrop(size) + RandomHorizontalFlip + ToTensor +
Normalize (or, with --eval, Resize(size*256/224) + CenterCrop(size)), batched by a DataLoader with
num_workers=N (N = 1 runs a plain loop in this process: one decode thread, no worker process).
Prints the same last line as `qil bench-data`: img/s=<median over repeats>. A benchmark tool only.

Usage: scripts/bench_pil.py DIR [--image-size 224] [--workers 1] [--batch 32] [--batches 10] [--repeat 3]
"""
import argparse
import itertools
import os
import time

import torch
import torchvision.transforms as T
from torchvision.datasets import ImageFolder


def endless(loader):
    while True:
        for batch in loader:
            yield batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--eval", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)  # the tensor ops of ToTensor/Normalize stay on the decode thread
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if a.eval:
        tf = T.Compose([T.Resize((a.image_size * 256 + 112) // 224), T.CenterCrop(a.image_size), T.ToTensor(), norm])
    else:
        tf = T.Compose([T.RandomResizedCrop(a.image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    ds = ImageFolder(os.path.join(a.dir, "train"), transform=tf)
    workers = 0 if a.workers == 1 else a.workers
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=workers, **extra)
    it = endless(loader)
    for _ in range(a.warmup):
        next(it)
    rates = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in itertools.islice(it, a.batches))
        rates.append(n / (time.perf_counter() - t0))
    rates.sort()
    total = rates[len(rates) // 2]
    print("%s: %d images, %d classes; PIL %s, %d decode threads" % (a.dir, len(ds), len(ds.classes),
          "eval" if a.eval else "train", a.workers))
    print("per decode thread: %.2f img/s" % (total / a.workers))
    print("img/s=%.2f" % total)


if __name__ == "__main__":
    main()
