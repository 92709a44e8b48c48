"""The space, costs and sampling of benchmarks/search_evidence.py: a small MobileNetV2-like
space with LightNL candidates, a comparison's cost (MACs or a latency table's prediction),
and random networks within +-TOL of a target."""
from __future__ import annotations

import random
from pathlib import Path

BLOCKS = ("ir_r1_k3_s1_e1_c16", "ir_r2_k3_s1_e3_c24", "ir_r2_k3_s2_e3_c32", "ir_r2_k3_s2_e3_c48")
TOL = 0.05


# -- the space -----------------------------------------------------------------------------
def build_space(resolution: int, classes: int):
    from autonl.ir import Model
    from autonl.ir.presets import NetworkSpec, build_network
    from autonl.passes import PassManager

    spec = NetworkSpec("evidence", BLOCKS, act="silu", stem=16, head=128, dropout=0.0, bn_eps=1e-3,
                       bn_momentum=0.01)
    return PassManager("search-space").run(Model(build_network(spec, resolution=resolution,
                                                               num_classes=classes), {})).graph


def derive(space, decisions):
    from autonl.passes.derive import Derive
    return Derive(decisions)(space).graph


class Cost:
    """A comparison's cost of a network: counted MACs, or the latency table's prediction (ms)."""

    def __init__(self, kind: str, space, table_path: Path | None = None):
        self.kind, self.space = kind, space
        if kind == "latency":
            from autonl.backends.latency import LatencyTable
            self.table = LatencyTable.read(table_path)
            self.table.check_fits(space)

    def __call__(self, decisions) -> float:
        if self.kind == "latency":
            return self.table.predict(self.space, decisions)
        from autonl.passes import analyze_cost
        return float(analyze_cost(derive(self.space, decisions)).macs)

    def bounds(self) -> tuple[float, float]:
        if self.kind == "latency":
            return self.table.bounds(self.space)
        from autonl.passes import analyze_cost
        report = analyze_cost(self.space)
        return float(report.macs), float(report.total("macs_max"))

    def fmt(self, v: float) -> str:
        return f"{v:.3f} ms" if self.kind == "latency" else f"{v / 1e6:.2f}M MACs"


def stages(space) -> dict[str, list[str]]:
    """The LightNL candidates grouped by the size of their feature map, largest first: up to
    three groups, named early / middle / late."""
    by_size: dict[int, list[str]] = {}
    for n in space:
        if n.op == "lightnl":
            by_size.setdefault(space.type_of(n.inputs[0]).shape[-1], []).append(n.name)
    sizes = sorted(by_size, reverse=True)
    names = ["early", "middle", "late"] if len(sizes) >= 3 else ["early", "late"][:len(sizes)]
    groups = [sizes[round(i * len(sizes) / len(names)):round((i + 1) * len(sizes) / len(names))]
              for i in range(len(names))]
    return {f"{name} ({'/'.join(f'{s}x{s}' for s in g)})": [x for s in g for x in by_size[s]]
            for name, g in zip(names, groups)}


def positions(decisions) -> str:
    """The inserted LightNL blocks, e.g. ``1(.25,s1) 5(.125,s2)``, or ``none``."""
    out = [f"{name.split('_')[1]}({d['r']:g},s{d['s']})".replace("0.", ".")
           for name, d in sorted(decisions.items()) if name.startswith("lightnl_") and d.get("insert")]
    return " ".join(out) or "none"


def sample(space, cost: Cost, target: float, rng: random.Random, fix=None, tries: int = 20000) -> dict | None:
    """Random decisions (with ``fix(decisions)`` applied) within +-TOL of ``target``."""
    from autonl.passes import SearchSpace

    s = SearchSpace(space)
    for _ in range(tries):
        d = s.random(rng)
        if fix is not None:
            fix(d)
        if abs(cost(d) / target - 1) <= TOL:
            return d
    return None


def only_at(names, r=0.25, s=1):
    def fix(d):
        for name, dd in d.items():
            if name.startswith("lightnl_"):
                dd["insert"] = name in names
                if name in names:
                    dd["r"], dd["s"] = r, s
    return fix
