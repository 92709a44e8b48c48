"""Latency tables: per-block latency of a search space measured through a backend's runtime
(:mod:`.measure`), read by the search's latency cost and checked end to end (:mod:`.table`)."""
from .table import LatencyTable, space_hash
from .timing import Effort, ModelLatency, measure_all

__all__ = ["Effort", "LatencyTable", "ModelLatency", "measure_all", "space_hash"]
