"""``autonl train``, ``autonl search`` and ``autonl derive``: a SOURCE trained
(:func:`train_source`, its :class:`TrainResult`), searched (:func:`search_source`, its
:class:`SearchResult`; on many processes :func:`launch_search`, under torchrun) or a search
run derived (:func:`derive_run`, its :class:`~autonl.backends.torch.search.child.DeriveResult`),
each in a run folder kept by :func:`~autonl.workflows.folders.new_run`; the steps, batch and
learning rate left out fitted to an ImageFolder as ``autonl run`` fits them
(:func:`fit_to_folder`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autonl.ir import AutonlError
from autonl.passes.sources import is_preset, relaxed_graph

from autonl.backends.torch.config import SearchConfig, TrainConfig

from .folders import new_run
from .sources import check_model_graphs, recorded_data, start_weights, training_graph

if TYPE_CHECKING:      # torch: imported when a derive runs, not with the command line
    from autonl.backends.torch.search.child import DeriveResult

__all__ = ["Launch", "SearchResult", "TrainResult", "derive_run", "fit_to_folder", "launch_search",
           "search_source", "train_source"]


@dataclass(frozen=True)
class TrainResult:
    """A finished training run: its folder and the final metrics (val_acc, ...)."""

    out: str
    metrics: dict

    def to_json(self) -> str:
        """The one JSON line ``autonl train`` prints."""
        return json.dumps(self.metrics)


@dataclass(frozen=True)
class SearchResult:
    """A search: its folder and its result (decisions' cost, accuracy...; None in a torchrun
    worker that is not rank 0, which writes nothing), and whether it aimed at a latency."""

    out: str
    metrics: dict | None
    by_latency: bool

    def to_json(self) -> str:
        """The one JSON line ``autonl search`` prints."""
        return json.dumps(self.metrics)


@dataclass(frozen=True)
class Launch:
    """torchrun's options of a command that can run on many processes and machines."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500


