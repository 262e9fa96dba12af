#!/usr/bin/env python3
"""Agreement of integer inference with the fake-quantized float network, on a whole IDX test set.

Usage: int8_agreement.py CKPT [CKPT ...] [--data-dir DIR] [--qil PATH] [--threads T] [--limit N]
For each checkpoint: writes the t10k images of DIR (default Debian's Fashion-MNIST), normalized with the
network's own input_mean/input_std (read from `qil export`'s metadata), as a float32 .npy; runs `qil predict`
and `qil predict --int8` on it; prints a Markdown row: top-1 accuracy of each, the share of images whose top-1
is identical, and the largest and the 99.9th-percentile |Δlogit|. Needs numpy (Debian's python3-numpy); a
measurement tool, never a qil dependency.
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import tempfile

import numpy as np


def read_idx(path):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(folder, stem):
    for name in (stem, stem + '.gz'):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise SystemExit(f'int8_agreement: {stem}[.gz] not found in {folder}')


def metadata(qil, ckpt, tmp):
    out = os.path.join(tmp, 'meta.safetensors')
    subprocess.run([qil, 'export', ckpt, '--out', out], check=True, stdout=subprocess.DEVNULL)
    with open(out, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        return json.loads(f.read(n))['__metadata__']


def predict(qil, ckpt, x_path, y_path, threads, int8):
    cmd = [qil, 'predict', ckpt, '--input', x_path, '--output', y_path, '--batch', '250', '--threads', str(threads)]
    subprocess.run(cmd + (['--int8'] if int8 else []), check=True, stdout=subprocess.DEVNULL)
    return np.load(y_path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('checkpoints', nargs='+')
    ap.add_argument('--data-dir', default='/usr/share/datasets/fashion-mnist')
    ap.add_argument('--qil', default=os.path.join(os.path.dirname(__file__), '..', 'build', 'qil'))
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--limit', type=int, default=0, help='first N test images only (0 = all)')
    a = ap.parse_args()
    images = read_idx(find(a.data_dir, 't10k-images-idx3-ubyte')).astype(np.float32) / 255.0
    labels = read_idx(find(a.data_dir, 't10k-labels-idx1-ubyte')).astype(np.int64)
    if a.limit:
        images, labels = images[:a.limit], labels[:a.limit]
    print('| checkpoint | images | top-1 f32 | top-1 int8 | top-1 identical | max abs dlogit | 99.9th pct abs dlogit |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in a.checkpoints:
            meta = metadata(a.qil, ckpt, tmp)
            mean, std = json.loads(meta['input_mean']), json.loads(meta['input_std'])
            x = ((images[:, None, :, :] - mean[0]) / std[0]).astype('<f4')  # (N, 1, 28, 28)
            x_path = os.path.join(tmp, 'x.npy')
            np.save(x_path, np.ascontiguousarray(x))
            yf = predict(a.qil, ckpt, x_path, os.path.join(tmp, 'yf.npy'), a.threads, False)
            yi = predict(a.qil, ckpt, x_path, os.path.join(tmp, 'yi.npy'), a.threads, True)
            d = np.abs(yf.astype(np.float64) - yi).max(axis=1)
            same = (yf.argmax(1) == yi.argmax(1)).mean()
            print(f'| {ckpt} | {len(labels)} | {100 * (yf.argmax(1) == labels).mean():.2f} | '
                  f'{100 * (yi.argmax(1) == labels).mean():.2f} | {100 * same:.2f} % | {d.max():.3g} | '
                  f'{np.percentile(d, 99.9):.3g} |', flush=True)


if __name__ == '__main__':
    main()
