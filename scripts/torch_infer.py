#!/usr/bin/env python3
"""PyTorch's FP32 eval-mode inference throughput, beside `qil bench --infer` (scripts/bench_infer.sh).

Usage: torch_infer.py MODEL BATCH RES STEPS [--repeat R] [--threads T] [--warmup W]
MODEL: resnet18 (torchvision, 1000 classes) | resnet20 (CIFAR-style, 10 classes, as qil's model zoo builds it)
Times STEPS forward passes of a fixed N(0, 1) batch under model.eval() and torch.inference_mode(), after W
untimed ones, R times, and prints the median images/s as the last line: '... img/s=<median>'.
Debian's python3-torch (a comparison tool, never a qil dependency). Speed only: the weights are random.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential()
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.sc(x))


def resnet20(num_classes=10):
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in [(16, 1), (32, 2), (64, 2)]:
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('model', choices=['resnet18', 'resnet20'])
    ap.add_argument('batch', type=int)
    ap.add_argument('res', type=int)
    ap.add_argument('steps', type=int)
    ap.add_argument('--repeat', type=int, default=1)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--warmup', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = resnet20() if a.model == 'resnet20' else torchvision.models.resnet18(num_classes=1000)
    model.eval()
    x = torch.randn(a.batch, 3, a.res, a.res)
    with torch.inference_mode():
        for _ in range(a.warmup):
            model(x)
        rates = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            for _ in range(a.steps):
                model(x)
            rates.append(a.batch * a.steps / (time.perf_counter() - t))
    print(f"{a.model} batch={a.batch} res={a.res} eval fp32 threads={torch.get_num_threads()} "
          f"runs={','.join(f'{r:.2f}' for r in rates)} img/s={statistics.median(rates):.2f}")


if __name__ == '__main__':
    main()
