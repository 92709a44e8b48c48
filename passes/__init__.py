"""autonl.passes: graph rewrites and analyses, a pass manager, pipelines and registries by name.

A custom pass::

    from autonl.passes import Pass, PassResult, register_pass

    @register_pass("relu6-to-relu")
    class Relu6ToRelu(Pass):
        def call(self, graph):
            nodes = [n for n in graph if n.op == "relu6"]
            for n in nodes:
                n.op = "relu"
            return PassResult(graph, modified=bool(nodes))

Importing this package also hands the IR the way to run a pass pipeline, which the
``search-space`` preset (the AutoNL macro network run through the ``search-space``
pipeline, listed by the IR whatever was imported) needs to be built.
"""
from . import (cost_analysis, dce, derive, fold_bn, fold_mbconv, fuse_activations, insert_lightnl,  # noqa: F401
               lower_composites, make_choices, resize, shape_inference)  # (register the built-in passes)
from . import pipelines, space_preset  # noqa: F401  (register the pipelines; let the IR run them for presets)
from .base import Pass, PassError, PassResult, PostconditionError, PreconditionError
from .cost_analysis import CostReport, analyze_cost
from .manager import DumpIR, Instrument, PassManager, PassTimes
from .match import find_nodes, match_pattern
from .pipelines import PIPELINES, get_pipeline, register_pipeline, search_space_pipeline
from .pass_registry import PASSES, all_passes, create_pass, get_pass, load_plugins, register_pass
from .resize import resize_graph
from .search_space import SearchSpace
from .space_file import SpaceFile, load_space

__all__ = [
    "CostReport", "DumpIR", "Instrument", "PASSES", "PIPELINES", "Pass", "PassError", "PassManager", "PassResult",
    "PassTimes", "PostconditionError", "PreconditionError", "SearchSpace", "SpaceFile", "all_passes",
    "analyze_cost",
    "create_pass", "find_nodes", "get_pass", "get_pipeline", "load_plugins", "load_space", "match_pattern",
    "register_pass", "register_pipeline", "resize_graph", "search_space_pipeline",
]
