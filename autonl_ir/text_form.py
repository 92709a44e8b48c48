"""The readable text form of a graph: printer and (lark) parser.

One line per node, types inline, derived costs in trailing comments that the parser
ignores. ``print_graph(parse_graph(t)) == t`` for every canonical text ``t``::

    graph mobilenetv2(%x: f32[1,3,224,224]) -> f32[1,1000] {
      %conv2d : f32[1,32,112,112] = conv2d(%x) {out=32, k=3, s=2}  # 10.8M MACs, 864 params
      ...
      return %linear
    }

Attribute values: integers, floats (always with a ``.`` or an exponent), ``true``/``false``,
JSON strings, lists ``[1, 2]`` and ``choice(a, b, ...)``. Node types may be left out
(``%y = relu(%x)``); shape inference fills them in.
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .choice import Choice
from .node_cost import format_count, node_cost_range
from .errors import AutonlError, ParseError
from .graph import Graph, Node
from .types import TensorType

GRAMMAR = r"""
graph: "graph" NAME "(" [param ("," param)*] ")" ["->" type ("," type)*] "{" stmt* ret "}"
attr_block: attrs
param: VALUE ":" type
type: NAME "[" [INT ("," INT)*] "]"
stmt: VALUE [":" type] "=" NAME "(" [VALUE ("," VALUE)*] ")" [attrs]
ret: "return" VALUE ("," VALUE)*
attrs: LBRACE [attr ("," attr)*] "}"
attr: NAME "=" value
?value: FLOAT        -> float
      | INT          -> int
      | "true"       -> true
      | "false"      -> false
      | STRING       -> string
      | "[" [value ("," value)*] "]"   -> list
      | CHOICE "(" value ("," value)* ")" -> choice


