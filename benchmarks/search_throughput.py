"""Search throughput: images/s and step time of `autonl search`'s step on synthetic data.

Runs the search's own step (``autonl.backends.torch.search.search_step``: forward, the cost
term, backward, SGD on the weights and Adam on the thresholds) on the AutoNL search space
(``search-space`` preset, 1000 classes) with random images that live on the device, so that
data loading is not measured. Both phases are timed: warm-up (every option on, as the
search's first steps run) and search (the selected single path plus the cost term).

    python benchmarks/search_throughput.py [--resolution 224] [--batch 128] [--steps 20]
                                           [--device auto|cpu|cuda] [--json OUT.json]

On GPU the step runs under bf16 autocast, as `autonl search` does. The figures are medians of
per-step wall times after ``--skip`` untimed steps (CUDA is synchronised around each step).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from autonl.backends.torch.search import SearchConfig, make_optimizers, search_step
from autonl.backends.torch.supernet import Supernet
from autonl.backends.torch.train import pick_device
from autonl.ir import build_preset


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_phase(supernet, opts, x, y, warm: bool, cfg, steps: int, skip: int, device) -> dict:
    ce_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    times = []
    for i in range(skip + steps):
        sync(device)
        t0 = time.perf_counter()
        loss, _, macs, _ = search_step(supernet, supernet, opts, x, y, warm, cfg, ce_fn)
        sync(device)
        if i >= skip:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"step_ms": step * 1e3, "images_per_s": x.shape[0] / step, "loss": float(loss.detach()),
            "macs_selected_per_image": float(macs.detach()) / x.shape[0], "steps_timed": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip", type=int, default=5, help="untimed steps before timing each phase")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    device = pick_device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    graph = build_preset("search-space", resolution=args.resolution, batch=args.batch)
    supernet = Supernet(graph).to(device)
    cfg = SearchConfig(data="synthetic", target_macs=300e6, steps=10_000, warmup_steps=0,
                       batch_size=args.batch)
    opts = make_optimizers(supernet, cfg)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
              "torch": torch.__version__, "resolution": args.resolution, "batch": args.batch,
              "precision": "bf16 autocast" if device.type == "cuda" else "fp32"}
    for phase, warm in (("warm-up (all options on)", True), ("search (single path + cost)", False)):
        result[phase] = time_phase(supernet, opts, x, y, warm, cfg, args.steps, args.skip, device)
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30

    print(f"search step on {result['device']} ({result['precision']}), "
          f"{args.resolution}x{args.resolution}, batch {args.batch}, torch {torch.__version__}")
    print(f"{'phase':32s} {'step ms':>9s} {'images/s':>10s} {'MACs/image':>14s}")
    for phase in ("warm-up (all options on)", "search (single path + cost)"):
        r = result[phase]
        print(f"{phase:32s} {r['step_ms']:9.1f} {r['images_per_s']:10.0f} {r['macs_selected_per_image'] / 1e6:13.1f}M")
    if "peak_memory_gib" in result:
        print(f"peak GPU memory: {result['peak_memory_gib']:.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
