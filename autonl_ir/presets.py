"""Networks as data: block strings, a decoder, and the preset registry.

A network is a stem (3x3 conv, stride 2), one block string per line, and a head (1x1 conv,
global average pool, dropout, linear). A block string, in the spirit of timm's
``_efficientnet_builder``, is ``ir`` followed by ``_``-separated keys:

=========  ==========================================================================
key        meaning
=========  ==========================================================================
``r<n>``   repeats of the block (the stride applies to the first repeat only); default 1
``k<k>``   depthwise kernel size; required
``s<s>``   stride of the first repeat; required
``e<e>``   expansion ratio (1: no expansion conv); required
``c<c>``   output channels before the width multiplier; required
``se<x>``  squeeze-and-excitation ratio of the block's input channels; default 0 (none)
``nl<r>``  LightNL after the projection with channel ratio r; 0 or absent: none
``nls<s>`` LightNL key/value stride; default 1
``skip``   the block may be dropped: skip=choice(false, true) on repeats that have an
           identity residual
=========  ==========================================================================

Any value can be a choice, written with ``|``: ``k3|5``, ``e3|6``, ``nls1|2``. For ``nl`` a
``0`` among the options means "LightNL may be absent": ``nl0|0.125|0.25`` becomes
``insert=choice(false, true), r=choice(0.125, 0.25)``. An unknown key or a malformed value
is an error that names the block string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .builder import GraphBuilder
from .choice import Choice
from .errors import AutonlError
from .graph import Graph
from .registry import Registry
from .types import f32

_KEY_RE = re.compile(r"(nls|nl|se|skip|r|k|s|e|c)(.*)\Z")
_KEYS_DOC = "r<n>, k<k>, s<s>, e<e>, c<c>, se<ratio>, nl<ratio>, nls<stride>, skip"


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10% (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _number(text: str, key: str, block: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise AutonlError(f"block string '{block}': key '{key}' needs a number, got '{text}'") from None


@dataclass(frozen=True)
class BlockArgs:
    """One decoded block string; every field is a plain value or a :class:`Choice`."""

    repeats: int
    k: Any
    s: int
    e: Any
    c: int
    se: Any = 0
    nl: Any = 0
    nls: Any = 1
    skip: bool = False


def decode_block(block: str) -> BlockArgs:
    """Decode one block string (see the module docstring for the keys)."""
    parts = block.strip().split("_")
    if parts[0] != "ir":
        raise AutonlError(f"block string '{block}': unknown block type '{parts[0]}'; known: ir")
    values: dict[str, Any] = {}
    for part in parts[1:]:
        m = _KEY_RE.match(part)
        if not m or (m.group(1) == "skip") != (part == "skip"):
            raise AutonlError(f"block string '{block}': unknown key '{part}'; known keys: {_KEYS_DOC}")
        key, text = m.groups()
        if key in values:
            raise AutonlError(f"block string '{block}': key '{key}' is given twice")
        if key == "skip":
            values[key] = True
            continue
        options = [_number(t, key, block) for t in text.split("|")]
        if key in ("r", "s", "c") and len(options) > 1:
            raise AutonlError(f"block string '{block}': key '{key}' cannot be a choice")
        values[key] = options[0] if len(options) == 1 else Choice(*options)
    missing = [k for k in ("k", "s", "e", "c") if k not in values]
    if missing:
        raise AutonlError(f"block string '{block}': missing key(s) {', '.join(missing)}")
    return BlockArgs(repeats=values.pop("r", 1), **values)


@dataclass(frozen=True)
class NetworkSpec:
    """A MobileNetV2-like network: stem, block strings, head (method.md section 2)."""

    name: str
    blocks: tuple[str, ...]
    act: str = "relu6"
    stem: int = 32
    head: int = 1280
    dropout: float = 0.2
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    doc: str = ""


def _lightnl_attrs(nl: Any, nls: Any, bn: dict) -> dict[str, Any] | None:
    ratios = list(nl.options) if isinstance(nl, Choice) else [nl]
    present = [r for r in ratios if r != 0]
    if not present:
        return None
    attrs: dict[str, Any] = {}
    if len(present) < len(ratios):
        attrs["insert"] = Choice(False, True)
    attrs["r"] = present[0] if len(present) == 1 else Choice(*present)
    if nls != 1:
        attrs["s"] = nls
    return {**attrs, **bn}


def build_network(spec: NetworkSpec, resolution: int = 224, width: float = 1.0, batch: int = 1,
                  num_classes: int = 1000) -> Graph:
    """Build the IR graph of ``spec`` for ``batch`` x 3 x ``resolution`` x ``resolution`` inputs."""
    for what, v in (("resolution", resolution), ("batch", batch), ("num_classes", num_classes)):
        if not isinstance(v, int) or v < 1:
            raise AutonlError(f"{what} must be a positive integer, got {v!r}")
    if not width > 0:
        raise AutonlError(f"width multiplier must be positive, got {width!r}")
    g = Graph(spec.name, {"x": f32(batch, 3, resolution, resolution)})
    b = GraphBuilder(g)
    bn = {}
    if spec.bn_eps != 1e-5:
        bn["eps"] = spec.bn_eps
    if spec.bn_momentum != 0.1:
        bn["momentum"] = spec.bn_momentum
    act = spec.act
    h = b.emit("conv2d", ["x"], "stem", out=make_divisible(spec.stem * width), k=3, s=2)
    h = b.emit("batch_norm", [h], "stem_bn", **bn)
    h = b.emit(act, [h], "stem_act")
    index = 0
    for line in spec.blocks:
        args = decode_block(line)
        out = make_divisible(args.c * width)
        for rep in range(args.repeats):
            stride = args.s if rep == 0 else 1
            cin = b.type_of(h).shape[1]
            residual = stride == 1 and cin == out
            attrs: dict[str, Any] = {"out": out, "e": args.e, "k": args.k}
            if stride != 1:
                attrs["s"] = stride
            if args.se:
                attrs["se"] = args.se
            attrs["act"] = act
            if args.skip and residual:
                attrs["skip"] = Choice(False, True)
            y = b.emit("mbconv", [h], f"mbconv_{index}", **attrs, **bn)
            nl = _lightnl_attrs(args.nl, args.nls, bn)
            if nl is not None:
                y = b.emit("lightnl", [y], f"lightnl_{index}", **nl)
            h = b.emit("add", [y, h], f"add_{index}") if residual else y
            index += 1
    h = b.emit("conv2d", [h], "head", out=make_divisible(spec.head * max(1.0, width)))
    h = b.emit("batch_norm", [h], "head_bn", **bn)
    h = b.emit(act, [h], "head_act")
    h = b.emit("global_avg_pool", [h], "pool")
    if spec.dropout:
        h = b.emit("dropout", [h], "dropout", p=spec.dropout)
    h = b.emit("linear", [h], "classifier", out=num_classes)
    g.outputs = [h]
    return g


# -- the registry ----------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A named network: a block-string spec, and optionally the name of a pass ``pipeline``
    the built graph goes through (the ``search-space`` preset is a macro network run through
    the search-space passes). The IR lists every preset whatever has been imported; the
    passes, which the IR may not import, run a pipeline once :mod:`autonl.passes` is loaded
    (:func:`set_pipeline_runner`)."""

    name: str
    spec: NetworkSpec
    doc: str = field(default="")
    pipeline: str | None = None

    def build(self, **kwargs) -> Graph:
        graph = build_network(self.spec, **kwargs)
        if self.pipeline is None:
            return graph
        if _PIPELINE_RUNNER is None:
            raise AutonlError(f"preset '{self.name}' is made by the '{self.pipeline}' pass pipeline: "
                              f"import autonl.passes before building it")
        return _PIPELINE_RUNNER(self.pipeline, graph)