VALUE: "%" /[A-Za-z_][A-Za-z0-9_.]*/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
INT: /[+-]?[0-9]+/
FLOAT: /[+-]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?[0-9]+[eE][+-]?[0-9]+/
STRING: /"([^"\\\n]|\\.)*"/
LBRACE: "{"
CHOICE: "choice"
COMMENT: /#[^\n]*/
%import common.WS
%ignore WS
%ignore COMMENT
"""
# ``LBRACE`` and ``CHOICE`` are the names lark gives these literals anyway; naming them keeps
# their tokens, so that an error in an attribute block or a choice points at its start.

# Attribute values nested deeper than this are refused with a ParseError (a valid graph needs
# two levels: a choice of lists). Everything downstream (printing, comparing, the JSON form)
# walks values recursively, so the cap is what keeps a crafted file from a RecursionError.
MAX_NESTING = 32

_READABLE = {"VALUE": "a %value", "NAME": "a name", "INT": "an integer",
             "FLOAT": "a float", "STRING": "a string", "$END": "end of input"}


class _SemanticError(Exception):
    def __init__(self, message: str, tok: Any):
        super().__init__(message)
        self.line = getattr(tok, "line", None)
        self.column = getattr(tok, "column", None)


class _Failed:
    """A semantic error found while parsing. The transformer runs inside the LALR parser (no
    parse tree is built), so instead of raising at once it hands this up to the end of the
    parse: a syntax error anywhere still wins, and of several semantic errors the first in
    post-order (what a tree transformer would raise) is reported."""

    __slots__ = ("error",)

    def __init__(self, message: str, tok: Any):
        self.error = _SemanticError(message, tok)


def _failed(values) -> _Failed | None:
    for v in values:
        if type(v) is _Failed:
            return v
    return None


def _too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether lists and choices nest deeper than ``limit`` in ``value`` (no recursion)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        items = v if isinstance(v, list) else v.options if isinstance(v, Choice) else None
        if items is None:
            continue
        if depth >= limit:
            return True
        stack.extend((x, depth + 1) for x in items if isinstance(x, (list, Choice)))
    return False


@lru_cache(maxsize=4096)
def _tensor_type(dtype: str, dims: tuple[str, ...]) -> TensorType:
    """Types are immutable: the nodes of a file share one object per distinct type."""
    return TensorType(dtype, tuple(int(d) for d in dims))


@v_args(inline=True)
class _ToGraph(Transformer):
    """Builds values, nodes and the graph as the LALR parser reduces (``Lark(transformer=...)``)."""

    def int(self, tok):
        return int(tok)

    def float(self, tok):
        return float(tok)

    def true(self):
        return True

    def false(self):
        return False

    def string(self, tok):
        try:
            return json.loads(tok)
        except json.JSONDecodeError as e:   # e.g. a raw control character inside the quotes
            return _Failed(f"bad string {tok[:40]!s}: {e.msg}", tok)

    def list(self, *items):
        return _failed(items) or [v for v in items if v is not None]

    def choice(self, keyword, *options):
        failed = _failed(options)
        if failed is not None:
            return failed
        if any(_too_deep(o, MAX_NESTING - 1) for o in options):
            return _Failed(f"a choice option is nested deeper than {MAX_NESTING} levels", keyword)
        try:
            return Choice(*options)
        except AutonlError as e:
            return _Failed(str(e), keyword)

    def attr(self, name, value):
        if type(value) is _Failed:
            return value
        if isinstance(value, (list, Choice)) and _too_deep(value):
            return _Failed(f"the value of attribute '{name}' is nested deeper than {MAX_NESTING} levels", name)
        return (sys.intern(str(name)), value)

    def attrs(self, brace, *items):
        failed = _failed(items)
        if failed is not None:
            return failed
        out: dict[str, Any] = {}
        for item in items:
            if item is None:
                continue
            if item[0] in out:
                return _Failed(f"attribute '{item[0]}' is given twice", brace)
            out[item[0]] = item[1]
        return out

    def type(self, dtype, *dims):
        try:
            return _tensor_type(str(dtype), tuple(str(d) for d in dims if d is not None))
        except AutonlError as e:
            return _Failed(str(e), dtype)

    def param(self, value, type_):
        if type(type_) is _Failed:
            return type_
        return (value, type_)

    def stmt(self, value, type_, op, *rest):
        failed = _failed((type_, *rest))
        if failed is not None:
            return failed
        *inputs, attrs = rest
        node = Node(value[1:], sys.intern(str(op)), [str(v)[1:] for v in inputs if v is not None], attrs or {},
                    type_)
        node.line, node.column = value.line, value.column
        return node

    def ret(self, *values):
        return [(str(v)[1:], v) for v in values]

    def graph(self, name, *rest):
        # rest: params (or None), declared output types (or None), statements..., ret
        failed = _failed(rest)
        if failed is not None:
            return failed
        ret = rest[-1]
        params = [p for p in rest[:-1] if isinstance(p, tuple)]
        out_types = [t for t in rest[:-1] if isinstance(t, TensorType)]
        nodes = [n for n in rest[:-1] if isinstance(n, Node)]
        inputs: dict[str, TensorType] = {}
        for tok, t in params:
            if tok[1:] in inputs:
                return _Failed(f"graph input {tok} is declared twice", tok)
            inputs[tok[1:]] = t
        g = Graph(str(name), inputs)
        for n in nodes:
            if n.name in g:
                return _Failed(f"%{n.name} is defined twice", n)
            g.nodes[n.name] = n
        g.outputs = [v for v, _ in ret]
        if out_types:
            if len(out_types) != len(ret):
                return _Failed(f"the header declares {len(out_types)} output types but "
                               f"return lists {len(ret)} values", ret[0][1])
            for (v, tok), t in zip(ret, out_types):
                declared = g.nodes[v].type if v in g.nodes else g.inputs.get(v)
                if declared is not None and declared != t:
                    return _Failed(f"return value %{v} has type {declared} but the header "
                                   f"declares {t}", tok)
        return g

    def attr_block(self, attrs):
        if type(attrs) is _Failed:
            return attrs
        return attrs or {}


# No parse tree and no position bookkeeping: the transformer builds the graph as the parser
# reduces, so memory stays near the size of the graph and nothing recurses on nesting depth.
_PARSER = Lark(GRAMMAR, start=["graph", "attr_block"], parser="lalr", transformer=_ToGraph(),
               maybe_placeholders=True)


def _describe_expected(expected) -> str:
    names = []
    for term in sorted(expected):
        if term in _READABLE:
            names.append(_READABLE[term])
            continue
        try:
            pattern = _PARSER.get_terminal(term).pattern
            names.append(f"'{pattern.value}'" if pattern.type == "str" else term.lower())
        except KeyError:
            names.append(term.lower())
    return ", ".join(dict.fromkeys(names))


def _parse(text: str, start: str, file: str | None):
    try:
        result = _PARSER.parse(text, start=start)
    except UnexpectedToken as e:
        got = "end of input" if e.token.type == "$END" else f"'{e.token}'"
        raise ParseError(f"unexpected {got}; expected {_describe_expected(e.expected)}",
                         file, e.line, e.column) from None
    except UnexpectedCharacters as e:
        raise ParseError(f"unexpected character {text[e.pos_in_stream]!r}", file, e.line, e.column) from None
    except UnexpectedEOF as e:
        raise ParseError(f"unexpected end of input; expected {_describe_expected(e.expected)}",
                         file, e.line, e.column) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark position errors
        raise ParseError(str(e).splitlines()[0], file, e.line, e.column) from None
    if type(result) is _Failed:
        err = result.error
        raise ParseError(str(err), file, err.line, err.column) from None
    return result


def parse_graph(text: str, file: str | None = None) -> Graph:
    """Parse the text form. Errors raise :class:`ParseError` with line and column."""
    return _parse(text, "graph", file)


def parse_attrs(text: str, file: str | None = None) -> dict[str, Any]:
    """Parse an attribute block ``{key=value, ...}`` written as in the text form."""
    return _parse(text, "attr_block", file)


def load_text(path: str | Path) -> Graph:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ParseError("not a text file (invalid UTF-8)", str(path)) from None
    return parse_graph(text, str(path))


# -- printing ----------------------------------------------------------------------
def format_value(v: Any) -> str:
    if isinstance(v, Choice):
        return "choice(" + ", ".join(format_value(o) for o in v.options) + ")"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        if r in ("inf", "-inf", "nan"):
            raise AutonlError(f"the text form cannot hold the float {r}")
        return r
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    raise AutonlError(f"the text form cannot hold a value of type {type(v).__name__}: {v!r}")


def format_attrs(attrs: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in attrs.items()) + "}"


def _cost_comment(graph: Graph, node: Node) -> str:
    try:
        lo, hi = node_cost_range(graph, node)
    except Exception:  # an unverified graph still prints, just without costs
        return ""

    def span(a: int, b: int, unit: str) -> str:
        if a == b:
            return f"{format_count(a)} {unit}" if a else ""
        return f"{format_count(a)}..{format_count(b)} {unit}"

    parts = [p for p in (span(lo.macs, hi.macs, "MACs"), span(lo.params, hi.params, "params")) if p]
    return "  # " + ", ".join(parts) if parts else ""


def print_graph(graph: Graph, costs: bool = True) -> str:
    """The text form; with ``costs`` each node's MACs and parameters follow as a comment."""
    try:
        order = [graph.nodes[n] for n in graph.topological_order()]
    except AutonlError:
        order = list(graph.nodes.values())
    params = ", ".join(f"%{k}: {t}" for k, t in graph.inputs.items())
    header = f"graph {graph.name}({params})"
    out_types = [graph.inputs.get(v) or (graph.nodes[v].type if v in graph.nodes else None)
                 for v in graph.outputs]
    if out_types and all(t is not None for t in out_types):
        header += " -> " + ", ".join(str(t) for t in out_types)
    lines = [header + " {"]
    name_w = max((len(n.name) for n in order), default=0) + 1
    type_w = max((len(str(n.type)) for n in order if n.type is not None), default=0)
    for n in order:
        left = f"  {'%' + n.name:<{name_w}}"
        if n.type is not None:
            left += f" : {str(n.type):<{type_w}}"
        rhs = f"{n.op}({', '.join('%' + v for v in n.inputs)})"
        if n.attrs:
            rhs += " " + format_attrs(n.attrs)
        comment = _cost_comment(graph, n) if costs else ""
        lines.append(f"{left} = {rhs}{comment}")
    lines.append("  return " + ", ".join("%" + v for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
