#!/usr/bin/python3
"""Cross-check `qil predict` on a torchvision network against PyTorch itself (a comparison tool, like
scripts/bench.sh's PyTorch side: needs Debian's python3-torch and python3-torchvision; never a qil dependency).

Builds a torchvision model with random weights (seeded) and random BatchNorm statistics, writes its state_dict
as safetensors (F32, F16 or BF16, with PyTorch's num_batches_tracked counters) with a small writer of its own,
runs a random batch through it in eval mode, runs the same batch through `qil predict --model NAME FILE`, and
prints the largest logit difference. For F16/BF16 files PyTorch runs the weights rounded the same way.

Usage: /usr/bin/python3 scripts/check_torchvision.py [--model resnet18] [--dtype F32|F16|BF16] [--qil build/qil]
"""
import argparse, json, os, struct, subprocess, sys, tempfile

import numpy as np
import torch
import torchvision


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype in (torch.bfloat16,) else t.numpy().tobytes()
        dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}[t.dtype]
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18", choices=["resnet18", "resnet34", "alexnet"])
    ap.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--qil", default=os.path.join(os.path.dirname(__file__), "..", "build", "qil"))
    a = ap.parse_args()
    torch.manual_seed(0)
    m = getattr(torchvision.models, a.model)()
    for mod in m.modules():  # non-trivial running statistics, so that eval-mode BatchNorm matters
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    m.eval()
    cast = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[a.dtype]
    sd = {k: (v.to(cast) if v.is_floating_point() else v) for k, v in m.state_dict().items()}
    m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})  # same rounding
    x = torch.randn(a.batch, 3, a.image_size, a.image_size)
    with torch.no_grad():
        want = m(x).numpy()
    with tempfile.TemporaryDirectory() as d:
        w, xi, yo = (os.path.join(d, n) for n in ("w.safetensors", "x.npy", "y.npy"))
        write_safetensors(w, sd)
        np.save(xi, x.numpy())
        subprocess.run([a.qil, "predict", w, "--model", a.model, "--image-size", str(a.image_size), "--input", xi,
                        "--output", yo], check=True)
        got = np.load(yo)
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    same_top1 = int((got.argmax(1) == want.argmax(1)).sum())
    print(f"{a.model} {a.dtype}: max |qil - PyTorch| = {diff:.3g} (logits up to {scale:.3g}); "
          f"top-1 equal on {same_top1}/{a.batch}")
    return 0 if diff <= 1e-4 * max(scale, 1.0) and same_top1 == a.batch else 1


if __name__ == "__main__":
    sys.exit(main())