def fit_to_folder(config: dict, cls, kind: str, preset: bool,
                  left_default=frozenset()) -> tuple[int | None, str | None]:
    """``autonl train`` and ``autonl search`` on an ImageFolder, as ``autonl run`` does: the
    steps, batch size and learning rate left at their defaults (``left_default``: the field
    names the user did not give; the search's warm-up, a third of its steps) are fitted to
    the folder (:func:`~autonl.backends.torch.data.fitted_settings`; the learning rate scaled
    to the batch by the linear rule), in ``config``, with one line saying so. The built-in
    sets keep the defaults they were tuned with. Returns the fitted input size for a preset
    left without ``resolution`` and the line to print once the run's folder is ready (None:
    nothing fitted)."""
    from autonl.backends.torch.data import BUILTIN_DATASETS, fitted_settings, scaled_lr
    if config.get("data") in BUILTIN_DATASETS or config.get("data") in (None, "builtin"):
        return None, None

    import torch
    fitted = fitted_settings(config["data"], gpu=torch.cuda.is_available() and config.get("device") != "cpu")
    changed = []
    if "batch_size" in left_default:
        config["batch_size"] = fitted["batch_size"]
        changed.append(f"batch {config['batch_size']}")
    if "steps" in left_default:
        config["steps"] = fitted[f"{kind}_steps"]
        changed.append(f"{config['steps']} steps")
    if kind == "search" and "warmup_steps" in left_default:
        config["warmup_steps"] = min(config["warmup_steps"], config["steps"] // 3)
        changed.append(f"warm-up {config['warmup_steps']} steps")
    if "lr" in left_default:
        config["lr"] = scaled_lr(cls.lr, config["batch_size"])
        changed.append(f"lr {config['lr']:g} (the default {cls.lr:g} at batch 64, scaled to batch "
                       f"{config['batch_size']})")
    resolution = fitted["resolution"] if preset and "resolution" in left_default else None
    if resolution is not None:
        changed.append(f"resolution {resolution}")
    line = (f"settings: {', '.join(changed)}; fitted to the data: {fitted['why']} (give --steps, --batch-size, "
            f"--lr to choose)") if changed else None
    return resolution, line


def train_source(source: str, out: str, config: dict, *, resume: bool = False, force: bool = False,
                 init: str | None = None, from_scratch: bool = False, resolution: int | None = None,
                 width: float | None = None, overrides: dict | None = None, left_default=frozenset()) -> TrainResult:
    """Train ``source`` (a preset, graph file or model folder: from its own weights unless
    ``from_scratch``, or from ``init``) with the :class:`TrainConfig` fields ``config``, into
    the run folder ``out`` (a new one, replaced with ``force``; or the run in it continued
    with ``resume``, its settings but ``overrides`` kept)."""
    init = start_weights(source, init, from_scratch)
    check_model_graphs(source, init)    # a model folder's graph.json (authoritative) must agree with its graph.ir
    from autonl.backends.torch.train import train as run_training

    config = dict(config)
    if config["data"] is None:    # a model folder (or --init) was trained on data it names: fine-tune on those
        config["data"] = recorded_data(source, init) or TrainConfig.data
    fitted_resolution = fitted_line = None
    if not resume:      # on a folder: steps, batch and lr left out fitted as autonl run fits them
        fitted_resolution, fitted_line = fit_to_folder(config, TrainConfig, "train", is_preset(source), left_default)
    cfg = TrainConfig(**config)          # every other option is a TrainConfig field of the same name
    graph = None if resume else training_graph(source, resolution, width, cfg.data, fitted_resolution)
    with new_run(out, resume, force):
        metrics = run_training(graph, cfg, out, resume=resume, init=init, overrides=overrides, note=fitted_line)
    return TrainResult(out, metrics)


def search_source(source: str, out: str, config: dict, *, target_macs: float | None = None,
                  target_latency_ms: float | None = None, latency_table: str | None = None, space: str = "autonl",
                  lightnl_norm: str | None = None, resolution: int | None = None, width: float | None = None,
                  resume: bool = False, force: bool = False, overrides: dict | None = None,
                  left_default=frozenset()) -> SearchResult:
    """Search ``source`` (its choices, or ``space``'s for a graph without any) for the
    target, with the :class:`SearchConfig` fields ``config``, into the run folder ``out``;
    in a torchrun worker, its share of the job (rank 0 writes)."""
    from autonl.backends.torch.data import num_classes
    from autonl.backends.torch.search import search as run_search

    graph = cfg = fitted_line = None
    if not resume:
        config = dict(config)
        # on a folder: steps, batch and lr left out fitted as autonl run fits them
        fitted_resolution, fitted_line = fit_to_folder(config, SearchConfig, "search", is_preset(source),
                                                       left_default)
        cfg = SearchConfig(target_macs=target_macs, target_latency_ms=target_latency_ms,  # the others are fields
                           latency_table=str(Path(latency_table).resolve()) if latency_table else None, **config)
        graph = relaxed_graph(source, space, resolution or fitted_resolution or
                              (32 if is_preset(source) else None), width,
                              num_classes(cfg.data), lightnl_norm)
    with new_run(out, resume, force, os.environ.get("WORLD_SIZE") is None):
        metrics = run_search(graph, cfg, out, resume=resume, overrides=overrides, note=fitted_line)
    return SearchResult(out, metrics, target_latency_ms is not None)


def derive_run(run_dir: str, out: str, decisions: str | None = None, force: bool = False) -> DeriveResult:
    """Derive the search run ``run_dir`` (its decisions.json, or ``decisions``) into the
    model folder ``out``: discrete graph, inherited weights, costs and comparison."""
    from autonl.backends.torch.search.child import derive_child
    return derive_child(run_dir, out, decisions, force)


class _LaunchFailed(Exception):
    def __init__(self, rc: int):
        super().__init__(rc)
        self.rc = rc


def launch_search(out: str, launch: Launch, argv: list[str], resume: bool = False, force: bool = False) -> int:
    """Run the command ``argv`` again under torchrun (:func:`torchrun`) into the run folder
    ``out`` (made ready here on node 0); a failed launch puts a replaced folder back (unless it
    left a checkpoint). Returns torchrun's exit status."""
    try:
        with new_run(out, resume, force, launch.node_rank == 0):
            rc = torchrun(out, launch, argv)
            if rc:
                raise _LaunchFailed(rc)
    except _LaunchFailed as e:
        return e.rc
    return 0


_LAUNCH_OPTIONS = ("--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port")


def torchrun(out: str, launch: Launch, argv: list[str]) -> int:
    """Run the ``autonl`` command ``argv`` again under torchrun (an existing launcher, not
    ours), without its launch options: on this machine alone (``--standalone``), or as node
    ``node_rank`` of ``nnodes`` meeting at the master.

    Node 0, whose rank 0 writes ``out``, holds its lock in the caller for the whole job (the
    workers are told, ``HELD_BY_PARENT``); torchrun dies with this command, and its workers
    with it (``die_with_parent``), so that a killed ``autonl search`` leaves no worker writing on."""
    import subprocess

    from autonl.backends.locks import HELD_BY_PARENT, lock_path
    from autonl.backends.processes import die_with_parent, python_module

    if launch.nnodes > 1 and not launch.master_addr:
        raise AutonlError("--nnodes above 1 needs --master-addr, the address of the machine with --node-rank 0")
    if launch.node_rank >= launch.nnodes:
        raise AutonlError(f"--node-rank {launch.node_rank} is not below --nnodes {launch.nnodes}")
    env = dict(os.environ)
    if launch.node_rank == 0:    # locked by the caller
        env[HELD_BY_PARENT] = str(lock_path(out))
    args, rest = [], list(argv)
    while rest:
        a = rest.pop(0)
        name = a.split("=", 1)[0]
        if name in _LAUNCH_OPTIONS:
            if "=" not in a and rest:
                rest.pop(0)
            continue
        args.append(a)
    where = ["--standalone"] if launch.nnodes == 1 else [
        f"--nnodes={launch.nnodes}", f"--node-rank={launch.node_rank}", f"--master-addr={launch.master_addr}",
        f"--master-port={launch.master_port}"]
    # Neither torchrun nor its workers may import from the working folder (a numpy.py there
    # would run): `python -m` puts it first on sys.path, python_module drops it first thing
    # (torchrun's --no-python runs the worker command as given).
    # (autonl's main() has set PYTHONSAFEPATH in the environment they inherit)
    cmd = python_module("torch.distributed.run", *where, f"--nproc-per-node={launch.nproc}", "--no-python",
                        *python_module("autonl.cli.main", *args))
    return subprocess.call(cmd, env=env, preexec_fn=die_with_parent)
