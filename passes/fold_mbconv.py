"""``fold-mbconv``: recognise inverted-residual blocks in a primitive graph and fold each
into one ``mbconv`` node (with an ``se`` inside where the block has squeeze-and-excitation).

The blocks are found by subgraph matching (:func:`autonl.passes.match.match_pattern`,
networkx) against patterns written in the text form, one per variant: with or without the
1x1 expansion, with or without SE (gate times features in either order); the activation
and gate nodes match every activation (relu, relu6, silu, hardswish) and gate (sigmoid,
hardsigmoid) the IR's mbconv offers. A match becomes an ``mbconv`` only if it is exactly what
the ``mbconv`` op computes:

- interior values have no other users (the depthwise activation feeds SE's pool and its
  product; nothing else);
- the depthwise conv has groups == channels; the expand, project and SE convs are 1x1,
  stride 1, ungrouped; expand and project have no bias, SE's convs have one;
- every BN of the block has the same eps and momentum; expansion and depthwise share one
  activation (SE's may differ: ``se_act``, and its gate: ``se_gate``, as in MobileNetV3);
- the 1x1 convolutions have no padding; the depthwise one pads k//2 on every side, or as
  TF's "same" (``pad="same"``, tf_efficientnet's asymmetric padding at stride 2);
- the hidden and SE widths round-trip through ``mbconv``'s expansion and SE ratios;
- a block of expansion 1 that has a 1x1 expansion conv all the same (FBNet-C's first block)
  stays primitives: ``mbconv`` with ``e=1`` has no expansion conv.

Folded blocks are named ``mbconv_0``, ``mbconv_1``, ... in graph order (the names presets
use, so search-space files select them alike); the residual ``add`` stays a node, as in the
presets. On a model, the weights are renamed to the mbconv's internal layout
(``mbconv_3.expand.weight``, ``mbconv_3.se.reduce.bias``, ...), so the torch backend loads
them as they are; a bare graph folds the same way.
"""
from __future__ import annotations

from autonl.ir import Graph, parse_graph
from autonl.ir.ops import ACTIVATIONS, GATES, conv_pads, get_op, mbconv_dw_pads

from .base import Pass, PassResult, Weights
from .match import match_pattern
from .pass_registry import register_pass

# The activations and SE gates an mbconv can express (the ops a pattern's activation and gate
# nodes match; the check below requires one activation for the expansion and the depthwise).
ACTS, GATE_OPS = ACTIVATIONS, GATES


def _pattern(expand: bool, se: str | None) -> Graph:
    """The primitives of one block variant; activation and gate nodes are written as ``relu`` and
    ``sigmoid`` and match any of ACTS and GATE_OPS (see ALTERNATIVES)."""
    lines = []
    h = "x"
    if expand:
        lines += ["%expand = conv2d(%x) {k=1, s=1, groups=1, bias=false, pad=[]}",
                  "%expand_bn = batch_norm(%expand)", "%expand_act = relu(%expand_bn)"]
        h = "expand_act"
    lines += [f"%dw = conv2d(%{h})", "%dw_bn = batch_norm(%dw)", "%dw_act = relu(%dw_bn)"]
    h = "dw_act"
    if se:
        operands = "%dw_act, %se_gate" if se == "x*gate" else "%se_gate, %dw_act"
        lines += ["%se_pool = global_avg_pool(%dw_act) {keepdim=true}",
                  "%se_reduce = conv2d(%se_pool) {k=1, s=1, groups=1, bias=true}", "%se_act = relu(%se_reduce)",
                  "%se_expand = conv2d(%se_act) {k=1, s=1, groups=1, bias=true}", "%se_gate = sigmoid(%se_expand)",
                  f"%se_scale = mul({operands})"]
        h = "se_scale"
    lines += [f"%project = conv2d(%{h}) {{k=1, s=1, groups=1, bias=false, pad=[]}}",
              "%project_bn = batch_norm(%project)"]
    body = "\n  ".join(lines)
    tag = {"x*gate": "se", "gate*x": "se_swapped", None: "plain"}[se]
    return parse_graph(f"graph {'expand' if expand else 'noexpand'}_{tag}(%x: f32[1]) {{\n  {body}\n  "
                       f"return %project_bn\n}}\n")


ALTERNATIVES = {"expand_act": ACTS, "dw_act": ACTS, "se_act": ACTS, "se_gate": GATE_OPS}

# Largest first, so that a block with SE is not taken as a smaller block.
PATTERNS = [(expand, se, _pattern(expand, se)) for se in ("x*gate", "gate*x", None) for expand in (True, False)]

# pattern node -> the mbconv's internal module path (the torch backend's state-dict layout)
ROLES = {"expand": "expand", "expand_bn": "expand_bn", "dw": "dw", "dw_bn": "dw_bn", "se_reduce": "se.reduce",
         "se_expand": "se.expand", "project": "project", "project_bn": "project_bn"}


