"""``autonl import``: a PyTorch model (``MODULE:CALLABLE``, :func:`load_callable`) exported
into an IR graph of primitives with its weights, its inverted-residual blocks folded into
mbconv nodes, and written as a graph file with its weights beside it or as a model folder
(:func:`import_callable`, its :class:`ImportResult`)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from autonl.ir import AutonlError, atomic_write, save_graph
from autonl.passes import analyze_cost

__all__ = ["ImportResult", "import_callable", "load_callable"]


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_callable` wrote: ``out`` (a graph file, with ``weights`` beside it,
    or a model folder: ``weights`` None), the graph's nodes and mbconv blocks, its MACs and
    parameters."""

    out: Path
    weights: Path | None
    nodes: int
    blocks: int
    macs: int
    params: int


def load_callable(spec: str):
    """``package.module:callable`` or ``path/to/file.py:callable``, called: the torch.nn.Module
    it returns. A module or callable that fails, exits (SystemExit) or returns anything else
    is one line naming ``spec``."""
    import importlib
    import importlib.util

    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise AutonlError(f"{spec!r}: expected MODULE:CALLABLE, e.g. mynets.mobilenet:build or nets.py:build")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise AutonlError(f"{mod_name}: no such Python file")
            spec_ = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[path.stem] = module
            spec_.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except AutonlError:
        raise
    except SystemExit as e:  # the module called sys.exit() (or exit()) while being imported
        raise AutonlError(f"importing {mod_name} failed: it exited (SystemExit: {e.code!r}) instead of "
                          f"defining '{attr}'") from None
    except Exception as e:  # noqa: BLE001  (the user's module failed to import)
        raise AutonlError(f"importing {mod_name} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AutonlError(f"{mod_name} has no callable '{attr}'")
    try:
        net = fn()
    except SystemExit as e:  # e.g. sys:exit, or a script's main() that ends with sys.exit
        raise AutonlError(f"{spec}() exited (SystemExit: {e.code!r}) instead of returning a torch.nn.Module") \
            from None
    except Exception as e:  # noqa: BLE001
        raise AutonlError(f"{spec}() failed: {type(e).__name__}: {e}") from None
    import torch
    if not isinstance(net, torch.nn.Module):
        t = type(net)
        what = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
        raise AutonlError(f"{spec}() returned {what}, not a torch.nn.Module")
    return net


def import_callable(spec: str, input_shape, out: str | Path, no_fold: bool = False) -> ImportResult:
    """Import the nn.Module that ``spec`` (``MODULE:CALLABLE``) returns, traced on an example
    input of ``input_shape`` (N,C,H,W), into ``out``: a graph file (.ir/.txt text form, .json)
    with its weights beside it as <name>.weights.pt, or a model folder."""
    from autonl.backends.manifest import check_out
    from autonl.backends.torch.importer import import_module
    from autonl.backends.torch.lower import to_torch_with_weights
    from autonl.backends.torch.train.weights import save_model, torch_bytes

    shape = list(input_shape)
    out_path = Path(out)
    as_file = out_path.suffix in (".ir", ".txt", ".json")
    check_out(out_path.parent if as_file else out_path)
    net = load_callable(spec)
    try:
        model = import_module(net, shape, name=spec.rpartition(":")[2], fold_blocks=not no_fold)
    except SystemExit as e:  # the module's forward exited while being traced
        raise AutonlError(f"{spec}: the module exited while being traced (SystemExit: {e.code!r})") from None
    graph, module = model.graph, to_torch_with_weights(model)
    blocks = sum(1 for n in graph if n.op == "mbconv")
    weights = None
    if as_file:
        weights = out_path.with_name(out_path.stem + ".weights.pt")
        atomic_write(weights, torch_bytes({k: v.detach().cpu() for k, v in module.state_dict().items()}))
        save_graph(graph, out_path)
    else:
        save_model(graph, module, out_path)
    cost = analyze_cost(graph)
    return ImportResult(out_path, weights, len(graph.nodes), blocks, cost.macs, cost.params)
