"""``Model``: a graph and its weights.

Weights are not graph state: a :class:`Graph` describes the computation, a ``Model`` binds
tensors to it, keyed like the torch backend's state dict, ``<node>.<tensor>``
(``mbconv_3.expand.weight``). Arrays are numpy (the IR imports no torch).

Passes that rewrite weights (``fold-bn``, ``fold-mbconv``) declare it and receive them;
they replace arrays and keys but never write into an array, so :meth:`Model.copy` shares
the arrays and copies only the mapping: a pipeline never copies a network's weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

from .graph import Graph


@dataclass
class Model:
    graph: Graph
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def copy(self) -> "Model":
        """A new graph and a new mapping over the same (never mutated) arrays."""
        return Model(self.graph.copy(), dict(self.weights))