@register_pass("fold-mbconv")
class FoldMBConv(Pass):
    """Fold inverted-residual blocks of primitives (from ``autonl import``) into ``mbconv`` nodes."""

    uses_weights = True

    def requires(self, graph: Graph, weights: Weights) -> None:
        """Folding needs nothing but the graph; weights, where given, follow the nodes."""

    def call(self, graph: Graph, weights: Weights) -> PassResult:
        weights = dict(weights)
        order = {name: i for i, name in enumerate(graph.topological_order())}
        taken: set[str] = set()
        blocks = []
        for expand, se, pattern in PATTERNS:
            for m in match_pattern(graph, pattern, ALTERNATIVES):
                members = {p: t for p, t in m.items() if p != "x"}
                if taken & set(members.values()):
                    continue
                attrs = self._check(graph, m, expand, bool(se))
                if attrs is None:
                    continue
                taken |= set(members.values())
                if expand and attrs["e"] == 1:
                    # a 1x1 expansion conv at expansion 1 (FBNet-C's first block): mbconv e=1 has
                    # none, so the block stays primitives (its nodes taken: the match without
                    # expansion would fold its depthwise and projection and split it)
                    continue
                blocks.append((order[m["dw"]], m, attrs))
        blocks.sort(key=lambda b: b[0])
        used = {n.name for n in graph} | set(graph.inputs)
        index = 0
        renamed: dict[str, str] = {}   # a folded block's last node -> the mbconv that replaced it
        for _, m, attrs in blocks:
            m = dict(m, x=renamed.get(m["x"], m["x"]))
            while f"mbconv_{index}" in used:
                index += 1
            name = f"mbconv_{index}"
            used.add(name)
            self._fold(graph, weights, m, name, attrs)
            renamed[m["project_bn"]] = name
            index += 1
        return PassResult(graph, modified=bool(blocks), weights=weights)

    @staticmethod
    def _check(graph: Graph, m: dict, expand: bool, se: bool) -> dict | None:
        n = {p: graph.nodes[t] for p, t in m.items() if p != "x"}
        act = n["dw_act"].op
        if expand and n["expand_act"].op != act:
            return None
        full = {p: get_op(node.op).full_attrs(node.attrs) for p, node in n.items()}
        last = m["project_bn"]
        for p, node in n.items():   # interior values: no users outside the block
            if node.name == last:
                continue
            allowed = 2 if (p == "dw_act" and se) else 1
            users = graph.users(node.name)
            if len(users) != allowed or node.name in graph.outputs or \
                    any(u.name not in m.values() for u in users):
                return None
        cin = graph.type_of(m["x"]).shape[1]
        dw = full["dw"]
        hidden = dw["out"]
        if dw["groups"] != hidden or graph.type_of(n["dw"].inputs[0]).shape[1] != hidden or dw["bias"]:
            return None
        if dw["k"] % 2 == 0:
            return None
        dw_hw = graph.type_of(n["dw"].inputs[0]).shape[2:]
        pads = conv_pads(dw)
        if pads == mbconv_dw_pads(*dw_hw, dw["k"], dw["s"], "symmetric"):
            pad = "symmetric"
        elif pads == mbconv_dw_pads(*dw_hw, dw["k"], dw["s"], "same"):
            pad = "same"
        else:
            return None
        if not expand and hidden != cin:
            return None
        bns = [full[p] for p in ("expand_bn", "dw_bn", "project_bn") if p in full]
        if len({(b["eps"], b["momentum"]) for b in bns}) != 1:
            return None
        e = hidden / cin
        attrs = {"out": full["project"]["out"], "e": int(e) if e == int(e) else e, "k": dw["k"]}
        if dw["s"] != 1:
            attrs["s"] = dw["s"]
        if pad != "symmetric":
            attrs["pad"] = pad
        if se:
            reduce = full["se_reduce"]["out"]
            if full["se_expand"]["out"] != hidden or full["se_pool"]["keepdim"] is not True:
                return None
            attrs["se"] = reduce / cin
        attrs["act"] = act
        if se and n["se_act"].op != act:
            attrs["se_act"] = n["se_act"].op
        if se and n["se_gate"].op != "sigmoid":
            attrs["se_gate"] = n["se_gate"].op
        if bns[0]["eps"] != 1e-5:
            attrs["eps"] = bns[0]["eps"]
        if bns[0]["momentum"] != 0.1:
            attrs["momentum"] = bns[0]["momentum"]
        mb = get_op("mbconv")
        widths = mb.widths(cin, mb.full_attrs(attrs))
        if e < 1 or widths != (hidden, full["se_reduce"]["out"] if se else 0):
            return None
        return attrs

    @staticmethod
    def _fold(graph: Graph, weights: Weights, m: dict, name: str, attrs: dict) -> None:
        last = m["project_bn"]
        first = m["expand"] if "expand" in m else m["dw"]
        out_type = graph.type_of(last)
        graph.add_node("mbconv", [m["x"]], attrs, name=name, type=out_type, before=first)
        graph.replace_all_uses_with(last, name)
        members = {t for p, t in m.items() if p != "x"}
        for t in [n for n in reversed(graph.nodes) if n in members]:   # users before what they read
            graph.erase_node(t)
        for p, role in ROLES.items():
            if p in m:
                prefix = m[p] + "."
                for key in [k for k in weights if k.startswith(prefix)]:
                    weights[f"{name}.{role}.{key[len(prefix):]}"] = weights.pop(key)


__all__ = ["FoldMBConv", "PATTERNS"]

