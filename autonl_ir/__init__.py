"""autonl.ir: the graph IR of AutoNL (graph, types, ops, text and JSON forms, verifier, presets,
models). It imports nothing of torch, the passes, the backends or the command line."""
from . import ops  # noqa: F401  (registers the built-in ops)
from .atomic import atomic_write
from .builder import GraphBuilder
from .choice import Choice
from .compare import Comparison, assert_structural_equal, diff_graphs, structural_equal
from .node_cost import node_cost, node_cost_range
from .decisions import apply_decisions, check_decisions, choice_space, load_decisions
from .errors import (AutonlError, DuplicateNameError, ParseError, TypeInferenceError, UnknownNameError,
                     VerifyError)
from .files import load_graph, render, save_graph
from .graph import Graph, Node
from .json_form import dumps as to_json
from .json_form import loads as from_json
from .model import Model
from .presets import all_presets, build_preset, get_preset
from .registry import Registry
from .text_form import parse_graph, print_graph
from .types import TensorType, f32
from .verify import verify

__all__ = [
    "AutonlError", "Choice", "Comparison", "DuplicateNameError", "Graph", "GraphBuilder", "Model", "Node",
    "ParseError", "Registry", "TensorType", "TypeInferenceError", "UnknownNameError", "VerifyError",
    "all_presets", "apply_decisions", "assert_structural_equal", "atomic_write", "build_preset",
    "check_decisions", "choice_space", "diff_graphs", "f32", "from_json", "get_preset", "load_decisions",
    "load_graph", "node_cost", "node_cost_range", "parse_graph", "print_graph", "render", "save_graph",
    "structural_equal", "to_json", "verify",
]
