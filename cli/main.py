"""The ``autonl`` command. Commands are thin: parse options, call the library, print.

Every failure caused by input prints one line ``error: ...`` and exits non-zero
(1 for bad input, 2 for a bad command line); set ``AUTONL_DEBUG=1`` for tracebacks.
"""
from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path

import click

from autonl.ir import AutonlError, Graph, all_presets, build_preset
from autonl.ir.io import atomic_write, format_for, load_graph, render
from autonl.ir.ops import all_ops
from autonl.ir.ops.registry import REQUIRED
from autonl.passes import DumpIR, PassManager, Timing, all_passes, analyze_cost


def load_target(target: str, resolution: int | None = None, width: float | None = None,
                batch: int | None = None, classes: int | None = None) -> Graph:
    """A preset name (built with the given options) or a graph file (.json or text form)."""
    presets = all_presets()
    if target in presets:
        opts = {"resolution": resolution, "width": width, "batch": batch, "num_classes": classes}
        return build_preset(target, **{k: v for k, v in opts.items() if v is not None})
    if Path(target).is_dir() and (Path(target) / "graph.json").is_file():  # a model folder
        target = str(Path(target) / "graph.json")
    if Path(target).exists():
        given = [n for n, v in (("--resolution", resolution), ("--width", width), ("--batch", batch),
                                ("--classes", classes)) if v is not None]
        if given:
            raise AutonlError(f"{', '.join(given)} apply to presets only, not to the file {target}")
        return load_graph(target)
    close = difflib.get_close_matches(target, presets, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise AutonlError(f"unknown preset or file '{target}'; {hint}known presets: {', '.join(sorted(presets))}")


preset_options = [
    click.option("--resolution", "-r", type=int, help="Input height and width (presets; default 224)."),
    click.option("--width", "-w", type=float, help="Width multiplier (presets; default 1.0)."),
    click.option("--batch", type=int, help="Batch size of the input (presets; default 1)."),
    click.option("--classes", type=int, help="Number of classes (presets; default 1000)."),
]


def with_preset_options(f):
    for opt in reversed(preset_options):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autonl")
def cli():
    """AutoNL: search, derive and deploy lightweight non-local networks."""


@cli.command()
@click.argument("target")
@click.option("--cost", is_flag=True, help="Add the per-block cost table (MACs, parameters).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (same as --format json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot"]), default="text",
              show_default=True, help="How to print the graph.")
@click.option("--diff", "other", metavar="OTHER", help="Print what changes from TARGET to OTHER instead.")
@with_preset_options
def show(target, cost, as_json, fmt, other, resolution, width, batch, classes):
    """Print a preset or a graph file, optionally with its costs.

    With --cost --json, print one JSON object: macs, params, lightnl_macs and per-node rows.
    With --diff OTHER, print a structural diff (nodes matched by name) and the cost change.
    """
    graph = load_target(target, resolution, width, batch, classes)
    if other is not None:
        from autonl.ir.diff import diff_graphs
        second = load_target(other, resolution, width, batch, classes)
        lines = diff_graphs(graph, second)
        for line in lines:
            click.echo(line)
        a, b = analyze_cost(graph), analyze_cost(second)
        click.echo(f"{len(lines)} difference(s); MACs {a.macs:,} -> {b.macs:,} ({b.macs - a.macs:+,}), "
                   f"params {a.params:,} -> {b.params:,} ({b.params - a.params:+,})")
        return
    if as_json:
        fmt = "json"
    if cost and fmt == "json":
        click.echo(json.dumps(analyze_cost(graph).to_json(), indent=1))
        return
    click.echo(render(graph, fmt), nl=False)
    if cost:
        if fmt == "dot":
            raise AutonlError("--cost prints a table and cannot be combined with --format dot")
        report = analyze_cost(graph)
        click.echo()
        click.echo(report.table())
        if report.relaxed:
            click.echo("(relaxed graph: figures are cheapest..dearest option of each node)")


@cli.command()
def presets():
    """List the built-in networks."""
    for name, p in sorted(all_presets().items()):
        click.echo(f"{name:<14} {p.doc}")


