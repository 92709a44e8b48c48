"""LightNL ablation on the synthetic long-range task: the same small network with and without.

The task (built-in dataset ``longrange``): two white-framed key patches at least half the
image apart, plus two black-framed distractors; the label says whether the keys show the
same pattern. Both networks have the same stem, blocks and head; the LightNL one adds a
LightNL block (r=0.25) after each repeat of the second stage, at 16x16, where products
between all positions are cheap. The local network's receptive field (19 px at 32 px
input: stem 3 px, five depthwise 3x3 convolutions) cannot hold both keys for most
images, and a globally pooled local feature cannot tell "same" from "different".

For every seed both networks are trained with one configuration (same data, same order,
same steps); the table gives the validation accuracy of each after the last step.

    python benchmarks/longrange_ablation.py [--seeds 0 1 2] [--steps 600] [--resolution 32] [--out DIR]
"""
from __future__ import annotations

import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import harness
import torch

from autonl.backends.torch.train import TrainConfig, train
from autonl.ir.presets import NetworkSpec, build_network
from autonl.passes import analyze_cost

BLOCKS = ("ir_r1_k3_s1_e1_c16",        # 16x16 at 32 px input
          "ir_r2_k3_s1_e3_c24",        # 16x16: the LightNL variant adds _nl0.25 here
          "ir_r1_k3_s2_e3_c32")        # 8x8
LIGHTNL_AT = 1                          # index into BLOCKS


def spec(lightnl: bool) -> NetworkSpec:
    blocks = tuple(b + "_nl0.25" if lightnl and i == LIGHTNL_AT else b for i, b in enumerate(BLOCKS))
    return NetworkSpec("lr_lightnl" if lightnl else "lr_local", blocks, act="silu", stem=16, head=128,
                       dropout=0.0, bn_eps=1e-3, bn_momentum=0.01)


def count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def main() -> None:
    ap = harness.parser(__doc__, first="\n", threads=1, threads_help="torch CPU threads")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--optimizer", choices=("rmsprop", "sgd"), default="rmsprop",
                    help="rmsprop: LightNL leaves the chance plateau within a few hundred steps; "
                         "with SGD (lr 0.1) only on some seeds within 1000 steps")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-size", type=int, default=20000, help="synthetic training images (rendered on the fly)")
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1, help="data loading processes")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()

    print("$ python " + shlex.join(sys.argv))
    torch.set_num_threads(args.threads)
    nets = {}
    for lightnl in (False, True):
        s = spec(lightnl)
        graph = build_network(s, resolution=args.resolution, num_classes=2)
        cost = analyze_cost(graph)
        nets[s.name] = (graph, cost)
        print(f"{s.name:<11} {count(cost.macs):>7} MACs  {count(cost.params):>6} params  "
              f"(LightNL {count(cost.lightnl_macs)} MACs)  blocks: {' '.join(s.blocks)}")
    print(f"longrange {args.resolution}px, {args.train_size} train / {args.val_size} val images, "
          f"{args.steps} steps, batch {args.batch_size}, {args.optimizer} lr {args.lr}, "
          f"{args.threads} thread(s)\n")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        rows, whole = [], harness.Stopwatch()
        for seed in args.seeds:
            accs = []
            for name, (graph, _) in nets.items():
                cfg = TrainConfig(data="longrange", steps=args.steps, batch_size=args.batch_size,
                                  optimizer=args.optimizer, lr=args.lr,
                                  workers=args.workers, seed=seed, device=args.device, eval_every=args.steps,
                                  log_every=50, checkpoint_every=args.steps, train_size=args.train_size,
                                  val_size=args.val_size)
                watch = harness.Stopwatch()
                result = train(graph, cfg, root / f"seed{seed}-{name}", progress=False)
                accs.append(result["val_acc"])
                print(f"  seed {seed} {name:<11} val acc {result['val_acc']:.3f}  "
                      f"val loss {result['val_loss']:.3f}  ({watch.seconds:.0f} s)", flush=True)
            rows.append((seed, *accs))
        wall = whole.seconds

    local_cost, light_cost = (cost for _, cost in nets.values())
    head = f"{'seed':>6}  {'local':>7}  {'LightNL':>7}  {'diff':>7}"
    print("\nvalidation accuracy after the last step\n" + head + "\n" + "-" * len(head))
    for seed, a, b in rows:
        print(f"{seed:>6}  {a:>7.3f}  {b:>7.3f}  {b - a:>+7.3f}")
    if len(rows) > 1:
        ma, mb = (statistics.mean(r[i] for r in rows) for i in (1, 2))
        print("-" * len(head) + f"\n{'mean':>6}  {ma:>7.3f}  {mb:>7.3f}  {mb - ma:>+7.3f}")
    print(f"\nMACs   local {count(local_cost.macs)}  LightNL {count(light_cost.macs)}  "
          f"(+{100 * (light_cost.macs / local_cost.macs - 1):.1f}%)")
    print(f"params local {count(local_cost.params)}  LightNL {count(light_cost.params)}  "
          f"(+{100 * (light_cost.params / local_cost.params - 1):.1f}%)")
    print(f"wall time {wall / 60:.1f} min" + (f"; runs kept in {args.out}" if args.out else ""))


if __name__ == "__main__":
    main()
