"""Presets that are made by passes: ``search-space`` is the AutoNL macro network
(``autonl.ir.presets.SEARCH_MACRO``) run through the ``search-space`` pipeline, so the space
is written once (the built-in space file) and not again as block strings."""
from __future__ import annotations

from autonl.ir import Graph
from autonl.ir.presets import SEARCH_MACRO, register_preset

from .manager import PassManager


def search_space_preset(graph: Graph) -> Graph:
    return PassManager("search-space")(graph).graph


register_preset("search-space", SEARCH_MACRO,
                "The AutoNL search space (method.md section 2): Single-Path NAS macro network, "
                "kernel {3,5}, expansion {3,6}, skip, and a LightNL candidate after every block",
                transform=search_space_preset)
