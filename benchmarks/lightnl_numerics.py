"""LightNL's numerics: the paper's product (norm="none") against unit-length queries and keys
(norm="l2"), on the same data and seeds.

Part 1, a user's own small ImageFolder (``write_shapes_folder``: 4 classes of shapes and
textures, 40-200 px, mixed modes): for each norm and seed, the ``autonl run`` stages by
hand (search toward --target-macs, derive, fine-tune), then the fp32 ONNX model over every
validation image in onnxruntime: images with non-finite logits, accuracy, and the largest
|input| any LightNL block saw (torch hooks on the validation set), block by block for the
first seed. Part 2, the long-range task (``benchmarks/longrange_ablation.py``'s networks):
the local network, the LightNL one with each norm, same recipe and seeds, so that the
safe variant is seen to keep LightNL's benefit.

    python benchmarks/lightnl_numerics.py [--seeds 0 1 2] [--resolution 32] [--steps 150]
        [--batch-size 32] [--search-lr X] [--train-lr Y] [--longrange-steps 600]
        [--skip-shapes] [--skip-longrange] [--out DIR]

The defaults are the settings of the report this answers (``autonl run``'s old defaults:
32 px, 150 + 150 steps, learning rates set for batch 64); ``--resolution 48 --batch-size 16
--steps 300 --search-lr 0.0125 --train-lr 0.025`` is close to what ``autonl run`` now fits to
this folder.
"""
from __future__ import annotations

import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import harness
import numpy as np
import torch

from autonl.backends.loading import deploy_model, load_model_or_graph
from autonl.backends.onnx.export import export_onnx
from autonl.backends.onnx.runtime import run, session
from autonl.backends.torch.search.child import derive_child
from autonl.backends.torch.data import make_val_loader, num_classes
from autonl.backends.torch.lower.modules import LightNL
from autonl.backends.torch.search import SearchConfig, search
from autonl.backends.torch.data.shapes_folder import write_shapes_folder
from autonl.backends.torch.train import TrainConfig, train
from autonl.ir import AutonlError
from autonl.passes.sources import load_source, relaxed_graph

NORMS = ("none", "l2")


def lightnl_inputs(module: torch.nn.Module, loader) -> dict[str, float]:
    """The largest |input| of every LightNL block over ``loader`` (eval mode)."""
    seen: dict[str, float] = {}
    hooks = []
    for name, sub in module.named_modules():
        if isinstance(sub, LightNL):
            def hook(_m, inp, _out, name=name):
                v = inp[0].abs()
                seen[name] = max(seen.get(name, 0.0), float(v[torch.isfinite(v)].max()) if torch.isfinite(v).any()
                                 else float("inf"))
                if not torch.isfinite(v).all():
                    seen[name] = float("inf")
            hooks.append(sub.register_forward_hook(hook))
    with torch.no_grad():
        for x, _ in loader:
            module(x)
    for h in hooks:
        h.remove()
    return seen


