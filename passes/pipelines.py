"""Pipelines by name (TVM style): the pass sequences the CLI, the deploy path and the
importer run, written once here.

========================  =====================================================================
pipeline                  passes
========================  =====================================================================
``deploy``                lower-composites, fold-bn, dce, shape-inference (a model with weights)
``deploy-keep-bn``        lower-composites, dce, shape-inference
``search-space``          insert-lightnl, relax with the built-in ``autonl`` space
``import``                shape-inference, fold-mbconv (after a PyTorch import)
``import-no-fold``        shape-inference
========================  =====================================================================

``search_space_pipeline(space)`` is ``search-space`` with another space file. The
``search-space`` preset is the AutoNL macro network run through ``search-space``.
"""
from __future__ import annotations

from dataclasses import dataclass

from autonl.ir import Graph
from autonl.ir.presets import SEARCH_MACRO, register_preset
from autonl.ir.registry import Registry


@dataclass(frozen=True)
class Pipeline:
    name: str
    passes: tuple[str, ...]
    doc: str = ""


PIPELINES: Registry[Pipeline] = Registry("pipeline")


def register_pipeline(name: str, passes: tuple[str, ...] | list[str], doc: str = "") -> Pipeline:
    return PIPELINES.register(name, Pipeline(name, tuple(passes), doc))


def get_pipeline(name: str) -> Pipeline:
    return PIPELINES.get(name)


def search_space_pipeline(space: str = "autonl") -> tuple[str, ...]:
    """Place LightNL candidates and relax attributes as the space file ``space`` says."""
    return (f'insert-lightnl{{space="{space}"}}', f'relax{{space="{space}"}}')


register_pipeline("deploy", ("lower-composites", "fold-bn", "dce", "shape-inference"),
                  "a discrete model as primitives with BN folded into the convs (needs weights)")
register_pipeline("deploy-keep-bn", ("lower-composites", "dce", "shape-inference"),
                  "a discrete graph as primitives, batch norms kept")
register_pipeline("search-space", search_space_pipeline("autonl"),
                  "LightNL candidates and relaxed attributes of the built-in AutoNL space")
register_pipeline("import", ("shape-inference", "fold-mbconv"),
                  "types, then inverted residuals folded into mbconv nodes (after autonl import)")
register_pipeline("import-no-fold", ("shape-inference",), "types only (autonl import --no-fold)")


def _search_space(graph: Graph) -> Graph:
    from .manager import PassManager
    return PassManager("search-space")(graph).graph


register_preset("search-space", SEARCH_MACRO,
                "The AutoNL search space (method.md section 2): Single-Path NAS macro network, "
                "kernel {3,5}, expansion {3,6}, skip, and a LightNL candidate after every block",
                transform=_search_space)
