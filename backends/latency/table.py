"""A per-block latency table of a search space, and what reads it.

The table holds, for every relaxed node of a space (at one resolution) and every combination
of its choices, the latency in milliseconds of that node as its block runs on one runtime
(``entries``), plus the latency of everything the search cannot change (``fixed_ms``). It
predicts a sub-network's latency in the same form as the MAC cost model
(:class:`~autonl.backends.torch.search.supernet.SupernetCost`):

    latency(decisions) = fixed_ms + sum over relaxed nodes of entry(node, its options) * keep

where ``keep`` is 0 for a LightNL whose block is skipped (derive removes both). A skipped
MBConv and an absent LightNL cost 0; a kept MBConv with an identity residual carries the
residual ``add`` in its entry (the add goes with the block).

The file is JSON (schema below, checked when read) with its provenance: backend and version,
target, CPU, threads, resolution, the space's hash, date and runs per entry. It imports no
torch, so the search reads it without the measuring machinery (:mod:`.measure`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from autonl.ir import AutonlError, Graph, Node
from autonl.ir.choice import attr_combinations
from autonl.ir.json_file import read_json_file
from autonl.ir.json_form import graph_to_dict

FORMAT = "autonl-latency-table"
VERSION = 1

# Milliseconds: finite (the reader refuses NaN and infinities), never negative, at most an hour
# (a value near 1e308 would overflow the sums of a prediction to inf).
MAX_MS = 3.6e6
_MS = {"type": "number", "minimum": 0, "maximum": MAX_MS}
SCHEMA = {
    "type": "object",
    "required": ["format", "version", "provenance", "resolution", "space_hash", "fixed_ms", "probe", "nodes"],
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": VERSION},
        "resolution": {"type": "integer", "minimum": 1, "maximum": 4096},
        "space_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        # the intercept of the calibration line: negative for tiny networks (the module of
        # .measure says why); the fastest sub-network must still be predicted above 0
        "fixed_ms": {"type": "number", "minimum": -MAX_MS, "maximum": MAX_MS},
        "probe": {"type": "object", "required": ["ms", "decisions"],
                  "properties": {"ms": {**_MS, "exclusiveMinimum": 0}, "decisions": {"type": "object"}}},
        "provenance": {"type": "object", "required": ["backend", "threads"],
                       "properties": {"backend": {"type": "string"},
                                      "threads": {"type": "integer", "minimum": 1, "maximum": 4096}}},
        "nodes": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["op", "input", "choices", "entries"],
            "properties": {
                "op": {"type": "string"},
                "input": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                "choices": {"type": "object", "minProperties": 1,
                            "additionalProperties": {"type": "array", "minItems": 1}},
                "entries": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["options_key", "options", "ms"],
                    "properties": {"options_key": {"type": "string"}, "options": {"type": "object"}, "ms": _MS}}},
            }}},
    },
}


def _check_rows(doc: dict, path: str) -> None:
    """What a schema cannot say: each node's entries are its choices' combinations, each once,
    each entry's options are those its key names, and the fastest sub-network is predicted
    above 0 ms (a negative fixed part larger than every block is an edited file)."""
    lowest = doc["fixed_ms"]
    for name, row in doc["nodes"].items():
        choices = row["choices"]
        seen: dict[str, int] = {}
        for i, e in enumerate(row["entries"]):
            opts = e["options"]
            where = f"{path}: node %{name} entry {i} ({e['options_key']})"
            if set(opts) != set(choices):
                raise AutonlError(f"{where}: its options name {sorted(opts)}, the node's choices are "
                                  f"{sorted(choices)}; the file was edited: measure the table again")
            key = ",".join(f"{a}={json.dumps(opts[a])}" for a in choices)
            if key != e["options_key"]:
                raise AutonlError(f"{where}: its options {json.dumps(opts)} say {key}, not its key; the file was "
                                  f"edited: measure the table again")
            for a, v in opts.items():
                if not any(json.dumps(v) == json.dumps(o) for o in choices[a]):
                    raise AutonlError(f"{where}: {a}={json.dumps(v)} is not one of the node's options "
                                      f"{json.dumps(choices[a])}; measure the table again")
            if key in seen:
                raise AutonlError(f"{where}: the same options as entry {seen[key]}; each combination is "
                                  f"measured once: measure the table again")
            seen[key] = i
        combos = 1
        for options in choices.values():
            combos *= len(options)
        if len(seen) != combos:
            raise AutonlError(f"{path}: node %{name} has {len(seen)} entries for its {combos} combinations of "
                              f"options; measure the table again")
        lowest += min(e["ms"] for e in row["entries"])
    if not lowest > 0:
        raise AutonlError(f"{path}: predicts {lowest:.4g} ms for the fastest sub-network of its space (fixed_ms "
                          f"{doc['fixed_ms']:.4g}); a latency is positive, so the file was edited: measure the "
                          f"table again")


def space_hash(graph: Graph) -> str:
    """sha256 of the graph's JSON form without its name: the space a table was measured for
    (every node, its attributes and choices, the input shape)."""
    doc = graph_to_dict(graph)
    doc.pop("name", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def options_key(node: Node, combo: dict[str, Any]) -> str:
    """The key of one combination of a node's choices: ``k=3,e=6`` (attributes in choice order)."""
    return ",".join(f"{a}={json.dumps(combo[a])}" for a in node.choices())