def shapes_run(data: str, norm: str, seed: int, args, root: Path) -> dict:
    out = root / f"shapes-{norm}-seed{seed}"
    k = num_classes(data)
    graph = relaxed_graph("search-space", "autonl", args.resolution, None, k, norm)
    row = {"norm": norm, "seed": seed}
    watch = harness.Stopwatch()
    try:
        lrs = {"lr": args.search_lr} if args.search_lr else {}
        search(graph, SearchConfig(target_macs=args.target_macs, data=data, steps=args.steps,
                                   warmup_steps=max(1, args.steps // 5), batch_size=args.batch_size, seed=seed,
                                   cost_resolution=224, **lrs), out / "search", progress=False)
        derive_child(out / "search", out / "derived", None, False)
        lrs = {"lr": args.train_lr} if args.train_lr else {}
        result = train(load_source(str(out / "derived")), TrainConfig(
            data=data, steps=args.steps, seed=seed, eval_every=args.steps, batch_size=args.batch_size, **lrs),
            out / "train", init=str(out / "derived"), progress=False)
    except AutonlError as e:
        row.update(stopped=str(e), seconds=watch.seconds)
        return row
    model = load_model_or_graph(out / "train")
    val, _ = make_val_loader(data, args.resolution, 32, workers=0)
    sess = session(export_onnx(deploy_model(model)))
    bad = correct = n = 0
    for x, y in val:
        lo = run(sess, x.numpy())
        ok = np.isfinite(lo).all(1)
        bad += int((~ok).sum())
        correct += int(((lo.argmax(1) == y.numpy()) & ok).sum())
        n += len(y)
    inputs = lightnl_inputs(model.module, val)
    row.update(images=n, nonfinite=bad, acc=correct / n, torch_acc=result["val_acc"],
               blocks=sum(1 for node in model.graph if node.op == "lightnl"),
               max_input=max(inputs.values(), default=0.0), inputs=inputs, seconds=watch.seconds)
    return row


def longrange_runs(args, root: Path) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from longrange_ablation import spec

    from autonl.ir.presets import build_network
    rows = []
    for seed in args.seeds:
        for name, lightnl, norm in (("local", False, None), ("LightNL none", True, "none"), ("LightNL l2", True, "l2")):
            graph = build_network(spec(lightnl), resolution=32, num_classes=2)
            for node in graph:
                if node.op == "lightnl":
                    node.attrs["norm"] = norm
            cfg = TrainConfig(data="longrange", steps=args.longrange_steps, batch_size=64, optimizer="rmsprop", lr=0.01,
                              workers=1, seed=seed, eval_every=args.longrange_steps, log_every=50,
                              checkpoint_every=args.longrange_steps, train_size=20000, val_size=1000)
            watch = harness.Stopwatch()
            try:
                r = train(graph, cfg, root / f"lr-{name.replace(' ', '-')}-seed{seed}", progress=False)
                row = {"net": name, "seed": seed, "acc": r["val_acc"], "nonfinite": r.get("val_nonfinite", 0)}
            except AutonlError as e:
                row = {"net": name, "seed": seed, "acc": float("nan"), "stopped": str(e)}
            row["seconds"] = watch.seconds
            print(f"  longrange seed {seed} {name:<13} val acc {row['acc']:.3f}"
                  + (f"  STOPPED: {row['stopped']}" if "stopped" in row else "") + f"  ({row['seconds']:.0f} s)",
                  flush=True)
            rows.append(row)
    return rows


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    ap = harness.parser(__doc__, first="\n", threads=2, threads_help="torch CPU threads [default: %(default)s]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--steps", type=int, default=150, help="search steps and fine-tuning steps")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--target-macs", type=float, default=300e6)
    ap.add_argument("--search-lr", type=float, help="default: the search's (0.05, set for batch 64)")
    ap.add_argument("--train-lr", type=float, help="default: training's (0.1, set for batch 64)")
    ap.add_argument("--skip-shapes", action="store_true")
    ap.add_argument("--longrange-steps", type=int, default=600)
    ap.add_argument("--skip-longrange", action="store_true")
    ap.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()
    print("$ python " + shlex.join(sys.argv), flush=True)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        data = str(write_shapes_folder(root / "shapes", 60, 16, seed=0))
        print(f"shapes folder: 4 classes, 240 train / 64 val images; {args.resolution} px, {args.steps} search + "
              f"{args.steps} fine-tuning steps, batch {args.batch_size}, lr {args.search_lr or 'default'} / "
              f"{args.train_lr or 'default'}, target {args.target_macs / 1e6:.0f}M MACs", flush=True)
        rows = []
        for seed in ([] if args.skip_shapes else args.seeds):
            for norm in NORMS:
                row = shapes_run(data, norm, seed, args, root)
                rows.append(row)
                if "stopped" in row:
                    print(f"  seed {seed} norm={norm:<4} STOPPED: {row['stopped']}", flush=True)
                else:
                    print(f"  seed {seed} norm={norm:<4} non-finite {row['nonfinite']}/{row['images']}  "
                          f"acc {row['acc']:.3f}  LightNL blocks {row['blocks']}  max |LightNL input| "
                          f"{row['max_input']:.3g}  ({row['seconds']:.0f} s)", flush=True)
        first = [r for r in rows if r["seed"] == args.seeds[0] and "inputs" in r]
        for r in first:
            print(f"\nlargest |input| per LightNL block, norm={r['norm']}, seed {r['seed']}:")
            print("  " + "  ".join(f"{k}: {v:.3g}" for k, v in r["inputs"].items()))
        if not rows:
            print("(shapes part skipped)")
        print("\nshapes, fp32 ONNX over every validation image")
        print(f"{'norm':<6} {'runs':>4} {'stopped':>7} {'images non-finite':>18} {'runs with any':>13} "
              f"{'accuracy (mean ± sd)':>22}")
        for norm in NORMS:
            mine = [r for r in rows if r["norm"] == norm]
            done = [r for r in mine if "stopped" not in r]
            bad = sum(r["nonfinite"] for r in done)
            total = sum(r["images"] for r in done)
            print(f"{norm:<6} {len(mine):>4} {len(mine) - len(done):>7} {f'{bad}/{total} ({100 * bad / max(total, 1):.1f}%)':>18} "
                  f"{sum(1 for r in done if r['nonfinite']):>13} {mean_sd([r['acc'] for r in done]):>22}")
        if not args.skip_longrange:
            print(f"\nlongrange, {args.longrange_steps} steps, rmsprop lr 0.01, batch 64", flush=True)
            lr_rows = longrange_runs(args, root)
            print(f"\n{'network':<14} {'accuracy (mean ± sd)':>22} {'stopped':>8}")
            for name in ("local", "LightNL none", "LightNL l2"):
                mine = [r for r in lr_rows if r["net"] == name]
                print(f"{name:<14} {mean_sd([r['acc'] for r in mine]):>22} {sum('stopped' in r for r in mine):>8}")


if __name__ == "__main__":
    main()
