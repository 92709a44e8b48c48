"""Pipelines by name (TVM style): the pass sequences the CLI, the deploy path and the
importer run, written once here.

========================  =====================================================================
pipeline                  passes
========================  =====================================================================
``deploy``                lower-composites, fold-bn, dce, shape-inference (a model with weights)
``deploy-keep-bn``        lower-composites, dce, shape-inference
``search-space``          insert-lightnl, make-choices with the built-in ``autonl`` space
``import``                shape-inference, fuse-activations, fold-mbconv (after a PyTorch import)
``import-no-fold``        shape-inference, fuse-activations
========================  =====================================================================

``search_space_pipeline(space)`` is ``search-space`` with another space file.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def search_space_pipeline(space: str = "autonl", lightnl_norm: str | None = None) -> tuple[str, ...]:
    """Place LightNL candidates and make choices of attributes as the space file ``space`` says
    (``lightnl_norm``: the candidates' norm instead of the space's)."""
    norm = f', norm="{lightnl_norm}"' if lightnl_norm else ""
    return (f'insert-lightnl{{space="{space}"{norm}}}', f'make-choices{{space="{space}"}}')


register_pipeline("deploy", ("lower-composites", "fold-bn", "dce", "shape-inference"),
                  "a discrete model as primitives with BN folded into the convs (needs weights)")
register_pipeline("deploy-keep-bn", ("lower-composites", "dce", "shape-inference"),
                  "a discrete graph as primitives, batch norms kept")
register_pipeline("search-space", search_space_pipeline("autonl"),
                  "LightNL candidates and relaxed attributes of the built-in AutoNL space")
register_pipeline("import", ("shape-inference", "fuse-activations", "fold-mbconv"),
                  "types, then inverted residuals folded into mbconv nodes (after autonl import)")
register_pipeline("import-no-fold", ("shape-inference", "fuse-activations"),
                  "types, x*sigmoid(x) as silu (autonl import --no-fold)")