def absent(node: Node, combo: dict[str, Any]) -> bool:
    """Whether ``combo`` removes ``node`` from the derived network (entry 0, nothing to measure)."""
    return (node.op == "mbconv" and combo.get("skip") is True) or (node.op == "lightnl" and combo.get("insert") is False)


def keep_gate_of(graph: Graph, node: Node) -> str | None:
    """The MBConv whose ``skip`` choice also removes ``node`` (a LightNL right after it)."""
    if node.op != "lightnl":
        return None
    src = graph.nodes.get(node.inputs[0])
    return src.name if src is not None and src.op == "mbconv" and "skip" in src.choices() else None


@dataclass
class LatencyTable:
    """A latency table read from (or about to be written to) a JSON file."""

    doc: dict
    path: str = "the latency table"

    # -- reading and writing -----------------------------------------------------------
    @staticmethod
    def read(path: str | Path) -> "LatencyTable":
        """The table in ``path``, checked (:func:`~autonl.ir.json_file.read_json_file`: a regular
        file of bounded size and nesting, finite numbers, no repeated key; then the schema and
        :func:`_check_rows`); one line naming the file otherwise."""
        path = Path(path)
        doc = read_json_file(path, "latency table", hint="; measure it again with autonl latency-table",
                             missing=f"{path}: no such latency table (make one with autonl latency-table)")
        return LatencyTable.from_doc(doc, str(path))

    @staticmethod
    def from_doc(doc: Any, path: str = "the latency table") -> "LatencyTable":
        try:
            jsonschema.validate(doc, SCHEMA)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
            raise AutonlError(f"{path}: not a latency table of this version: at {where}: {e.message[:160]}; measure "
                              f"it again with autonl latency-table") from None
        _check_rows(doc, path)
        return LatencyTable(doc, path)

    def dumps(self) -> str:
        return json.dumps(self.doc, indent=1) + "\n"

    # -- facts ---------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.doc["resolution"]

    @property
    def provenance(self) -> dict:
        return self.doc["provenance"]

    @property
    def fixed_ms(self) -> float:
        return self.doc["fixed_ms"]

    @property
    def probe_ms(self) -> float:
        """The latency of the table's probe network (a fixed sub-network of its space) when the
        table was measured: what later measurements scale to (:mod:`.timing`)."""
        return self.doc["probe"]["ms"]

    def space_graph(self) -> Graph:
        """The relaxed graph the table was measured for (stored in the file)."""
        from autonl.ir.json_form import graph_from_dict
        if "space_graph" not in self.doc:
            raise AutonlError(f"{self.path} does not hold its space's graph (space_graph)")
        graph = graph_from_dict(self.doc["space_graph"], self.path)
        if space_hash(graph) != self.doc["space_hash"]:
            raise AutonlError(f"{self.path}: its space_graph does not match its space_hash (the file was edited)")
        return graph

    def describe(self) -> str:
        p = self.provenance
        return (f"{p['backend']} {p.get('runtime_version', '')}".rstrip() + f", target {p.get('target', 'host')}, "
                f"{p['threads']} thread(s), {self.resolution}x{self.resolution}")

    # -- fitting a space -------------------------------------------------------------------
    def check_fits(self, graph: Graph) -> None:
        """One line naming the first thing the table lacks for ``graph`` (a relaxed graph at the
        resolution the cost is counted at), or nothing."""
        res = graph.inputs[next(iter(graph.inputs))].shape[-1]
        if res != self.resolution:
            raise AutonlError(f"{self.path} was measured at {self.resolution}x{self.resolution}, the search counts "
                              f"its cost at {res}x{res}; use --cost-resolution {self.resolution} or measure a table "
                              f"at {res} (autonl latency-table -r {res})")
        nodes = self.doc["nodes"]
        for node in graph:
            if not node.relaxed:
                continue
            row = nodes.get(node.name)
            if row is None:
                raise AutonlError(f"{self.path} has no entries for the searchable node %{node.name} ({node.op}); "
                                  f"it was measured for another space")
            want = {a: [json.dumps(o) for o in c.options] for a, c in node.choices().items()}
            have = {a: [json.dumps(o) for o in opts] for a, opts in row["choices"].items()}
            in_shape = list(graph.type_of(node.inputs[0]).shape)
            if row["op"] != node.op or want != have or row["input"] != in_shape:
                raise AutonlError(f"{self.path}: node %{node.name} differs from the space's: table {row['op']} on "
                                  f"{row['input']} with {row['choices']}, space {node.op} on {in_shape} with "
                                  f"{ {a: list(c.options) for a, c in node.choices().items()} }: the table was "
                                  f"measured for another space; measure one for this space")
            keys = {e["options_key"] for e in row["entries"]}
            for combo in attr_combinations(node.attrs):
                if options_key(node, combo) not in keys:
                    raise AutonlError(f"{self.path}: node %{node.name} has no entry for {options_key(node, combo)}")
        extra = sorted(set(nodes) - {n.name for n in graph if n.relaxed})
        if extra:
            raise AutonlError(f"{self.path} has entries for %{extra[0]}, which is not a searchable node of this "
                              f"space; it was measured for another space")
        if self.doc["space_hash"] != space_hash(graph):
            raise AutonlError(f"{self.path} was measured for another network: its searchable nodes match, but the "
                              f"fixed part differs (another width, head or number of classes); measure a table "
                              f"for this space")

    # -- prediction ------------------------------------------------------------------------
    def entry(self, node: Node, combo: dict[str, Any]) -> float:
        """Milliseconds of ``node`` with options ``combo`` (0 when absent)."""
        row = self.doc["nodes"].get(node.name)
        if row is None:
            raise AutonlError(f"{self.path} has no entries for %{node.name}")
        key = options_key(node, combo)
        for e in row["entries"]:
            if e["options_key"] == key:
                return float(e["ms"])
        raise AutonlError(f"{self.path}: node %{node.name} has no entry for {key}")

    def predict(self, graph: Graph, decisions: dict[str, dict[str, Any]]) -> float:
        """Predicted milliseconds of the sub-network ``decisions`` select in ``graph`` (relaxed)."""
        total = self.fixed_ms
        for node in graph:
            if not node.relaxed:
                continue
            keeper = keep_gate_of(graph, node)
            if keeper is not None and decisions[keeper]["skip"] is True:
                continue
            combo = {**node.attrs, **decisions[node.name]}
            total += self.entry(node, combo)
        return total

    def bounds(self, graph: Graph) -> tuple[float, float]:
        """Predicted milliseconds of the fastest and the slowest sub-network of ``graph``."""
        lo = hi = self.fixed_ms
        for node in graph:
            if node.relaxed:
                values = [self.entry(node, c) for c in attr_combinations(node.attrs)]
                lo += min(values)    # a LightNL's minimum is 0 (absent), so keep gates cannot lower it
                hi += max(values)
        return lo, hi
