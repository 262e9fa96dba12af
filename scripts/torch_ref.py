#!/usr/bin/env python3
"""The PyTorch side of qil's training-speed comparison (scripts/bench.sh, scripts/perf_report.py,
docs/performance.md): the same networks' training throughput with Debian's PyTorch (python3-torch 1.13, whose
convolutions run on oneDNN 2.6, as qil's do). A benchmark tool, never a dependency of qil; install PyTorch for
it with `apt-get install python3-torch python3-torchvision` and run it with Debian's /usr/bin/python3.

Usage: torch_ref.py MODEL BATCH RES STEPS [--qil BITS] [--bf16] [--channels-last] [--repeat R] [--threads T]
MODEL: resnet18 | resnet34 | alexnet | resnet20 (CIFAR-style, 10 classes)
Times STEPS full SGD steps (forward, backward, momentum update) after 2 warm-up steps, R times, and prints
the median images/s as the last line: '... img/s=<median>'. Only for speed comparisons: the QIL here is a
straightforward PyTorch rendering (STE rounding, c/d/gamma as parameters) with arbitrary initial intervals,
quantizing every Conv2d and Linear but the first conv and the last linear, as qil does by default — not a
numerical reference for qil's quantizer.
--bf16 runs the forward under torch.autocast('cpu', dtype=torch.bfloat16), as PyTorch users would.
"""
import argparse, statistics, time
import torch, torch.nn as nn, torch.nn.functional as F
import torchvision


def ste_round(x):
    return (x.round() - x).detach() + x


class QILWeight(nn.Module):
    def __init__(self, bits):
        super().__init__()
        self.q = 2 ** (bits - 1) - 1
        self.c = nn.Parameter(torch.tensor(0.05)); self.d = nn.Parameter(torch.tensor(0.05))
        self.g = nn.Parameter(torch.tensor(1.0))

    def forward(self, w):
        a = 0.5 / self.d; b = -0.5 * self.c / self.d + 0.5
        aw = w.abs()
        mid = (a * aw + b).clamp(min=1e-8) ** self.g * w.sign()
        t = torch.where(aw > self.c + self.d, w.sign(), torch.where(aw < self.c - self.d, torch.zeros_like(w), mid))
        return ste_round(t * self.q) / self.q


class QILAct(nn.Module):
    def __init__(self, bits):
        super().__init__()
        self.q = 2 ** bits - 1
        self.c = nn.Parameter(torch.tensor(1.0)); self.d = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        a = 0.5 / self.d; b = -0.5 * self.c / self.d + 0.5
        return ste_round((a * x + b).clamp(0, 1) * self.q) / self.q


class QConv(nn.Conv2d):
    def __init__(self, m, bits):
        super().__init__(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                         m.groups, m.bias is not None)
        self.wq, self.aq = QILWeight(bits), QILAct(bits)

    def forward(self, x):
        return F.conv2d(self.aq(x), self.wq(self.weight), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class QLinear(nn.Linear):
    def __init__(self, m, bits):
        super().__init__(m.in_features, m.out_features, m.bias is not None)
        self.wq, self.aq = QILWeight(bits), QILAct(bits)

    def forward(self, x):
        return F.linear(self.aq(x), self.wq(self.weight), self.bias)


def quantize(model, bits):
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    keep = {convs[0], linears[-1]}  # first conv and last linear stay full precision
    for name, m in layers:
        if name in keep:
            continue
        parent = model
        *path, last = name.split('.')
        for p in path:
            parent = getattr(parent, p)
        setattr(parent, last, QConv(m, bits) if isinstance(m, nn.Conv2d) else QLinear(m, bits))
    return model


def resnet20(num_classes=10):
    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); self.b2 = nn.BatchNorm2d(cout)
            self.sc = nn.Sequential()
            if stride != 1 or cin != cout:
                self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            return F.relu(self.b2(self.c2(y)) + self.sc(x))
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in [(16, 1), (32, 2), (64, 2)]:
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1)); cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('model'); ap.add_argument('batch', type=int); ap.add_argument('res', type=int)
    ap.add_argument('steps', type=int)
    ap.add_argument('--qil', type=int, default=None, metavar='BITS')
    ap.add_argument('--bf16', action='store_true'); ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--repeat', type=int, default=1); ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    model = resnet20() if a.model == 'resnet20' else getattr(torchvision.models, a.model)(num_classes=1000)
    if a.qil:
        model = quantize(model, a.qil)
    x = torch.randn(a.batch, 3, a.res, a.res); y = torch.randint(0, 10, (a.batch,))
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last); x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=a.bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward(); opt.step()
    for _ in range(2):
        step()
    rates = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        rates.append(a.batch * a.steps / (time.perf_counter() - t))
    print(f"{a.model} batch={a.batch} res={a.res} bits={a.qil or 32} bf16={a.bf16} cl={a.channels_last} "
          f"threads={torch.get_num_threads()} runs={','.join(f'{r:.2f}' for r in rates)} "
          f"img/s={statistics.median(rates):.2f}")


if __name__ == '__main__':
    main()
