#!/usr/bin/env python3
"""Predicted data-parallel step time and parallel efficiency of ResNet-18 and AlexNet on 8, 16 and 64 nodes over
10, 25 and 100 Gb/s links, from the inputs scripts/bench_cluster.sh measured on this machine (its JSON file).

Model (docs/cluster.md, "Scaling"):
  per-node batch   b = global batch / N (256 by default, the usual ImageNet recipe)
  compute          T_c(b), T_bwd(b): one process's step and backward time at batch b (qil bench on this
                   machine: a node is taken to compute like it, or --node-speedup times faster); a batch that
                   was not measured is scaled linearly from the nearest measured one
  all-reduce       T_ar = 2(N-1)/N * bytes * 8 / link + 2(N-1) * alpha   (ring: reduce-scatter + all-gather)
  step, end        T_c + T_ar
  step, overlap    T_c + max(0, T_ar - T_bwd)   (communication hidden up to the backward time; a lower bound)
  efficiency       one node's time for the whole global batch, at its best measured time per image, divided by
                   N x the step time (1.0 = perfect strong scaling)
  bound            network-bound when T_ar > T_c, compute-bound otherwise
  hours per epoch  floor(images / global batch) steps x the step time (with --epoch-images: the training set's
                   size, e.g. 1281167 for ImageNet-1k's train split)
Not a simulator: no congestion, no stragglers, no data loading, links at their nominal rate.
Python 3 standard library only. Usage: scripts/scaling_model.py [--input FILE] [--global-batch B]
[--latency-us A] [--node-speedup S] [--nodes LIST] [--links LIST] [--epoch-images N]
"""
import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent.parent


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", default=str(HERE / "docs/results/cluster-bench.json"),
                   help="the JSON file scripts/bench_cluster.sh wrote")
    p.add_argument("--global-batch", type=int, default=256, help="images per optimizer step over all nodes")
    p.add_argument("--latency-us", type=float, default=25.0,
                   help="alpha: latency of one message step of the ring, microseconds (default 25: MPI over "
                        "TCP/Ethernet; the shared-memory value measured here is printed beside it)")
    p.add_argument("--node-speedup", type=float, default=1.0,
                   help="how many times faster a node computes than this machine (1 = a node like this one)")
    p.add_argument("--nodes", default="8,16,64", help="comma-separated node counts")
    p.add_argument("--links", default="10,25,100", help="comma-separated link speeds, Gb/s")
    p.add_argument("--epoch-images", type=int, default=0,
                   help="images of one training epoch: adds hours per epoch (end / overlap) to every row")
    a = p.parse_args(argv)
    if a.epoch_images < 0:
        p.error(f"--epoch-images must be >= 0 (0 = no hours), got {a.epoch_images}")
    for name, v in (("--global-batch", a.global_batch), ("--latency-us", a.latency_us),
                    ("--node-speedup", a.node_speedup)):
        if v <= 0:
            p.error(f"{name} must be positive, got {v}")
    return a


def numbers(text, flag):
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"scaling_model.py: {flag} must be comma-separated numbers, got '{text}'")
    if not out or any(x <= 0 for x in out):
        sys.exit(f"scaling_model.py: {flag} must hold positive numbers, got '{text}'")
    return out


def load(path):
    try:
        doc = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"scaling_model.py: cannot read {path}: {e} (run scripts/bench_cluster.sh first)")
    for key in ("allreduce", "compute", "machine"):
        if key not in doc:
            sys.exit(f"scaling_model.py: {path} has no '{key}' (not written by scripts/bench_cluster.sh?)")
    return doc


def compute_at(doc, model, batch):
    """(step ms, backward ms, how) of one process at `batch`: measured, or scaled from the nearest batch."""
    rows = [c for c in doc["compute"] if c["model"] == model]
    if not rows:
        sys.exit(f"scaling_model.py: no compute measurement of {model} in the input")
    near = min(rows, key=lambda c: (abs(c["batch"] - batch), -c["batch"]))
    f = batch / near["batch"]
    how = "measured" if near["batch"] == batch else f"scaled from b{near['batch']}"
    return near["step_ms"] * f, near["backward_ms"] * f, how


def best_ms_per_image(doc, model):
    return min(c["step_ms"] / c["batch"] for c in doc["compute"] if c["model"] == model)


def ring_ms(nbytes, nodes, gbps, alpha_us):
    return (2 * (nodes - 1) / nodes * nbytes * 8 / (gbps * 1e9) + 2 * (nodes - 1) * alpha_us * 1e-6) * 1e3