@cli.command()
@click.argument("name", required=False)
def ops(name):
    """List the ops, or describe one with its attributes."""
    table = all_ops()
    if name is None:
        for n, op in sorted(table.items()):
            kind = "composite" if op.composite else "primitive"
            summary = op.doc if len(op.doc) <= 90 else op.doc[:87] + "..."
            click.echo(f"{n:<16} {kind:<10} {summary}")
        return
    from autonl.ir.ops import get_op
    op = get_op(name)
    click.echo(f"{op.name} ({'composite' if op.composite else 'primitive'}, "
               f"{op.num_inputs} input(s)): {op.doc}")
    for key, spec in op.attrs.items():
        default = "required" if spec.default is REQUIRED else f"default {spec.default!r}"
        allowed = f", one of {list(spec.one_of)}" if spec.one_of else ""
        click.echo(f"  {key:<10} {spec.type:<6} {default}{allowed}  {spec.doc}")


@cli.command("passes")
def list_passes():
    """List the registered passes (built-ins and plugins)."""
    for name, cls in all_passes().items():
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        click.echo(f"{name:<18} {doc}")


@cli.command()
@click.argument("target")
@click.option("--pass", "-p", "pass_specs", multiple=True, required=True,
              help="A pass name, or name{option=value}; repeat for a pipeline.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write here (default: stdout).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot"]),
              help="Output format (default: from the --out suffix, else text).")
@click.option("--dump-dir", type=click.Path(file_okay=False), help="Write the IR before and after each pass.")
@click.option("--timing", is_flag=True, help="Print per-pass timings to stderr.")
@with_preset_options
def opt(target, pass_specs, out, fmt, dump_dir, timing, resolution, width, batch, classes):
    """Run passes over a preset or graph file and print or write the result."""
    graph = load_target(target, resolution, width, batch, classes)
    timer = Timing()
    instruments = [timer] + ([DumpIR(Path(dump_dir))] if dump_dir else [])
    result = PassManager(list(pass_specs), instruments=instruments)(graph)
    if timing:
        click.echo(timer.table(), err=True)
    if out:
        atomic_write(out, render(result.graph, format_for(out, fmt)))
        click.echo(f"wrote {out} ({len(result.graph)} nodes, modified: {'yes' if result.modified else 'no'})",
                   err=True)
    else:
        click.echo(render(result.graph, fmt or "text"), nl=False)


DATA_HELP = "Built-in dataset (digits, longrange) or an ImageFolder root with train/ and val/."