_PIPELINE_RUNNER: Callable[[str, Graph], Graph] | None = None


def set_pipeline_runner(runner: Callable[[str, Graph], Graph]) -> None:
    """Called by :mod:`autonl.passes` when it loads: ``runner(pipeline, graph)`` runs a
    named pass pipeline over a graph, for presets made by one."""
    global _PIPELINE_RUNNER
    _PIPELINE_RUNNER = runner


PRESETS: Registry[Preset] = Registry("preset")


def register_preset(name: str, spec: NetworkSpec, doc: str = "", pipeline: str | None = None) -> Preset:
    return PRESETS.register(name, Preset(name, spec, doc, pipeline))


def get_preset(name: str) -> Preset:
    return PRESETS.get(name)


def all_presets() -> dict[str, Preset]:
    return PRESETS.as_dict()


def build_preset(name: str, **kwargs) -> Graph:
    """``build_preset('autonl-l', resolution=224, width=1.0, batch=1, num_classes=1000)``."""
    return get_preset(name).build(**kwargs)


_AUTONL = dict(act="silu", bn_eps=1e-3, bn_momentum=0.01)

register_preset("mobilenetv2", NetworkSpec("mobilenetv2", (
    "ir_r1_k3_s1_e1_c16",
    "ir_r2_k3_s2_e6_c24",
    "ir_r3_k3_s2_e6_c32",
    "ir_r4_k3_s2_e6_c64",
    "ir_r3_k3_s1_e6_c96",
    "ir_r3_k3_s2_e6_c160",
    "ir_r1_k3_s1_e6_c320",
)), "MobileNetV2 1.0 (ReLU6, no SE, no LightNL); about 300M MACs and 3.5M parameters at 224")

