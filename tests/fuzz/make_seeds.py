#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/seed-*): one small valid file of
each format, written by hand from the layouts in docs/checkpoints.md, the safetensors and NumPy format
descriptions and the IDX description, so that fuzzing starts from inputs that pass the first checks.
Standard library only. Usage: tests/fuzz/make_seeds.py"""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def checkpoint():
    def section(name, typ, payload):
        h = struct.pack("<I", len(name)) + name + struct.pack("<BQ", typ, len(payload))
        return h + struct.pack("<I", zlib.crc32(payload, zlib.crc32(h))) + payload

    w = struct.pack("<BBBB", 0, 0, 2, 0) + struct.pack("<qq", 2, 3) + struct.pack("<6f", *range(6))
    b = struct.pack("<BBBB", 4, 0, 1, 0) + struct.pack("<q", 2) + struct.pack("<2i", 7, -1)
    secs = [section(b"fc.weight", 1, w), section(b"steps", 1, b), section(b"note", 2, b"text"),
            section(b"meta", 3, b'{"model": "lenet"}')]
    head = b"QILCKPT\0" + struct.pack("<II", 1, len(secs))
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(secs)


def safetensors():
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]},
              "n": {"dtype": "I64", "shape": [], "data_offsets": [20, 28]}}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    data = struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<2H", 0x3F80, 0xC000) + struct.pack("<q", 5)
    return struct.pack("<Q", len(h)) + h + data


def npy():
    d = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
    d += b" " * (-(10 + len(d) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d + struct.pack("<6f", *range(6))


def idx():
    images = struct.pack(">IIII", 0x803, 3, 2, 2) + bytes(range(12))
    labels = struct.pack(">II", 0x801, 3) + bytes([0, 1, 2])
    # The target cuts the input after two little-endian bytes giving the images file's length.
    raw = struct.pack("<H", len(images)) + images + labels
    gz = zlib.compressobj(wbits=31)
    gzi = gz.compress(images) + gz.flush()
    return raw, struct.pack("<H", len(gzi)) + gzi + labels


def cifar():
    # The target's first byte picks the format: even = CIFAR-10 (label + 3072 pixels), odd = CIFAR-100 (coarse,
    # fine, 3072 pixels). Two records each.
    px = bytes(i % 251 for i in range(3072))
    c10 = b"\x00" + bytes([3]) + px + bytes([9]) + px
    c100 = b"\x01" + bytes([4, 42]) + px + bytes([19, 99]) + px
    return c10, c100


def png():
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"".join(bytes([x * 40, y * 60, 128]) for x in range(4)) for y in range(3))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def config():
    return (b'model = "resnet20"\nstages = ["32", "w4a4", "2"]\nstage_epochs = [2, 1, 1]\nlr = 0.05\n'
            b'schedule = "multistep"\nmilestones = [1.5]\nseed = 3\nthreads = 2\n'
            b'[layers."layer1.0.conv1"]\nwbits = 3\nabits = 4\n[layers.fc]\nexclude = true\n')


def main():
    put("checkpoint", "seed-small", checkpoint())
    put("safetensors", "seed-small", safetensors())
    put("npy", "seed-2x3", npy())
    raw, gz = idx()
    put("idx", "seed-raw", raw)
    put("idx", "seed-gz", gz)
    c10, c100 = cifar()
    put("cifar", "seed-cifar10", c10)
    put("cifar", "seed-cifar100", c100)
    put("image", "seed-4x3.png", png())
    put("config", "seed-train.toml", config())


if __name__ == "__main__":
    main()
