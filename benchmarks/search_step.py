"""Step time and peak memory of the single-path supernet against the alternatives.

Three networks over the AutoNL search space, each timed (forward + backward + SGD step) in
its own process so that peak memory is its own:

* ``single-path``: the supernet `autonl search` trains (superkernels, threshold gates);
* ``largest-child``: the discrete network with every option at its dearest (kernel 5,
  expansion 6, no skip, LightNL everywhere with ratio 1/4 and stride 1);
* ``multi-path``: a DARTS-style supernet of the same space that computes every option of
  every block as its own branch and sums them weighted by softmax(alpha).

    python benchmarks/search_step.py [--resolution 224] [--batch 8] [--steps 3] [--rounds 3] [--channels-last]
                                     [--device cpu|cuda]

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated``; on CPU, the growth of the
process's peak resident set during the timed steps over its size before the first step.
Goals: single-path at most 1.15x the largest child's time (1.3x on GPU) and 1.25x its memory,
multi-path at least 3x single-path's time.
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys

import harness
import torch
from torch import nn

from autonl.backends.latency.timing import median_of_calls
from autonl.ir import Graph, Node, build_preset, choice_space
from autonl.passes.derive import Derive


def largest_decisions(graph: Graph) -> dict:
    dear = {"k": max, "e": max, "r": max, "s": min}
    out = {}
    for node, attrs in choice_space(graph).items():
        out[node] = {a: (False if a == "skip" else True if a == "insert" else dear[a](c.options))
                     for a, c in attrs.items()}
    return out


class MixedOp(nn.Module):
    """DARTS: every option as its own module, outputs summed with softmax(alpha) weights."""

    def __init__(self, branches: list[nn.Module], identity: bool, zero: bool):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.identity, self.zero = identity, zero
        self.alpha = nn.Parameter(torch.zeros(len(branches) + int(identity or zero)))

    def forward(self, x):
        w = torch.softmax(self.alpha, 0)
        out = sum(w[i] * b(x) for i, b in enumerate(self.branches))
        if self.identity:
            out = out + w[-1] * x
        return out  # the zero option (a skipped block) adds nothing


def multipath(graph: Graph) -> nn.Module:
    from autonl.backends.torch.lower import modules as M
    from autonl.backends.torch.lower import LoweringContext, lower_graph, torch_lowering
    from autonl.ir.ops import lightnl_order, se_act

    def mixed_mbconv(ctx, node: Node, args):
        a = ctx.attrs(node)
        cin = ctx.in_type(node).shape[1]
        ks = a["k"].options if "k" in node.choices() else (a["k"],)
        es = a["e"].options if "e" in node.choices() else (a["e"],)
        branches = [M.MBConv(cin, a["out"], e, k, a["s"], a["se"], a["act"], a["eps"], a["momentum"],
                             se_act(a), a["se_gate"])
                    for k, e in itertools.product(ks, es)]
        return ctx.module(node, MixedOp(branches, False, "skip" in node.choices()), args)

    def mixed_lightnl(ctx, node: Node, args):
        a = ctx.attrs(node)
        t = ctx.in_type(node)
        rs = a["r"].options if "r" in node.choices() else (a["r"],)
        ss = a["s"].options if "s" in node.choices() else (a["s"],)
        branches = [M.LightNL(t.shape[1], r, s, lightnl_order(t, r, s), a["eps"], a["momentum"])
                    for r, s in itertools.product(rs, ss)]
        return ctx.module(node, MixedOp(branches, "insert" in node.choices(), False), args)

    def pick(node: Node):
        if node.relaxed:
            return {"mbconv": mixed_mbconv, "lightnl": mixed_lightnl}[node.op]
        return torch_lowering(node.op)

    return lower_graph(graph, LoweringContext(graph), pick)


def build(kind: str, resolution: int, classes: int) -> nn.Module:
    space = build_preset("search-space", resolution=resolution, num_classes=classes)
    if kind == "single-path":
        from autonl.backends.torch.search.supernet import Supernet
        return Supernet(space)
    if kind == "largest-child":
        from autonl.backends.torch.lower import to_torch
        return to_torch(Derive(largest_decisions(space))(space).graph)
    return multipath(space)


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(kind: str, resolution: int, batch: int, steps: int, device: str, channels_last: bool = False) -> dict:
    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = build(kind, resolution, 1000).to(device, memory_format=memory).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(memory_format=memory)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        if kind == "single-path":
            loss = loss + 1e-10 * model.cost()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    base = rss_now()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()

    def synced_step():
        step()
        if device == "cuda":
            torch.cuda.synchronize()

    # one warm-up step (allocator, kernels), then each step timed to its end on the device
    step_ms = median_of_calls({kind: synced_step}, rounds=1, calls=steps, warmup=1)[kind]
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"kind": kind, "step_s": step_ms / 1e3, "peak_bytes": peak,
            "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = harness.parser(__doc__, first="\n")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the three processes (medians)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--channels-last", action="store_true", help="every network in channels-last memory format")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one kind in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.resolution, args.batch, args.steps, args.device,
                                 args.channels_last)))
        return
    print(f"search space at {args.resolution}x{args.resolution}, batch {args.batch}, {args.steps} timed steps x "
          f"{args.rounds} alternating rounds (medians), {'channels-last' if args.channels_last else 'contiguous'}, "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    runs: dict[str, list[dict]] = {}
    for _round in range(args.rounds):    # alternating rounds: drift on a shared machine hits every kind alike
        for kind in ("single-path", "largest-child", "multi-path"):
            out = subprocess.run([sys.executable, __file__, "--one", kind, "--resolution", str(args.resolution),
                                  "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device,
                                  *(["--channels-last"] if args.channels_last else [])],
                                 capture_output=True, text=True, check=True)
            runs.setdefault(kind, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = {kind: {"kind": kind, "step_s": statistics.median(r["step_s"] for r in rs),
                   "peak_bytes": statistics.median(r["peak_bytes"] for r in rs), "params": rs[0]["params"]}
            for kind, rs in runs.items()}
    print(f"{'network':<14} {'step (s)':>9} {'images/s':>9} {'peak MiB':>9} {'params':>10}")
    for kind, r in rows.items():
        print(f"{kind:<14} {r['step_s']:>9.3f} {args.batch / r['step_s']:>9.1f} {r['peak_bytes'] / 2**20:>9.0f} "
              f"{r['params'] / 1e6:>9.2f}M")
    sp, child, mp = rows["single-path"], rows["largest-child"], rows["multi-path"]
    print(f"single-path / largest child: time {sp['step_s'] / child['step_s']:.2f}x (goal <= 1.15x on CPU, 1.3x GPU), "
          f"memory {sp['peak_bytes'] / max(child['peak_bytes'], 1):.2f}x (goal <= 1.25x)")
    print(f"multi-path / single-path:    time {mp['step_s'] / sp['step_s']:.2f}x (goal >= 3x), "
          f"memory {mp['peak_bytes'] / max(sp['peak_bytes'], 1):.2f}x")


if __name__ == "__main__":
    main()
