#!/usr/bin/env python3
"""An independent reader of `qil export --format int` (docs/export.md), in NumPy alone: rebuilds a LeNet or a
CIFAR ResNet from the file's integers, scales and metadata and runs a batch through it in eval mode. The test
tests/apps/test_int_reader.cpp compares its logits with `qil predict` on the checkpoint the file came from:
the proof that the format says everything.

Usage: int_reader.py EXPORT.safetensors X.npy OUT.npy      (X: float32 (N, C, H, W), already normalized)
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "I8": np.int8, "U8": np.uint8, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    t = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        t[name] = np.frombuffer(data[b:end], dtype=DTYPES[e["dtype"]]).reshape(e["shape"]).astype(np.float64)
    return t, meta


def round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


class Net:
    def __init__(self, t, meta):
        self.t, self.quant = t, json.loads(meta["quant_layers"])

    def weight(self, name):  # w_bar * s = code * scale for quantized weights, f32 otherwise
        if name + ".weight_int" in self.t:
            return self.t[name + ".weight_int"] * self.t[name + ".weight_scale"]
        return self.t[name + ".weight"]

    def quantize_input(self, name, x):  # the rule of the layer's quantizer family (docs/export.md)
        q = self.quant.get(name)
        if q is None or q["abits"] >= 32:
            return x
        p = lambda k: self.t[f"{name}.act_quant.{k}"]
        bits, signed, fam = q["abits"], q["signed_input"], q["quantizer"]
        if fam == "lsq":
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
            return round_half_away(np.clip(x / p("s"), lo, hi)) * p("s")
        levels = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        mag = np.abs(x) if signed else x
        if fam == "qil":
            u = np.clip((mag - p("c")) / (2 * p("d")) + 0.5, 0, 1)
            v = round_half_away(u * levels) / levels
        else:  # pact (alpha) and dorefa (alpha = 1)
            alpha = p("alpha") if fam == "pact" else 1.0
            v = round_half_away(np.clip(mag, 0, alpha) * levels / alpha) * alpha / levels
        return np.sign(x) * v if signed else v

    def conv(self, name, x, stride=1, pad=0):
        x = self.quantize_input(name, x)
        w = self.weight(name)
        o, c, kh, kw = w.shape
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        n, _, h, wd = x.shape
        oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
        cols = np.empty((n, c, kh, kw, oh, ow))
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
        y = np.einsum("nckluv,ockl->nouv", cols, w)
        if name + ".bias" in self.t:
            y += self.t[name + ".bias"][None, :, None, None]
        return y

    def linear(self, name, x):
        y = self.quantize_input(name, x) @ self.weight(name).T
        return y + self.t[name + ".bias"] if name + ".bias" in self.t else y

    def bn(self, name, x, eps=1e-5):  # eval mode: running statistics
        g = lambda k: self.t[f"{name}.{k}"][None, :, None, None]
        return (x - g("running_mean")) / np.sqrt(g("running_var") + eps) * g("weight") + g("bias")


def relu(x):
    return np.maximum(x, 0)


def max_pool(x, k, s, pad=0):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, x[:, :, i:i + s * oh:s, j:j + s * ow:s])
    return out


def lenet(net, x):
    has_bn = "bn1.weight" in net.t
    for i in (1, 2):
        x = net.conv(f"conv{i}", x, 1, 2)
        x = max_pool(relu(net.bn(f"bn{i}", x) if has_bn else x), 2, 2)
    x = relu(net.linear("fc1", x.reshape(len(x), -1)))
    return net.linear("fc2", x)


def cifar_resnet(net, x):
    x = relu(net.bn("bn1", net.conv("conv1", x, 1, 1)))
    for stage in (1, 2, 3):
        b = 0
        while True:
            p = f"layer{stage}.{b}"
            if p + ".bn1.weight" not in net.t:
                break
            stride = 2 if stage > 1 and b == 0 else 1
            h = relu(net.bn(p + ".bn1", net.conv(p + ".conv1", x, stride, 1)))
            h = net.bn(p + ".bn2", net.conv(p + ".conv2", h, 1, 1))
            if p + ".downsample.1.weight" in net.t:  # 1x1 conv + BN projection
                x = net.bn(p + ".downsample.1", net.conv(p + ".downsample.0", x, stride, 0))
            x = relu(h + x)
            b += 1
    return net.linear("fc", x.mean(axis=(2, 3)))


def main(path, x_path, out_path):
    t, meta = read_safetensors(path)
    assert meta.get("format") == "qil-export-int-v1", f"{path}: not an int export ({meta.get('format')})"
    net = Net(t, meta)
    x = np.load(x_path).astype(np.float64)
    model = meta["model"]
    if model in ("lenet", "lenet-nobn"):
        y = lenet(net, x)
    elif model in ("resnet20", "resnet32", "resnet56"):
        y = cifar_resnet(net, x)
    else:
        sys.exit(f"int_reader: model {model} is not one this reader knows")
    np.save(out_path, y.astype(np.float32))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
