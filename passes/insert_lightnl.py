"""``insert-lightnl``: place a relaxed LightNL candidate after the projection of MBConvs."""
from __future__ import annotations

import re

from autonl.ir import AutonlError, Choice, Graph, Node
from autonl.ir.ops import LIGHTNL_NORMS, get_op

from .base import Pass, PassResult
from .pass_registry import register_pass
from .space_file import LightNLSpec, load_space


@register_pass("insert-lightnl")
class InsertLightNL(Pass):
    """Insert a LightNL candidate after every (selected) MBConv.

    Rewrite cases: ``%m = mbconv(...)`` whose users do not already include a ``lightnl``
    gets ``%lightnl_i = lightnl(%m) {insert=choice(false, true), r=choice(...), s=choice(...)}``
    (``i`` from ``mbconv_i``, else ``<m>_nl``), and every former use of ``%m`` (the
    residual ``add`` among them) now reads ``%lightnl_i``: the block sits after the projection
    and before the residual addition. Options come from a search-space file's ``[lightnl]``
    section or from ``ratios``/``strides``/``optional``/``nodes`` (a regular expression)/
    ``norm``. Every candidate carries its ``norm`` explicitly (default "l2", the bounded
    form; "none" is the paper's product), so a graph file says which LightNL it holds."""

    def __init__(self, space: str | None = None, ratios: list | None = None, strides: list | None = None,
                 optional: bool | None = None, nodes: str | None = None, norm: str | None = None):
        base = (load_space(space).lightnl if space else None) or LightNLSpec()
        if norm is not None and norm not in LIGHTNL_NORMS:
            raise AutonlError(f"insert-lightnl: norm {norm!r} must be one of {', '.join(map(repr, LIGHTNL_NORMS))}")
        self.spec = LightNLSpec(tuple(ratios or base.ratios), tuple(strides or base.strides),
                                base.optional if optional is None else optional,
                                nodes if nodes is not None else base.nodes, base.exclude, norm or base.norm)

    def _value(self, options: tuple):
        return options[0] if len(options) == 1 else Choice(*options)

    def call(self, graph: Graph) -> PassResult:
        modified = False
        for m in [n for n in graph if n.op == "mbconv"]:
            if m.name in self.spec.exclude or (self.spec.nodes and not re.fullmatch(self.spec.nodes, m.name)):
                continue
            users = graph.users(m.name)
            if any(u.op == "lightnl" for u in users):
                continue
            mb = get_op("mbconv").full_attrs(m.attrs)
            attrs = {}
            if self.spec.optional:
                attrs["insert"] = Choice(False, True)
            attrs["r"] = self._value(self.spec.ratios)
            attrs["s"] = self._value(self.spec.strides)
            attrs["norm"] = self.spec.norm
            attrs.update({k: mb[k] for k in ("eps", "momentum") if k in m.attrs})
            stem = m.name.replace("mbconv", "lightnl", 1) if "mbconv" in m.name else f"{m.name}_nl"
            name = graph.fresh_name(stem)
            node = Node(name, "lightnl", [m.name], attrs, m.type)
            graph.replace_all_uses_with(m.name, name)
            graph.insert_after(m.name, [node])
            modified = True
        return PassResult(graph, modified)
