"""LightNL against the conventional non-local block at every LightNL position of AutoNL-L.

For each position (input shape, ratio, stride as in the preset) it prints the MAC ratio
(non-local / LightNL, whole blocks and matrix products alone, from the IR cost model) and
the measured CPU latency ratio in PyTorch eager, batch 1, both blocks timed alternately in
the same run so that machine noise hits both alike.

    python benchmarks/lightnl_vs_nonlocal.py [--resolution 224] [--repeats 30] [--json out.json]
"""
from __future__ import annotations

import statistics
from math import exp, log

import harness
import torch

from autonl.backends.latency.timing import interleaved_rounds
from autonl.ir import build_preset
from autonl.ir.ops import get_op, lightnl_order
from autonl.passes import find_nodes
from autonl.backends.torch.lower.modules import LightNL, NonLocal


def main() -> None:
    ap = harness.parser(__doc__, first="\n")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=30, help="timed runs per block and round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians are pooled)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    torch.manual_seed(0)
    g = build_preset("autonl-l", resolution=args.resolution)
    rows = []
    print(f"AutoNL-L at {args.resolution}x{args.resolution}, batch 1, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    head = f"{'node':<11} {'input':<18} {'r':>5} {'s':>2} {'order':<15} {'MACs NL/LNL':>11} {'matmul NL/LNL':>13} " \
           f"{'NL ms':>8} {'LNL ms':>8} {'latency NL/LNL':>14}"
    print(head)
    print("-" * len(head))
    for node in find_nodes(g, "lightnl"):
        t = g.type_of(node.inputs[0])
        a = get_op("lightnl").full_attrs(node.attrs)
        nl_attrs = get_op("non_local").full_attrs({})
        light_cost = get_op("lightnl").cost([t], t, a)
        nl_cost = get_op("non_local").cost([t], t, nl_attrs)
        hw = t.shape[2] * t.shape[3]
        m = int(t.shape[1] * nl_attrs["ratio"])
        nl_matmul = 2 * hw * hw * m
        order = lightnl_order(t, a["r"], a["s"])
        light = LightNL(t.shape[1], a["r"], a["s"], order, a["eps"], a["momentum"]).eval()
        nonlocal_ = NonLocal(t.shape[1], nl_attrs["ratio"], nl_attrs["eps"], nl_attrs["momentum"]).eval()
        x = torch.randn(*t.shape)
        with torch.inference_mode():      # each round's median, rounds alternating, pooled by their median
            rounds = interleaved_rounds({"light": lambda: light(x), "nonlocal": lambda: nonlocal_(x)}, args.rounds,
                                        args.repeats, warmup=5)
        light_ms, nl_ms = ([statistics.median(r) for r in rounds[k]] for k in ("light", "nonlocal"))
        row = {"node": node.name, "input": str(t), "r": a["r"], "s": a["s"], "order": order,
               "mac_ratio": nl_cost.macs / light_cost.macs,
               "matmul_mac_ratio": nl_matmul / light_cost.lightnl_macs,
               "nonlocal_ms": statistics.median(nl_ms), "lightnl_ms": statistics.median(light_ms)}
        row["latency_ratio"] = row["nonlocal_ms"] / row["lightnl_ms"]
        rows.append(row)
        print(f"{row['node']:<11} {row['input']:<18} {row['r']:>5} {row['s']:>2} {order:<15} "
              f"{row['mac_ratio']:>10.1f}x {row['matmul_mac_ratio']:>12.1f}x {row['nonlocal_ms']:>8.3f} "
              f"{row['lightnl_ms']:>8.3f} {row['latency_ratio']:>13.1f}x")

    def geo(key: str) -> float:
        return exp(sum(log(r[key]) for r in rows) / len(rows))

    print("-" * len(head))
    print(f"geometric mean over {len(rows)} positions: MACs {geo('mac_ratio'):.1f}x, matmul MACs "
          f"{geo('matmul_mac_ratio'):.1f}x, latency {geo('latency_ratio'):.1f}x "
          f"(latency range {min(r['latency_ratio'] for r in rows):.1f}x..{max(r['latency_ratio'] for r in rows):.1f}x)")
    print("The paper claims about 400x fewer operations than a non-local block; the ratio grows with H*W.")
    if args.json:
        harness.write_json(args.json, rows)


if __name__ == "__main__":
    main()
