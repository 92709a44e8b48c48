"""The pass pipelines of presets made by one: the IR lists the ``search-space`` preset (the
AutoNL macro network, ``autonl.ir.presets.SEARCH_MACRO``, run through the ``search-space``
pipeline) but may not import the passes, so this module hands it the way to run a pipeline
when :mod:`autonl.passes` loads."""
from __future__ import annotations

from autonl.ir import Graph
from autonl.ir.presets import set_pipeline_runner

from .manager import PassManager


def run_pass_pipeline(pipeline: str, graph: Graph) -> Graph:
    return PassManager(pipeline)(graph).graph


set_pipeline_runner(run_pass_pipeline)
