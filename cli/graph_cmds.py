"""Commands on graphs: show, presets, ops, passes, opt, import."""
from __future__ import annotations

import json
from pathlib import Path

import click

from autonl.ir import AutonlError, render
from autonl.ir.ops import all_ops
from autonl.ir.ops.op_registry import REQUIRED
from autonl.ir import all_presets
from autonl.passes import PIPELINES, DumpIR, PassManager, PassTimes, all_passes, analyze_cost, get_pipeline
from autonl.passes.sources import load_source
from autonl.workflows.sources import Source, weighted_model, write_pass_result

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
    weights_file, why_not = write_pass_result(result.graph, result.weights, out, fmt, weighted is not None)
    click.echo(f"wrote {out} ({len(result.graph)} nodes, modified: {'yes' if result.modified else 'no'})"
               + (f" and its weights {weights_file}" if weights_file else ""), err=True)
    if why_not:
        click.echo(f"warning: the weights of {source} do not fit the result, so only the graph was written "
                   f"({why_not}); it compiles with random weights", err=True)


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
    from autonl.workflows.importing import import_callable

    res = import_callable(spec, input_shape, out, no_fold)
    if res.weights is not None:
        click.echo(f"wrote {res.out} ({res.nodes} nodes, {res.blocks} mbconv blocks) and {res.weights}")
    else:
        click.echo(f"wrote model folder {res.out}/ ({res.nodes} nodes, {res.blocks} mbconv blocks)")
    click.echo(f"{res.macs / 1e6:.1f}M MACs, {res.params / 1e6:.2f}M params")
