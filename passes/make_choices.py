"""``make-choices``: turn named attributes into choices, as a search-space file says (the
step that makes a search space of a discrete network; not TVM's Relax)."""
from __future__ import annotations

from autonl.ir import AutonlError, Choice, Graph, TypeInferenceError
from autonl.ir.ops import get_op

from .base import Pass, PassResult
from .pass_registry import register_pass
from .space_file import SpaceFile, load_space


@register_pass("make-choices")
class MakeChoices(Pass):
    """Make attributes searchable: set them to choices following a search-space file.

    Rewrite cases: a node of the rule's op whose name the rule selects gets
    ``attr=choice(options)``; with ``only_valid`` a node where some option does not
    type-check is left alone, without it that node is an error. A rule that selects no
    node is an error (a typo in ``nodes`` or ``op`` should not pass silently)."""

    def __init__(self, space: str = "autonl"):
        self.space: SpaceFile = load_space(space)

    def call(self, graph: Graph) -> PassResult:
        modified = False
        for rule in self.space.rules:
            selected = 0
            for node in graph:
                if node.op != rule.op or not rule.selects(node.name):
                    continue
                selected += 1
                op = get_op(node.op)
                merged = {**node.attrs, rule.attr: Choice(*rule.options)}
                # in the op's declared order, so the printed node reads as if written by hand
                attrs = {k: merged[k] for k in [*op.attrs, *merged] if k in merged}
                try:
                    op.infer_all([graph.type_of(v) for v in node.inputs], attrs)
                except TypeInferenceError as e:
                    if rule.only_valid:
                        continue
                    raise AutonlError(f"{self.space.source}: cannot give %{node.name}.{rule.attr} the choices "
                                      f"{list(rule.options)}: {e}") from None
                if node.attrs.get(rule.attr) != attrs[rule.attr]:
                    node.attrs = attrs
                    modified = True
            if selected == 0:    # (only_valid may find no valid node: e.g. no block has an identity residual)
                raise AutonlError(f"{self.space.source}: the rule for {rule.op}.{rule.attr} selects no node "
                                  f"of graph '{graph.name}'")
        return PassResult(graph, modified)
