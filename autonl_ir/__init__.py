"""autonl.ir: the graph IR of AutoNL (graph, types, ops, text and JSON forms, verifier, presets)."""
from . import ops  # noqa: F401  (registers the built-in ops)
from .builder import GraphBuilder
from .choice import Choice
from .costs import node_cost, node_cost_range
from .decisions import apply_decisions, check_decisions, choice_space, load_decisions
from .errors import (AutonlError, DuplicateNameError, ParseError, TypeInferenceError, UnknownNameError,
                     VerifyError)
from .graph import Graph, Node
from .io import load_graph, save_graph, structural_equal
from .json_form import dumps as to_json
from .json_form import loads as from_json
from .presets import all_presets, build_preset, get_preset
from .text_form import parse_graph, print_graph
from .types import TensorType, f32
from .verify import verify

__all__ = [
    "AutonlError", "Choice", "apply_decisions", "check_decisions", "choice_space", "load_decisions", "DuplicateNameError", "Graph", "GraphBuilder", "Node", "ParseError",
    "TensorType", "TypeInferenceError", "UnknownNameError", "VerifyError", "all_presets",
    "build_preset", "f32", "from_json", "get_preset", "load_graph", "node_cost", "node_cost_range",
    "parse_graph", "print_graph", "save_graph", "structural_equal", "to_json", "verify",
]
