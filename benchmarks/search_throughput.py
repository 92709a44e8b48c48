"""Search throughput: images/s and step time of `autonl search`'s step on synthetic data.

Runs the search's own step (``autonl.backends.torch.search.search_step``: forward, the cost
term, backward, SGD on the weights and Adam on the thresholds) on the AutoNL search space
(``search-space`` preset, 1000 classes) with random images that live on the device, so that
data loading is not measured. Both phases are timed: warm-up (every option on, as the
search's first steps run) and search (the selected single path plus the cost term).

    python benchmarks/search_throughput.py [--resolution 224] [--batch 128] [--steps 20]
                                           [--device auto|cpu|cuda] [--channels-last] [--compile]
                                           [--epochs 8 --warmup-epochs 5 --images 1281167] [--json OUT.json]

On GPU the step runs under bf16 autocast, as `autonl search` does. The figures are medians of
per-step wall times after ``--skip`` untimed steps (CUDA is synchronised around each step).
``--channels-last`` runs the supernet and its input in channels-last memory format;
``--compile`` wraps the supernet in ``torch.compile`` (the gates and the cost stay outside).

The GPU-hour estimate of an ImageNet search: ``--epochs`` over ``--images`` images, the first
``--warmup-epochs`` at the warm-up rate and the rest at the search rate (the default, 8 epochs
of which 5 warm-up, is Single-Path NAS's schedule that AutoNL follows), data loading not
counted; the paper reports 32 GPU hours.
"""
from __future__ import annotations

import harness
import torch
from torch import nn

from autonl.backends.latency.timing import median_of_calls
from autonl.backends.torch.search import SearchConfig, make_optimizers, search_step
from autonl.backends.torch.search.supernet import Supernet
from autonl.backends.torch.train import pick_device
from autonl.ir import build_preset


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_phase(supernet, model, opts, x, y, warm: bool, cfg, steps: int, skip: int, device) -> dict:
    ce_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    last = {}

    def synced_step():
        last["loss"], _, last["macs"], _ = search_step(supernet, model, opts, x, y, warm, cfg, ce_fn)
        sync(device)

    sync(device)
    # ``skip`` untimed steps, then each step timed to its end on the device
    step_ms = median_of_calls({"step": synced_step}, rounds=1, calls=steps, warmup=skip)["step"]
    return {"step_ms": step_ms, "images_per_s": x.shape[0] / (step_ms / 1e3), "loss": float(last["loss"].detach()),
            "macs_selected_per_image": float(last["macs"].detach()) / x.shape[0], "steps_timed": steps}


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip", type=int, default=5, help="untimed steps before timing each phase")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--epochs", type=float, default=8)
    ap.add_argument("--warmup-epochs", type=float, default=5)
    ap.add_argument("--images", type=int, default=1_281_167, help="ImageNet-1k's training set")
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
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    supernet.to(memory_format=memory)
    model = torch.compile(supernet) if args.compile else supernet
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device).to(memory_format=memory)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else harness.cpu_model(),
              "torch": torch.__version__, "resolution": args.resolution, "batch": args.batch,
              "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
              "channels_last": args.channels_last, "compile": args.compile}
    for phase, warm in (("warm-up (all options on)", True), ("search (single path + cost)", False)):
        result[phase] = time_phase(supernet, model, opts, x, y, warm, cfg, args.steps, args.skip, device)
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
    warm_rate = result["warm-up (all options on)"]["images_per_s"]
    search_rate = result["search (single path + cost)"]["images_per_s"]
    seconds = args.images * (args.warmup_epochs / warm_rate + (args.epochs - args.warmup_epochs) / search_rate)
    result["imagenet_search"] = {"epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "images": args.images,
                                 "device_hours": seconds / 3600, "paper_gpu_hours": 32}
    print(f"an ImageNet search ({args.epochs:g} epochs of {args.images:,} images, {args.warmup_epochs:g} of them "
          f"warm-up) at these rates: {seconds / 3600:.1f} device-hours on this device "
          f"(the paper: 32 GPU hours), data loading not counted")
    if args.json:
        harness.write_json(args.json, result)


if __name__ == "__main__":
    main()