register_preset("autonl-s", NetworkSpec("autonl_s", (
    "ir_r1_k3_s1_e1_c16",
    "ir_r1_k3_s2_e3_c24_nl0.25",
    "ir_r1_k3_s1_e3_c24",
    "ir_r1_k5_s2_e3_c40_nl0.25",
    "ir_r1_k3_s1_e3_c40_nl0.25_nls2",
    "ir_r1_k3_s1_e3_c40",
    "ir_r1_k5_s2_e6_c80_se0.25_nl0.25",
    "ir_r1_k3_s1_e3_c80_se0.5",
    "ir_r1_k3_s1_e3_c80_se0.5",
    "ir_r1_k5_s1_e6_c96_se0.25_nl0.25",
    "ir_r1_k3_s1_e3_c96_se0.5",
    "ir_r1_k3_s1_e3_c96_se0.5",
    "ir_r1_k3_s1_e3_c96_se0.5",
    "ir_r1_k5_s2_e6_c192_se0.25_nl0.25",
    "ir_r1_k5_s1_e3_c192_se0.5",
    "ir_r1_k5_s1_e3_c192_se0.5",
    "ir_r1_k5_s1_e3_c192_se0.5",
    "ir_r1_k5_s1_e6_c320_se0.5_nl0.25",
), **_AUTONL), "AutoNL-S (CVPR 2020): 76.5% ImageNet top-1 reported")

register_preset("autonl-l", NetworkSpec("autonl_l", (
    "ir_r1_k3_s1_e1_c16",
    "ir_r1_k5_s2_e3_c24_nl0.25",
    "ir_r1_k5_s1_e3_c24",
    "ir_r1_k3_s1_e3_c24_nl0.25_nls2",
    "ir_r1_k5_s2_e6_c40_nl0.25",
    "ir_r1_k3_s1_e3_c40_nl0.25_nls2",
    "ir_r1_k3_s1_e3_c40_nl0.25_nls2",
    "ir_r1_k3_s1_e3_c40_nl0.25_nls2",
    "ir_r1_k5_s2_e6_c80_nl0.25",
    "ir_r1_k3_s1_e3_c80_se0.5",
    "ir_r1_k3_s1_e3_c80_se0.5",
    "ir_r1_k3_s1_e3_c80_se0.5_nl0.125_nls2",
    "ir_r1_k5_s1_e6_c96_se0.5_nl0.25",
    "ir_r1_k5_s1_e3_c96_se0.5",
    "ir_r1_k5_s1_e3_c96_se0.5",
    "ir_r1_k3_s1_e3_c96_se0.5_nl0.25_nls2",
    "ir_r1_k5_s2_e6_c192_se0.5_nl0.25",
    "ir_r1_k5_s1_e6_c192_se0.5_nl0.125",
    "ir_r1_k5_s1_e6_c192_se0.5_nl0.125",
    "ir_r1_k5_s1_e6_c192_se0.5",
    "ir_r1_k5_s1_e6_c320_se0.5_nl0.25",
), **_AUTONL), "AutoNL-L (CVPR 2020): 77.7% ImageNet top-1 reported")

# The macro network of the AutoNL search space (method.md section 2): Single-Path NAS's
# stages, kernel 3 and expansion 6 until the search-space passes give them choices. The
# ``search-space`` preset is this network run through them (autonl.passes.pipelines), so the
# space is written once (the built-in space file) and not again as block strings.
SEARCH_MACRO = NetworkSpec("autonl_search", (
    "ir_r1_k3_s1_e1_c16",
    "ir_r4_k3_s2_e6_c24",
    "ir_r4_k3_s2_e6_c40",
    "ir_r4_k3_s2_e6_c80",
    "ir_r4_k3_s1_e6_c96",
    "ir_r4_k3_s2_e6_c192",
    "ir_r1_k3_s1_e6_c320",
), **_AUTONL)

register_preset("search-space", SEARCH_MACRO,
                "The AutoNL search space (method.md section 2): Single-Path NAS macro network, "
                "kernel {3,5}, expansion {3,6}, skip, and a LightNL candidate after every block",
                pipeline="search-space")
