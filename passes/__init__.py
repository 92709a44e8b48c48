"""autonl.passes: graph rewrites and analyses, a pass manager, and a registry by name.

A custom pass::

    from autonl.passes import Pass, PassResult, register_pass

    @register_pass("relu6-to-relu")
    class Relu6ToRelu(Pass):
        def call(self, graph):
            nodes = [n for n in graph if n.op == "relu6"]
            for n in nodes:
                n.op = "relu"
            return PassResult(graph, modified=bool(nodes))
"""
from . import cost, dce, derive, fold_bn, fold_mbconv, insert_lightnl, lower_composites, relax, shape_inference  # noqa: F401  (register built-ins)
from .base import Pass, PassError, PassResult, PostconditionError, PreconditionError
from .cost import CostReport, analyze_cost
from .manager import DumpIR, Instrument, PassManager, Timing
from .match import find_nodes, match_pattern
from .registry import all_passes, create_pass, get_pass, load_plugins, register_pass
from .space import SearchSpace, load_space

__all__ = [
    "CostReport", "DumpIR", "Instrument", "Pass", "PassError", "PassManager", "PassResult",
    "PostconditionError", "PreconditionError", "Timing", "all_passes", "analyze_cost", "create_pass",
    "SearchSpace", "find_nodes", "get_pass", "load_plugins", "load_space", "match_pattern", "register_pass",
]