def measured_lines(doc, model):
    """The all-reduce times measured here, with the bus bandwidth they imply."""
    out = []
    for a in doc["allreduce"]:
        if a["model"] != model:
            continue
        n = a["ranks"]
        bus = 2 * (n - 1) / n * a["bytes"] / (a["median_ms"] * 1e-3) / 1e9
        mode = a["allreduce"] + (f" {a['bucket_mb']:g} MiB buckets" if a["allreduce"] == "overlap" else "")
        out.append(f"- measured here: {n} ranks, {mode}: {a['median_ms']:.1f} ms "
                   f"({bus:.2f} GB/s bus bandwidth; 8-byte all-reduce {a['small_ms'] * 1e3:.0f} us)")
    return out


def table(doc, model, a, nodes, links):
    ar = [x for x in doc["allreduce"] if x["model"] == model]
    if not ar:
        sys.exit(f"scaling_model.py: no all-reduce measurement of {model} in the input")
    nbytes = ar[0]["bytes"]
    per_image = best_ms_per_image(doc, model) / a.node_speedup
    lines = [f"### {model}: {nbytes / 1e6:.1f} MB of gradients, global batch {a.global_batch}", ""]
    lines += measured_lines(doc, model) + [""]
    steps = a.epoch_images // a.global_batch
    hours = a.epoch_images > 0
    lines += ["| nodes | link Gb/s | batch/node | compute ms (backward) | all-reduce ms | step ms: end | "
              "overlap | efficiency: end | overlap | bound |" + (" hours/epoch: end | overlap |" if hours else ""),
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|" + ("---:|---:|" if hours else "")]
    for n in nodes:
        b = a.global_batch / n
        tc, tb, how = compute_at(doc, model, b)
        tc, tb = tc / a.node_speedup, tb / a.node_speedup
        for g in links:
            t_ar = ring_ms(nbytes, n, g, a.latency_us)
            end, over = tc + t_ar, tc + max(0.0, t_ar - tb)
            ideal = per_image * a.global_batch / n
            bound = "network" if t_ar > tc else "compute"
            mark = "" if how == "measured" else "*"
            lines.append(f"| {n:g} | {g:g} | {b:g}{mark} | {tc:.0f} ({tb:.0f}) | {t_ar:.1f} | {end:.0f} | {over:.0f} | "
                         f"{ideal / end:.2f} | {ideal / over:.2f} | {bound} ({t_ar / tc:.2f}) |"
                         + (f" {steps * end / 3.6e6:.2f} | {steps * over / 3.6e6:.2f} |" if hours else ""))
    return lines


def hours_summary(doc, a, models, nodes, links):
    """With --epoch-images: hours per epoch of every model, one row per node count, "end / overlap" per link."""
    steps = a.epoch_images // a.global_batch
    head = "| nodes | batch/node |" + "".join(f" {m} {g:g} Gb/s |" for m in models for g in links)
    lines = [f"### Hours per epoch ({a.epoch_images} images, {steps} steps of {a.global_batch}): end / overlap", "",
             head, "|---:|---:|" + "---:|" * (len(models) * len(links))]
    for n in nodes:
        row = f"| {n:g} | {a.global_batch / n:g} |"
        for m in models:
            nbytes = next(x["bytes"] for x in doc["allreduce"] if x["model"] == m)
            tc, tb, _ = compute_at(doc, m, a.global_batch / n)
            tc, tb = tc / a.node_speedup, tb / a.node_speedup
            for g in links:
                t_ar = ring_ms(nbytes, n, g, a.latency_us)
                row += f" {steps * (tc + t_ar) / 3.6e6:.2f} / {steps * (tc + max(0.0, t_ar - tb)) / 3.6e6:.2f} |"
        lines.append(row)
    return lines


def main(argv):
    a = parse_args(argv)
    nodes, links = numbers(a.nodes, "--nodes"), numbers(a.links, "--links")
    doc = load(a.input)
    m = doc["machine"]
    small = [x["small_ms"] for x in doc["allreduce"] if x["ranks"] == 2]
    alpha_here = min(small) / 2 * 1e3 if small else float("nan")  # 2 ranks: 2(N-1) = 2 message steps
    print(f"Inputs: {a.input}; measured on {m['cpu']} ({m['cores']} cores; {' '.join(m['flags'])}), load average "
          f"{doc.get('load_average_before', '?')} before and {doc.get('load_average_after', '?')} after.")
    print(f"alpha = {a.latency_us:g} us per message step (assumed; shared memory here: {alpha_here:.1f} us); "
          f"a node computes {a.node_speedup:g}x as fast as this machine. * = compute scaled linearly from the "
          f"nearest measured batch. bound: (all-reduce / compute) in brackets.")
    if a.epoch_images:
        print(f"An epoch: {a.epoch_images} images = {a.epoch_images // a.global_batch} steps of {a.global_batch}.")
    models = [m for m in ("resnet18", "alexnet") if any(x["model"] == m for x in doc["allreduce"])]
    for model in models:
        print()
        print("\n".join(table(doc, model, a, nodes, links)))
    if a.epoch_images:
        print()
        print("\n".join(hours_summary(doc, a, models, nodes, links)))


if __name__ == "__main__":
    main(sys.argv[1:])