@cli.command()
@click.argument("target")
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=0.1, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "rmsprop"]), default="sgd", show_default=True)
@click.option("--weight-decay", type=float, default=4e-5, show_default=True)
@click.option("--warmup-steps", type=int, default=20, show_default=True)
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--eval-every", type=int, default=100, show_default=True)
@click.option("--checkpoint-every", type=int, default=100, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Data-loading processes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (GPU when present), cpu, cuda, cuda:N.")
@click.option("--train-size", type=int, help="Use at most this many training images.")
@click.option("--val-size", type=int, help="Use at most this many validation images.")
@click.option("--skip-corrupt", is_flag=True, help="Skip unreadable images instead of stopping.")
@click.option("--precise-bn", type=int, default=20, show_default=True,
              help="Training batches to re-estimate BN statistics before each evaluation (0: off).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--init", "init", type=click.Path(), help="Start from these weights (model folder or .pt).")
@click.option("--from-scratch", is_flag=True, help="A model folder as TARGET: re-initialise its weights.")
@click.option("--resolution", "-r", type=int, help="Input size for presets (default 32).")
@click.option("--width", "-w", type=float, help="Width multiplier for presets.")
def train(target, data, out, steps, batch_size, lr, optimizer, weight_decay, warmup_steps, label_smoothing,
          eval_every, checkpoint_every, workers, seed, device, train_size, val_size, skip_corrupt, precise_bn,
          resume, init, from_scratch, resolution, width):
    """Train a preset, graph file or model folder on a dataset; writes metrics, curves,
    checkpoints, model. A model folder (e.g. from `autonl derive`) starts from its own
    weights (fine-tuning) unless --from-scratch."""
    model_folder = Path(target).is_dir() and (Path(target) / "weights.pt").is_file()
    if from_scratch and init:
        raise AutonlError("--from-scratch and --init contradict each other; pick one")
    if model_folder and not from_scratch and init is None:
        init = target
    from autonl.backends.torch.data import num_classes
    from autonl.backends.torch.train import TrainConfig, train as run_training

    cfg = TrainConfig(data=data, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
                      weight_decay=weight_decay, warmup_steps=warmup_steps, label_smoothing=label_smoothing,
                      workers=workers, seed=seed, device=device, eval_every=eval_every,
                      checkpoint_every=checkpoint_every, train_size=train_size, val_size=val_size,
                      skip_corrupt=skip_corrupt, precise_bn=precise_bn)
    graph = None
    if not resume:
        if target in all_presets():  # a preset gets as many outputs as the data has classes
            graph = load_target(target, resolution or 32, width, None, num_classes(data))
        else:
            graph = load_target(target, resolution, width)
    result = run_training(graph, cfg, out, resume=resume, init=init)
    click.echo(json.dumps(result))
    click.echo(f"run folder: {out} (metrics.jsonl, curves.png, checkpoint.pt, model/)", err=True)


@cli.command("eval")
@click.argument("model")
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--val-size", type=int, help="Use at most this many validation images.")
@click.option("--skip-corrupt", is_flag=True)
def evaluate_cmd(model, data, batch_size, workers, device, val_size, skip_corrupt):
    """Evaluate a model folder (or a run folder's model/) on a dataset's validation split."""
    from autonl.backends.torch.data import make_loaders
    from autonl.backends.torch.train import evaluate, pick_device
    from autonl.backends.torch.weights import load_model

    folder = Path(model)
    if (folder / "model").is_dir():
        folder = folder / "model"
    graph, module = load_model(folder)
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    _, val_loader, classes = make_loaders(data, resolution=resolution, batch_size=batch_size, workers=workers,
                                          seed=0, skip_corrupt=skip_corrupt, val_size=val_size, train_size=batch_size)
    out_classes = graph.type_of(graph.outputs[0]).shape[-1]
    if out_classes != classes:
        raise AutonlError(f"the model predicts {out_classes} classes but '{data}' has {classes}")
    dev = pick_device(device)
    result = {"model": str(folder), "data": data, **evaluate(module.to(dev), val_loader, dev)}
    click.echo(json.dumps(result))


def parse_macs(text: str) -> float:
    """'350M', '1.2G', '500K' or a plain number."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9}
    t = text.strip().upper()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise AutonlError(f"'{text}' is not a MAC count; write e.g. 350M, 1.2G or 350000000") from None


def relaxed_graph(target: str, space: str, resolution: int | None, width: float | None, classes: int) -> Graph:
    """The graph to search: a relaxed preset or file as it is, a discrete one after
    insert-lightnl and relax with ``space``."""
    graph = load_target(target, resolution, width, None, classes) if target in all_presets() \
        else load_target(target, resolution, width)
    if not graph.relaxed:
        graph = PassManager([f'insert-lightnl{{space="{space}"}}', f'relax{{space="{space}"}}'])(graph).graph
    return graph


@cli.command()
@click.argument("target", default="search-space")
@click.option("--target-macs", "target_macs", required=True, help="MAC target, e.g. 350M (at --cost-resolution).")
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--space", default="autonl", show_default=True,
              help="Search-space file (TOML/JSON) or built-in name, for graphs without choices.")
@click.option("--lambda", "lam", type=float, default=5.0, show_default=True, help="Weight of the cost term.")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--warmup-steps", type=int, default=100, show_default=True, help="Steps with every option on.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=0.05, show_default=True, help="Weights (SGD).")
@click.option("--arch-lr", type=float, default=0.05, show_default=True, help="Thresholds (Adam).")
@click.option("--arch-optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--tau", type=float, default=1.0, show_default=True, help="Sigmoid temperature of the gates.")
@click.option("--resolution", "-r", type=int, help="Search input size for presets (default 32).")
@click.option("--width", "-w", type=float, help="Width multiplier for presets.")
@click.option("--cost-resolution", type=int, help="Count MACs at this input size (default: the search's).")
@click.option("--checkpoint-every", type=int, default=50, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (GPU when present), cpu, cuda.")
@click.option("--train-size", type=int)
@click.option("--val-size", type=int)
@click.option("--nproc", type=int, default=1, show_default=True, help="Processes (torchrun, DDP: gloo on CPU, nccl on GPU).")
@click.option("--resume", is_flag=True, help="Continue the search in --out from its checkpoint.")
def search(target, target_macs, data, out, space, lam, steps, warmup_steps, batch_size, lr, arch_lr, arch_optimizer, tau,
           resolution, width, cost_resolution, checkpoint_every, workers, seed, device, train_size, val_size,
           nproc, resume):
    """Differentiable single-path search of where LightNL goes (and kernel, expansion, skip)."""
    if nproc < 1:
        raise AutonlError("--nproc must be at least 1")
    if nproc > 1 and os.environ.get("WORLD_SIZE") is None:
        import subprocess
        args = [a for a in sys.argv[1:]]
        i = next(k for k, a in enumerate(args) if a == "--nproc" or a.startswith("--nproc="))
        del args[i:i + (1 if "=" in args[i] else 2)]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "autonl.cli.main", *args]
        return subprocess.call(cmd)
    from autonl.backends.torch.data import num_classes
    from autonl.backends.torch.search import SearchConfig, search as run_search

    macs = parse_macs(target_macs)
    graph = cfg = None
    if not resume:
        cfg = SearchConfig(target_macs=macs, data=data, lam=lam, steps=steps, warmup_steps=warmup_steps,
                           batch_size=batch_size, lr=lr, arch_lr=arch_lr, arch_optimizer=arch_optimizer, tau=tau, workers=workers, seed=seed,
                           device=device, cost_resolution=cost_resolution, checkpoint_every=checkpoint_every,
                           train_size=train_size, val_size=val_size)
        graph = relaxed_graph(target, space, resolution or (32 if target in all_presets() else None), width,
                              num_classes(data))
    result = run_search(graph, cfg, out, resume=resume)
    if result:
        click.echo(json.dumps(result))
        click.echo(f"run folder: {out} (decisions.json, metrics.jsonl, trace.jsonl, macs.png, decisions.png)",
                   err=True)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Folder to create.")
@click.option("--decisions", type=click.Path(), help="Use these decisions instead of RUN_DIR/decisions.json.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def derive(run_dir, out, decisions, force):
    """Derive a search run: discrete graph + inherited weights + costs + comparison."""
    from autonl.backends.torch.derive import comparison_table, derive_run

    result = derive_run(run_dir, out, decisions, force)
    click.echo(f"at {result['resolution']}x{result['resolution']}")
    click.echo(comparison_table({k: result[k] for k in ("derived", "mobilenetv2", "autonl-s", "autonl-l")}))
    click.echo(f"wrote {out}/ (graph.json, graph.ir, weights.pt, decisions.json, cost.json, comparison.*); "
               f"fine-tune it with: autonl train {out} --data ...", err=True)


BACKENDS = {"onnx": "ONNX (opset 17+) for onnxruntime, fp32 and optionally int8",
            "tvm": "TVM Relax library (.so) + params for a CPU target, optionally MetaSchedule-tuned"}


def load_deployable(source: str, resolution, width, batch, classes, seed: int):
    """A model folder or run folder (trained weights), or a preset or graph file (random weights)."""
    from autonl.backends.deploy import load_model_or_graph, model_folder

    if Path(source).is_dir() and model_folder(source) is not None:
        given = [n for n, v in (("--resolution", resolution), ("--width", width), ("--batch", batch),
                                ("--classes", classes)) if v is not None]
        if given:
            raise AutonlError(f"{', '.join(given)} apply to presets only, not to the model folder {source}")
        return load_model_or_graph(source)
    if Path(source).is_dir():
        raise AutonlError(f"{source}: not a model folder (graph.json + weights.pt) nor a run folder with model/")
    return load_model_or_graph(load_target(source, resolution, width, batch, classes), seed=seed)


def _load_callable(spec: str):
    """``package.module:callable`` or ``path/to/file.py:callable``."""
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
    except Exception as e:  # noqa: BLE001  (the user's module failed to import)
        raise AutonlError(f"importing {mod_name} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AutonlError(f"{mod_name} has no callable '{attr}'")
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        raise AutonlError(f"{spec}() failed: {type(e).__name__}: {e}") from None


@cli.command("import")
@click.argument("spec", metavar="MODULE:CALLABLE")
@click.option("--input-shape", default="1,3,224,224", show_default=True, help="N,C,H,W of the example input.")
@click.option("--out", "-o", "out", required=True, type=click.Path(),
              help="A graph file (.ir/.txt text form, .json), with its weights beside it as <name>.weights.pt; "
                   "or a folder, written as a model folder (graph.json, graph.ir, weights.pt).")
@click.option("--no-fold", is_flag=True, help="Keep MBConv blocks as primitives (no fold-mbconv).")
def import_cmd(spec, input_shape, out, no_fold):
    """Import a PyTorch model: MODULE:CALLABLE returns an nn.Module, which is traced
    (torch.fx; torch.export where that fails) into an IR graph of primitives with its
    weights, and its inverted-residual blocks folded into mbconv nodes."""
    from autonl.backends.deploy import check_out
    from autonl.ir.frontend import import_module
    from autonl.ir.io import save_graph

    try:
        shape = [int(v) for v in input_shape.split(",")]
    except ValueError:
        raise AutonlError(f"--input-shape {input_shape!r}: expected N,C,H,W integers, e.g. 1,3,224,224") from None
    out_path = Path(out)
    as_file = out_path.suffix in (".ir", ".txt", ".json")
    check_out(out_path.parent if as_file else out_path)
    net = _load_callable(spec)
    graph = import_module(net, shape, name=spec.rpartition(":")[2])
    import torch

    from autonl.backends.torch.lower import to_torch
    from autonl.backends.torch.weights import save_model, torch_bytes
    module = to_torch(graph)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in graph.params.items()}, strict=False)
    module.eval()
    blocks = sum(1 for n in graph if n.op == "mbconv")
    if as_file:
        from autonl.ir.io import atomic_write
        weights = out_path.with_name(out_path.stem + ".weights.pt")
        atomic_write(weights, torch_bytes({k: v.detach().cpu() for k, v in module.state_dict().items()}))
        save_graph(graph, out_path)
        click.echo(f"wrote {out_path} ({len(graph.nodes)} nodes, {blocks} mbconv blocks) and {weights}")
    else:
        save_model(graph, module, out_path)
        click.echo(f"wrote model folder {out_path}/ ({len(graph.nodes)} nodes, {blocks} mbconv blocks)")
    from autonl.passes import analyze_cost
    cost = analyze_cost(graph)
    click.echo(f"{cost.macs / 1e6:.1f}M MACs, {cost.params / 1e6:.2f}M params")


@cli.command("run")
@click.option("--data", default="builtin", show_default=True,
              help="builtin (the digits), another built-in dataset, or an ImageFolder root with train/ and val/.")
@click.option("--target-macs", "target_macs", default="300M", show_default=True,
              help="MAC target of the derived network, counted at 224x224.")
@click.option("--backend", default="onnx", show_default=True, help="onnx (fp32 + int8) or tvm (host library).")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--search-steps", type=int, default=150, show_default=True)
@click.option("--train-steps", type=int, default=150, show_default=True)
@click.option("--resolution", "-r", type=int, default=32, show_default=True, help="Search and training input size.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def run_cmd(data, target_macs, backend, out, search_steps, train_steps, resolution, seed, force):
    """The whole path in one command: search, derive, fine-tune, compile (with its parity
    check), then report.md / report.html (plots, architecture next to MobileNetV2 and
    AutoNL-S/L, costs, accuracy, latencies) and manifest.json in --out."""
    if backend not in BACKENDS:
        close = difflib.get_close_matches(backend, BACKENDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise AutonlError(f"unknown backend '{backend}'; {hint}known backends: {', '.join(BACKENDS)}")
    for name, v in (("--search-steps", search_steps), ("--train-steps", train_steps), ("--resolution", resolution)):
        if v < 1:
            raise AutonlError(f"{name} must be >= 1 (got {v})")
    from .pipeline import run_pipeline

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    summary = run_pipeline(data, parse_macs(target_macs), backend, out, search_steps, train_steps, resolution,
                           seed, force, log)
    lat = summary["latency"]
    click.echo(f"derived: {summary['derived']['derived']['macs'] / 1e6:.1f}M MACs at {summary['resolution']}x"
               f"{summary['resolution']}, val acc {summary['train']['val_acc']:.3f}; latency " +
               ", ".join(f"{k} {v:.2f} ms" for k, v in lat.items()))
    click.echo(f"report: {Path(out) / 'report.html'} (and report.md); manifest: {Path(out) / 'manifest.json'}")


@cli.command()
def targets():
    """List the named TVM targets and the target dicts they resolve to."""
    from autonl.backends.tvm import TARGETS
    for name, t in TARGETS.items():
        click.echo(f"{name:<12} {t.doc}")
        click.echo(f"{'':<12} {json.dumps(t.target_dict())}")


@cli.command("compile")
@click.argument("source")
@click.option("--backend", default="onnx", show_default=True, help=f"One of: {', '.join(BACKENDS)}.")
@click.option("--out", "-o", "out", required=True, type=click.Path(), help="Output folder.")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (static int8, calibrated on --calib-data).")
@click.option("--calib-data", default="digits", show_default=True, help="Calibration and accuracy data. " + DATA_HELP)
@click.option("--calib-images", type=int, default=256, show_default=True, help="Images to calibrate int8 on.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True)
@click.option("--eval-images", type=int, help="Validation images for the int8 accuracy check (default: all).")
@click.option("--int8-exclude", multiple=True, metavar="GLOB",
              help="Keep nodes matching this name pattern in fp32 (e.g. 'lightnl_*'); repeatable.")
@click.option("--no-fold-bn", is_flag=True, help="Keep BatchNormalization nodes.")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Weight init for presets and graph files.")
@click.option("--skip-corrupt", is_flag=True)
@click.option("--target", "target_name", default="host", show_default=True,
              help="TVM: a named target (autonl targets).")
@click.option("--tune-trials", type=int, default=0, show_default=True,
              help="TVM: MetaSchedule trials per task (0: untuned, unless --out holds a tuning database).")
@click.option("--tuning-dir", type=click.Path(file_okay=False), help="TVM: the tuning database (default OUT/tuning).")
@click.option("--no-prepack", is_flag=True, help="TVM: no weight-layout prepacking after tuning.")
@with_preset_options
def compile_cmd(source, backend, out, int8, calib_data, calib_images, calib_method, eval_images, int8_exclude, no_fold_bn,
                opset, seed, skip_corrupt, target_name, tune_trials, tuning_dir, no_prepack, resolution, width, batch,
                classes):
    """Compile a model for deployment: SOURCE is a model folder, a run folder (its model/),
    a preset or a graph file (the last two with random weights, for latency work).

    Writes model.onnx (and model.int8.onnx with --int8), deploy_graph.ir and manifest.json
    (inputs, outputs, MACs, checks, files with sha256) to --out, after checking the ONNX
    model in onnxruntime against the torch backend (max |diff| <= 1e-4)."""
    if backend not in BACKENDS:
        close = difflib.get_close_matches(backend, BACKENDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise AutonlError(f"unknown backend '{backend}'; {hint}known backends: {', '.join(BACKENDS)}")
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if backend == "tvm":
        from autonl.backends.tvm import get_target
        target = get_target(target_name)
        if tune_trials < 0:
            raise AutonlError(f"--tune-trials must be >= 0 (got {tune_trials})")
        model = load_deployable(source, resolution, width, batch, classes, seed)
        from autonl.backends.tvm.compile import compile_tvm
        manifest = compile_tvm(model, out, target, trials_per_task=tune_trials, prepack=not no_prepack,
                               tuning_dir=tuning_dir, log=log)
        files = ", ".join(f"{k} ({v['bytes'] / 1e6:.1f} MB)" for k, v in manifest["files"].items())
        click.echo(f"wrote {out}/: {files}, manifest.json")
        return
    model = load_deployable(source, resolution, width, batch, classes, seed)
    from autonl.backends.onnx.compile import compile_onnx

    manifest = compile_onnx(model, out, int8=int8, calib_data=calib_data, calib_images=calib_images,
                            calib_method=calib_method, eval_images=eval_images, fold_bn=not no_fold_bn,
                            opset=opset, skip_corrupt=skip_corrupt, int8_exclude=int8_exclude, log=log)
    files = ", ".join(f"{k} ({v['bytes'] / 1e6:.1f} MB)" for k, v in manifest["files"].items())
    click.echo(f"wrote {out}/: {files}, manifest.json")

def _write_json(path: str | None, data: dict) -> None:
    if path:
        from autonl.ir.io import atomic_write
        atomic_write(path, json.dumps(data, indent=1) + "\n")
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("folder", type=click.Path())
@click.option("--rpc", "rpc_addr", metavar="HOST:PORT", help="Run on a TVM RPC server (python3 -m tvm.exec.rpc_server).")
@click.option("--qemu", is_flag=True, help="Run the folder's aarch64 C++ runner here under qemu-aarch64.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs.")
@click.option("--input", "input_npy", type=click.Path(), help="A float32 .npy input (default: the folder's input.npy).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
def deploy(folder, rpc_addr, qemu, runs, input_npy, json_out):
    """Run a TVM deploy folder (autonl compile --backend tvm) on a device: through TVM RPC
    (--rpc: upload the library, run and time it there) or under qemu-user (--qemu: the
    cross-built runner). Prints the median latency and the largest difference from the
    logits PyTorch gave on this machine."""
    from autonl.backends.tvm import device

    if bool(rpc_addr) == bool(qemu):
        raise AutonlError("give one of --rpc HOST:PORT or --qemu")
    if runs < 1:
        raise AutonlError(f"--runs must be >= 1 (got {runs})")
    res = device.run_qemu(folder, runs, input_npy) if qemu else device.run_rpc(rpc_addr, folder, runs, input_npy)
    diff = res.get("vs_reference_max_abs_diff")
    click.echo(f"{res['where']}: median {res['median_ms']:.2f} ms over {res['runs']} runs"
               + (f"; max |output - reference| {diff:.2e}" if diff is not None else ""))
    _write_json(json_out, res)


@cli.command()
@click.argument("folder", type=click.Path())
@click.option("--runs", type=int, default=5, show_default=True, help="Runs; each kernel's median is reported.")
@click.option("--top", type=int, default=15, show_default=True, help="Kernels to print.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every kernel's time as JSON.")
def profile(folder, runs, top, json_out):
    """Per-layer (fused kernel) time of a TVM deploy folder, on the machine the library was
    built for (run it on the board for aarch64 folders). TVM 0.27's runtime has no VM
    profiler: kernels are timed through the VM's instrument hook."""
    from autonl.backends.tvm import device

    if runs < 1:
        raise AutonlError(f"--runs must be >= 1 (got {runs})")
    res = device.profile(folder, runs=runs)
    click.echo(f"{res['library']} ({res['target']}): {res['model_us'] / 1e3:.2f} ms a run; its "
               f"{len(res['kernels'])} kernels take {res['kernels_us'] / 1e3:.2f} ms (median of {runs} runs, "
               f"timed one by one through the VM's instrument hook)")
    click.echo(f"{'kernel':<52} {'calls':>5} {'us':>10} {'share':>6}")
    for r in res["kernels"][:top]:
        click.echo(f"{r['kernel'][:52]:<52} {r['calls']:>5} {r['total_us']:>10.1f} {r['share']:>6.1%}")
    _write_json(json_out, res)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn errors into one ``error:`` line and an exit code."""
    debug = os.environ.get("AUTONL_DEBUG") == "1"
    try:
        rv = cli.main(args=argv, prog_name="autonl", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 1
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except AutonlError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return 1
    except BrokenPipeError:
        return 1
    except OSError as e:
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    except Exception as e:  # a bug in autonl, not bad input: still one line, with the way to more
        if debug:
            raise
        click.echo(f"error: internal error: {type(e).__name__}: {e} (set AUTONL_DEBUG=1 for the traceback)",
                   err=True)
        return 3


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
