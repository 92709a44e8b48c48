"""Commands on graphs: show, presets, ops, passes, opt, import."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from autonl.ir import AutonlError, render
from autonl.ir.files import format_for
from autonl.ir.ops import all_ops
from autonl.ir.ops.op_registry import REQUIRED
from autonl.ir import all_presets, atomic_write
from autonl.passes import PIPELINES, DumpIR, PassManager, PassTimes, all_passes, analyze_cost, get_pipeline
from autonl.passes.sources import load_source
from autonl.workflows.sources import Source, weighted_model

from .app import cli
from .options import InputShape, with_preset_options


@cli.command()
@click.argument("source")
@click.option("--cost", is_flag=True, help="Add the per-block cost table (MACs, parameters).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (same as --format json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot"]), default="text",
              show_default=True, help="How to print the graph.")
@click.option("--diff", "other", metavar="OTHER", help="Print what changes from SOURCE to OTHER instead.")
@with_preset_options
def show(source, cost, as_json, fmt, other, resolution, width, batch, classes):
    """Print a preset or a graph file, optionally with its costs.

    With --cost --json, print one JSON object: macs, params, lightnl_macs and per-node rows.
    With --diff OTHER, print a structural diff (nodes matched by name) and the cost change.
    """
    graph = load_source(source, resolution, width, batch, classes)
    if other is not None:
        from autonl.ir import diff_graphs
        second = load_source(other, resolution, width, batch, classes)
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
    """List the registered passes (built-ins and plugins), then the named pipelines."""
    for name, cls in all_passes().items():
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        click.echo(f"{name:<18} {doc}")
    click.echo("\npipelines (PassManager(NAME), autonl opt --pipeline NAME):")
    for name, p in PIPELINES.items():
        click.echo(f"{name:<18} {' -> '.join(p.passes)}: {p.doc}")


@cli.command()
@click.argument("source")
@click.option("--pipeline", "pipeline", metavar="NAME", help="Run this registered pipeline first (autonl passes).")
@click.option("--pass", "-p", "pass_specs", multiple=True,
              help="A pass name, or name{option=value}; repeat for a pipeline.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write here (default: stdout).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot"]),
              help="Output format (default: from the --out suffix, else text).")
@click.option("--dump-dir", type=click.Path(file_okay=False), help="Write the IR before and after each pass.")
@click.option("--timing", is_flag=True, help="Print per-pass timings to stderr.")
@with_preset_options
def opt(source, pipeline, pass_specs, out, fmt, dump_dir, timing, resolution, width, batch, classes):
    """Run passes over a preset, graph file or model folder and print or write the result.

    A model folder (or a graph file with <name>.weights.pt beside it) goes through the passes
    with its weights, and -o FILE writes them beside FILE as <FILE stem>.weights.pt, where
    `autonl compile FILE` finds them; a pass that leaves nodes without trained weights
    (insert-lightnl, say) writes the graph alone and says so."""
    passes = [*(get_pipeline(pipeline).passes if pipeline else ()), *pass_specs]
    if not passes:
        raise click.UsageError("give --pipeline NAME or at least one --pass/-p")
    resolved = Source.resolve(source)
    graph = resolved.graph(resolution, width, batch, classes)
    weighted = weighted_model(resolved, graph)
    timer = PassTimes()
    instruments = [timer] + ([DumpIR(Path(dump_dir))] if dump_dir else [])
    result = PassManager(passes, instruments=instruments)(weighted if weighted is not None else graph)
    if timing:
        click.echo(timer.table(), err=True)
    if not out:
        click.echo(render(result.graph, fmt or "text"), nl=False)
        if weighted is not None:
            click.echo(f"note: the weights of {source} were not written (give -o FILE to write them beside FILE)",
                       err=True)
        return
    weights_file, why_not = None, None
    if weighted is not None:
        from autonl.backends.torch.lower import to_torch_with_weights
        from autonl.backends.torch.train.weights import torch_bytes
        from autonl.ir import Model
        try:
            module = to_torch_with_weights(Model(result.graph, result.weights))
            weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        except AutonlError as e:      # a relaxed graph, or nodes the passes added
            why_not = str(e)
        else:
            weights_file = Path(out).with_name(Path(out).stem + ".weights.pt")
            atomic_write(weights_file, torch_bytes(weights))
    atomic_write(out, render(result.graph, format_for(out, fmt)))
    click.echo(f"wrote {out} ({len(result.graph)} nodes, modified: {'yes' if result.modified else 'no'})"
               + (f" and its weights {weights_file}" if weights_file else ""), err=True)
    if why_not:
        click.echo(f"warning: the weights of {source} do not fit the result, so only the graph was written "
                   f"({why_not}); it compiles with random weights", err=True)


def _load_callable(spec: str):
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


@cli.command("import")
@click.argument("spec", metavar="MODULE:CALLABLE")
@click.option("--input-shape", type=InputShape(), default="1,3,224,224", show_default=True,
              help="N,C,H,W of the example input (each at most 4096).")
@click.option("--out", "-o", "out", required=True, type=click.Path(),
              help="A graph file (.ir/.txt text form, .json), with its weights beside it as <name>.weights.pt; "
                   "or a folder, written as a model folder (graph.json, graph.ir, weights.pt).")
@click.option("--no-fold", is_flag=True, help="Keep MBConv blocks as primitives (no fold-mbconv).")
def import_cmd(spec, input_shape, out, no_fold):
    """Import a PyTorch model: MODULE:CALLABLE returns an nn.Module, which is exported
    (torch.export in eval mode, core ATen; torch.fx where export fails) into an IR graph of
    primitives with its weights, loaded strictly, and its inverted-residual blocks folded
    into mbconv nodes."""
    from autonl.backends.manifest import check_out
    from autonl.backends.torch.importer import import_module
    from autonl.backends.torch.lower import to_torch_with_weights
    from autonl.backends.torch.train.weights import save_model, torch_bytes
    from autonl.ir import save_graph

    shape = list(input_shape)
    out_path = Path(out)
    as_file = out_path.suffix in (".ir", ".txt", ".json")
    check_out(out_path.parent if as_file else out_path)
    net = _load_callable(spec)
    try:
        model = import_module(net, shape, name=spec.rpartition(":")[2], fold_blocks=not no_fold)
    except SystemExit as e:  # the module's forward exited while being traced
        raise AutonlError(f"{spec}: the module exited while being traced (SystemExit: {e.code!r})") from None
    graph, module = model.graph, to_torch_with_weights(model)
    blocks = sum(1 for n in graph if n.op == "mbconv")
    if as_file:
        weights = out_path.with_name(out_path.stem + ".weights.pt")
        atomic_write(weights, torch_bytes({k: v.detach().cpu() for k, v in module.state_dict().items()}))
        save_graph(graph, out_path)
        click.echo(f"wrote {out_path} ({len(graph.nodes)} nodes, {blocks} mbconv blocks) and {weights}")
    else:
        save_model(graph, module, out_path)
        click.echo(f"wrote model folder {out_path}/ ({len(graph.nodes)} nodes, {blocks} mbconv blocks)")
    cost = analyze_cost(graph)
    click.echo(f"{cost.macs / 1e6:.1f}M MACs, {cost.params / 1e6:.2f}M params")
