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
from typing import Mapping

import numpy as np

from .graph import Graph


@dataclass
class Model:
    graph: Graph
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def copy(self) -> "Model":
        """A new graph and a new mapping over the same (never mutated) arrays."""
        return Model(self.graph.copy(), dict(self.weights))

    def weights_of(self, node: str) -> dict[str, np.ndarray]:
        """The tensors of one node, keyed by their name inside it (``expand.weight``)."""
        prefix = node + "."
        return {k[len(prefix):]: v for k, v in self.weights.items() if k.startswith(prefix)}

    def rename_weights(self, old: str, new: str) -> None:
        """Move every tensor of node (or module path) ``old`` to ``new``."""
        prefix = old + "."
        for key in [k for k in self.weights if k.startswith(prefix)]:
            self.weights[new + "." + key[len(prefix):]] = self.weights.pop(key)


def as_model(target: Graph | Model, weights: Mapping[str, np.ndarray] | None = None) -> Model:
    """``target`` as a Model (a bare graph gets ``weights``, or none)."""
    if isinstance(target, Model):
        return target
    return Model(target, dict(weights or {}))
