"""autonl.backends.tvm: Relax build, MetaSchedule tuning and deployable libraries for CPU targets."""
from .targets import TARGETS, NamedTarget, get_target

__all__ = ["TARGETS", "NamedTarget", "get_target"]
