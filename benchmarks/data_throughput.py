"""Data throughput of `autonl search`/`train` on ImageNet-like JPEGs: images/s per worker, the
up-front check per 10,000 images, and how many workers a GPU needs.

Makes (once, in ``--folder``) an ImageFolder of ``--images`` JPEGs of about 500x375 pixels,
quality 90, in 10 classes (90% train, 10% val): smooth random colour fields with fine
noise on top, so that they compress about as photos do (~60-120 KB each). Then measures,
in this process (one worker's rate; a DataLoader worker does the same work):

* the train transform (random resized crop, 224, flip) and the eval transform (resize the
  shorter side to 256, centre crop 224), each with JPEGs decoded whole and with the reduced
  decode `autonl` uses (libjpeg DCT scaling down to the size the crop still needs);
* the up-front check that every file decodes (:func:`find_unreadable`): cold (with
  ``--workers`` processes) and cached, per 10,000 images;
* a DataLoader with ``--workers`` processes over the train set (batches of 64).

    python benchmarks/data_throughput.py [--folder /tmp/autonl-jpegs] [--images 2000] [--resolution 224]
                                         [--workers 2] [--gpu-images-per-s 589] [--json OUT.json]

``--gpu-images-per-s``: the rate one GPU searches at (589 images/s: an H100 at 224, batch 128,
bf16, measured for the ImageNet-scale issue); the workers it needs are that rate over the
per-worker train rate.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import harness
import numpy as np
import torch
from PIL import Image

from autonl.backends.torch.data.image_folder import ImageFolderDataset, find_unreadable, scan_image_folder
from autonl.backends.torch.data.loader import seeded_loader
from autonl.backends.torch.data.transforms import EvalTransform, TrainTransform


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs of about 500x375 (sizes vary a little, as photos do), quality 90."""
    if (root / ".complete").exists():
        return
    rng = np.random.default_rng(seed)
    classes = [f"class_{i:02d}" for i in range(10)]
    for i in range(n):
        split = "val" if (i // 10) % 10 == 0 else "train"
        folder = root / split / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(450, 520)), int(rng.integers(330, 400))
        coarse = rng.uniform(0, 255, (h // 24 + 2, w // 24 + 2, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 12, (h, w, 3)).astype(np.int16)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    (root / ".complete").touch()


def per_worker_rate(samples, classes, transform, reduced: bool, count: int) -> float:
    ds = ImageFolderDataset(samples[:count], classes, transform, reduced_decode=reduced, workers=0)
    ds[(0, 1)]                                            # warm the decoder and the allocator
    watch = harness.Stopwatch()
    for i in range(len(ds)):
        ds[(i, i + 1)]
    return len(ds) / watch.seconds


def check_rates(paths, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AUTONL_CACHE_DIR"] = cache
        watch = harness.Stopwatch()
        find_unreadable(paths, "benchmark images", workers)
        cold = watch.seconds
        watch = harness.Stopwatch()
        find_unreadable(paths, "benchmark images", workers)
        cached = watch.seconds
    scale = 10_000 / len(paths)
    return {"cold_s_per_10k": cold * scale, "cached_s_per_10k": cached * scale, "workers": workers}


def loader_rate(samples, classes, resolution: int, workers: int, batches: int) -> float:
    ds = ImageFolderDataset(samples, classes, TrainTransform(resolution), workers=0)
    loader = seeded_loader(ds, 64, True, workers, 0, False)
    it = iter(loader)
    next(it)                                              # workers started and warm
    watch, seen = harness.Stopwatch(), 0
    for _ in range(batches):
        try:
            x, _y = next(it)
        except StopIteration:
            break
        seen += x.shape[0]
    rate = seen / watch.seconds
    del it
    return rate


def main() -> None:
    ap = harness.parser(__doc__, first="\n")
    ap.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "autonl-jpegs"))
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-worker-images", type=int, default=300, help="images timed per transform and decode")
    ap.add_argument("--gpu-images-per-s", type=float, default=589.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)          # a DataLoader worker runs one thread

    cpu = harness.cpu_model()
    print(f"CPU: {cpu}")
    root = Path(args.folder)
    watch = harness.Stopwatch()
    make_folder(root, args.images)
    print(f"folder: {root} ({args.images} JPEGs, made or found in {watch.seconds:.0f} s)")
    classes, samples = scan_image_folder(root)
    train, val = samples["train"], samples["val"]
    sizes = [os.path.getsize(p) for p, _ in train[:200]]
    print(f"  {len(train)} train / {len(val)} val, mean file {np.mean(sizes) / 1024:.0f} KB")

    r = args.resolution
    rows = {}
    for name, transform, pool in (("train", TrainTransform(r), train), ("eval", EvalTransform(r), val + train)):
        for reduced in (False, True):
            key = f"{name} {'reduced' if reduced else 'full'} decode"
            rows[key] = per_worker_rate(pool, classes, transform, reduced, args.per_worker_images)
    print(f"\nimages/s per worker at {r} px (one process, one thread):")
    for key, rate in rows.items():
        print(f"  {key:<24} {rate:8.1f}")
    for name in ("train", "eval"):
        print(f"  {name}: reduced / full decode = {rows[f'{name} reduced decode'] / rows[f'{name} full decode']:.2f}x")

    check = check_rates([p for p, _ in train + val], args.workers)
    print(f"\nup-front check (every file decoded once), per 10,000 images: cold {check['cold_s_per_10k']:.1f} s "
          f"with {args.workers} worker(s), cached {check['cached_s_per_10k']:.2f} s")

    rate = loader_rate(train, classes, r, args.workers, batches=max(4, min(20, len(train) // 64 - 1)))
    print(f"\nDataLoader, {args.workers} workers, train transform, batch 64: {rate:.1f} images/s")
    per_worker = rows["train reduced decode"]
    need = math.ceil(args.gpu_images_per_s / per_worker)
    print(f"one GPU at {args.gpu_images_per_s:.0f} images/s needs about {need} workers at "
          f"{per_worker:.0f} images/s each (train transform, reduced decode)")
    result = {"resolution": r, "images": args.images, "per_worker_images_per_s": rows, "check": check,
              "loader_images_per_s": rate, "loader_workers": args.workers,
              "gpu_images_per_s": args.gpu_images_per_s, "workers_needed": need, "cpu": os.cpu_count(),
              "cpu_model": cpu}
    if args.json:
        harness.write_json(args.json, result)


if __name__ == "__main__":
    main()
