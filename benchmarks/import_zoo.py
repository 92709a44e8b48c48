"""Import the model-zoo-style networks of tests/nets at 224 and print their IR cost next to
the published architectures' conv+linear counts, with a hook-based count of the original
module, the folded blocks, the import time and the logit parity.

    python benchmarks/import_zoo.py [--json out.json]
"""
from __future__ import annotations

import sys
from pathlib import Path

import harness
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "nets"))

from autonl.backends.loading import randomize_bn  # noqa: E402
from autonl.backends.torch.importer import import_module  # noqa: E402
from autonl.backends.torch.lower import to_torch_with_weights  # noqa: E402
from autonl.backends.torch.lower.mac_count import count_macs  # noqa: E402
from autonl.passes import analyze_cost  # noqa: E402

PUBLISHED = {  # conv + linear MACs and parameters at 224, as the papers and torchvision report them
    "MobileNetV3-Large": (216.6e6, 5.48e6),
    "EfficientNet-B0": (385.8e6, 5.29e6),
    "MobileNetV2": (300.8e6, 3.50e6),
}


def main() -> None:
    ap = harness.parser(__doc__, first="\n")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    import zoo_styles as Z
    from torch_mobilenetv2 import MobileNetV2

    nets = [("MobileNetV3-Large", "MobileNetV3Large()", Z.MobileNetV3Large),
            ("MobileNetV3-Large", "MobileNetV3Large(hand-written hard swish/sigmoid)",
             lambda: Z.MobileNetV3Large(hard_swish="hard_swish_manual", se_gate="hard_sigmoid_manual")),
            ("EfficientNet-B0", "EfficientNetB0() (padding modules)", Z.EfficientNetB0),
            ("EfficientNet-B0", "EfficientNetB0(padding='same') (TF)", lambda: Z.EfficientNetB0(padding="same")),
            ("MobileNetV2", "torchvision-style MobileNetV2", MobileNetV2)]
    rows = []
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    for arch, label, build in nets:
        net = randomize_bn(build()).eval()
        watch = harness.Stopwatch()
        model = import_module(net, (1, 3, 224, 224))
        seconds = watch.seconds
        cost = analyze_cost(model.graph)
        with torch.no_grad():
            want, got = net(x), to_torch_with_weights(model)(x)
        rows.append({"model": label, "ir_macs": cost.macs, "ir_params": cost.params,
                     "hook_macs": count_macs(net, x[:1]), "torch_params": sum(p.numel() for p in net.parameters()),
                     "published_macs": PUBLISHED[arch][0], "published_params": PUBLISHED[arch][1],
                     "mbconv_blocks": sum(n.op == "mbconv" for n in model.graph),
                     "import_s": round(seconds, 2),
                     "max_rel_logit_diff": float((want - got).abs().max() / want.abs().max())})
    head = f"{'model':52} {'IR MACs':>9} {'hooks':>9} {'published':>9} {'IR params':>10} {'torch':>10} " \
           f"{'mbconv':>6} {'import':>7} {'rel diff':>9}"
    print(head)
    for r in rows:
        print(f"{r['model']:52} {r['ir_macs'] / 1e6:8.2f}M {r['hook_macs'] / 1e6:8.2f}M "
              f"{r['published_macs'] / 1e6:8.1f}M {r['ir_params']:10,} {r['torch_params']:10,} "
              f"{r['mbconv_blocks']:6} {r['import_s']:6.1f}s {r['max_rel_logit_diff']:9.1e}")
    if args.json:
        harness.write_json(args.json, rows)


if __name__ == "__main__":
    main()
