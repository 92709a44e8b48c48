"""Commands that compile and run models: compile, run, targets, deploy, profile."""
from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from autonl.backends.base import Backend
from autonl.backends.catalog import all_backends, get_backend
from autonl.workflows.compile import CHECK_IMAGES
from autonl.ir import AutonlError
from autonl.ir.ops import LIGHTNL_NORMS

from autonl.backends.torch.config import RESOLUTION, SEED, TrainConfig
from autonl.ir.ranges import NON_NEGATIVE_INT, POSITIVE_INT, Range

from .app import cli
from .options import (DATA_HELP, THREADS, CostTarget, augmentation_options, cost_target_options, lock_output, ranged,
                      set_torch_threads, with_preset_options, write_json)


@cli.command("run")
@click.argument("source", default="search-space")
@click.option("--data", default="builtin", show_default=True,
              help="builtin (the digits), another built-in dataset, or an ImageFolder root (ROOT/train/ with ROOT/val/, or "
                   "ROOT/<class>/ alone).")
@cost_target_options("MAC target of the derived network, counted at 224x224 for a preset, at its own input size for "
                     "a network of your own [default: 300M for the built-in space unless --target-latency; required "
                     "for a SOURCE of your own].", "Latency target instead, e.g. 5ms, predicted by --latency-table "
                     "(a table of the search-space preset with the data's classes).")
@click.option("--backend", default="onnx", show_default=True, help="onnx (fp32 + int8) or tvm (host library).")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--search-steps", type=ranged(Range(2)),
              help="Search steps (a fifth of them, at least one, warm-up) [default: fitted to the data].")
@click.option("--train-steps", type=ranged(POSITIVE_INT), help="Fine-tuning steps [default: fitted to the data].")
@click.option("--batch-size", type=ranged(POSITIVE_INT), help="Batch size of both [default: fitted to the data].")
@click.option("--resolution", "-r", type=ranged(RESOLUTION),
              help="Search and training input size [default: fitted to the data's image sizes].")
@click.option("--lightnl-norm", "lightnl_norm", type=click.Choice(LIGHTNL_NORMS),
              help="LightNL candidates' norm: l2 (bounded, the autonl space's default) or none (the paper's).")
@click.option("--threads", type=ranged(THREADS), help="CPU threads for torch [default: the usable CPUs, fewer while other processes keep them busy].")
@click.option("--seed", type=ranged(SEED), default=0, show_default=True)
@click.option("--space", default="autonl", show_default=True,
              help="For a SOURCE without choices: search-space file or built-in name (autonl: blocks and LightNL; "
                   "lightnl-only: LightNL placement, ratio and stride, your blocks kept as they are).")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Train the network to beat (SOURCE itself, or a MobileNetV2 of the derived network's MACs for the "
                   "built-in space) for the same steps and compare it in the report.")
@augmentation_options(TrainConfig)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def run_cmd(source, data, target, backend, out, search_steps, train_steps, batch_size, resolution, lightnl_norm,
            threads, seed, space, baseline, crop_scale, flip, eval_crop, force):
    """The whole path in one command: search, derive, fine-tune, compile (with its parity
    check and a check on the validation images), then report.md / report.html (plots,
    architecture next to MobileNetV2 and AutoNL-S/L, costs, accuracy per class against a
    baseline trained for the same steps, latencies) and manifest.json in --out.

    SOURCE: what to search [default: search-space, the built-in AutoNL space]: a preset, a
    graph file (e.g. from autonl import), a model folder or a run folder. A network without
    choices is searched with --space and is the report's baseline. Resolution, batch and
    steps left out are fitted to the data and printed with the reason."""
    from autonl.workflows.run import DEFAULT_TARGET_MACS, check_own_network_target, run_pipeline

    target_macs, target_latency, latency_table = target
    lock_output(out, "run", inputs=(data, latency_table))
    set_torch_threads(threads)
    chosen = get_backend(backend)
    check_own_network_target(source, target_macs, target_latency)
    target = CostTarget.parse(target_macs, target_latency, latency_table, default_macs=DEFAULT_TARGET_MACS)
    macs, latency = target.macs, target.latency_ms
    from autonl.workflows.report import fmt_ms

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    summary = run_pipeline(data, macs, chosen, out, search_steps, train_steps, resolution, seed, force, log,
                           batch_size=batch_size, lightnl_norm=lightnl_norm, target_latency_ms=latency,
                           latency_table=latency_table, source=source, space=space, baseline=baseline,
                           aug={k: v for k, v in (("crop_scale", crop_scale), ("flip", flip),
                                                  ("eval_crop", eval_crop)) if v is not None})
    click.echo(f"derived: {summary.derived_macs / 1e6:.1f}M MACs at {summary.resolution}x"
               f"{summary.resolution}, val acc {summary.val_acc:.3f} (chance {summary.chance:.3f}); "
               f"latency " +
               ", ".join(f"{k} {fmt_ms(v)} ms" for k, v in summary.latency.items()))
    a = summary.int8_accuracy
    if a:
        click.echo(f"deployed: onnxruntime fp32 val acc {a.fp32:.3f}, int8 {a.int8:.3f} "
                   f"({100 * a.change:+.1f} points)")
    b = summary.baseline
    if b:
        click.echo(f"baseline: {b.name}, {b.steps} steps: val acc {b.val_acc:.3f}, onnxruntime fp32 "
                   f"{fmt_ms(b.onnxruntime_ms)} ms")
    click.echo(f"report: {Path(out) / 'report.html'} (and report.md); manifest: {Path(out) / 'manifest.json'}")


@cli.command()
def targets():
    """List the named TVM targets and the target dicts they resolve to."""
    from autonl.workflows.deploy import tvm_targets
    for name, t in tvm_targets().items():
        click.echo(f"{name:<12} {t.doc}")
        click.echo(f"{'':<12} {json.dumps(t.target_dict())}")


RUNS = Range(1, 1_000_000)

def option_type(o):
    """The click type of backend option ``o``: a choice, a number in the range its options
    dataclass gives it (the backend checks the same one), or ``o.type``."""
    if isinstance(o.type, tuple):
        return click.Choice(list(o.type))
    if o.range is not None:
        return ranged(o.range)
    return o.type


def backend_options(f, timing: bool = False):
    """One flag per backend option (every registered backend), with its default; which backend
    an option belongs to is checked after parsing (:func:`options_for`). ``timing``: only the
    options that apply when a model is timed (``Option.timing``; not int8 and its calibration)."""
    owners: dict[str, tuple] = {}
    for b in all_backends().values():
        for o in b.options:
            owners.setdefault(o.name, (o, []))[1].append(b.name)
    for o, names in reversed(list(owners.values())):
        # a timing command parses the others too (hidden), to refuse them with one clear line
        f = option_flag(o, help=f"{'/'.join(names).upper()}: {o.help}", hidden=timing and not o.timing)(f)
    return f


def option_flag(o, *decls: str, help: str | None = None, **extra):
    """``click.option`` for backend option ``o``: its flag (or ``decls``: flag and parameter
    name), default, type and bounds as its options dataclass gives them; ``help``: the
    command's own wording of it [default: the option's]."""
    kind = {"is_flag": True} if o.type is bool else {"multiple": True} if o.multiple else \
        {"type": option_type(o), "show_default": o.default is not None}
    return click.option(*(decls or (o.flag, o.name)), default=o.default, metavar=o.metavar,
                        help=o.help if help is None else help, **kind, **extra)


def options_flags(options_cls, helps: dict[str, str], decls: dict[str, tuple[str, ...]] | None = None):
    """The flags of some fields of a backend's options dataclass (``helps``: {field: the
    command's help}, in flag order) for a command that takes only those, e.g. tune-space's
    tuning options from :class:`~autonl.backends.tvm.options.TvmOptions`: defaults, types and
    bounds written once, in the dataclass."""
    from autonl.backends.base import options_of
    by_name = {o.name: o for o in options_of(options_cls)}
    decls = decls or {}

    def add(f):
        for name in reversed(list(helps)):
            f = option_flag(by_name[name], *decls.get(name, ()), help=helps[name])(f)
        return f
    return add


def timing_backend_options(f):
    """:func:`backend_options` of the commands that time models (latency-table, bench)."""
    return backend_options(f, timing=True)


def options_for(backend: Backend, values: dict, timing: bool = False) -> dict:
    """The options given on the command line for ``backend``; an option of another backend
    is an error naming it and its backend (never silently dropped), and so is, in a command
    that times models (``timing``), an option that does not apply to timing."""
    ctx = click.get_current_context()
    given = {k for k in values if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    mine = {o.name for o in backend.options}
    for name in sorted(given - mine):
        owner = [b.name for b in all_backends().values() if any(o.name == name for o in b.options)]
        flag = "--" + name.replace("_", "-")
        raise AutonlError(f"{flag} applies to the {' and '.join(owner)} backend, not to {backend.name}")
    if timing:
        for o in backend.options:
            if o.name in given and not o.timing:
                raise AutonlError(f"{o.flag} applies to autonl compile (int8 and its calibration), not to timing: "
                                  f"latencies are measured on the fp32 model; for int8, autonl compile --int8 and "
                                  f"time the folder's runners")
    return {k: v for k, v in values.items() if k in given}


@cli.command("compile")
@click.argument("source")
@click.option("--backend", default="onnx", show_default=True, help="A registered backend (autonl compile --help).")
@click.option("--out", "-o", "out", required=True, type=click.Path(), help="Output folder.")
@click.option("--seed", type=ranged(SEED), default=0, show_default=True,
              help="Weight init for presets and graph files.")
@click.option("--data", help="Validation images to check the compiled model on (finite logits, parity with "
              "torch) [default: the data the model was trained on, as its folder records]. " + DATA_HELP)
@click.option("--check-images", type=ranged(NON_NEGATIVE_INT), default=CHECK_IMAGES, show_default=True,
              help="Validation images for those checks (0: none).")
@click.option("--allow-nonfinite", is_flag=True, help="Write the model even if some logits are inf/NaN on them.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (a tuning/ database in it is kept).")
@backend_options
@with_preset_options
def compile_cmd(source, backend, out, seed, data, check_images, allow_nonfinite, force, resolution, width, batch,
                classes, **options):
    """Compile a model for deployment: SOURCE is a model folder, a run folder (its model/),
    a preset or a graph file (the last two with random weights, for latency work).

    onnx writes model.onnx (and model.int8.onnx with --int8); tvm a library (model.so, or
    model.aarch64.so and a C++ runner for boards). Both write deploy_graph.ir and
    manifest.json (inputs, outputs, MACs, checks, files with sha256) to --out, after checking
    the compiled model against the torch backend (max |diff| <= 1e-4), and on real
    validation images when there are any (--data, or the data the model records): a model
    whose logits are not finite on one of them is refused (--allow-nonfinite)."""
    from autonl.workflows.compile import compile_source

    chosen = get_backend(backend)
    given = options_for(chosen, options)
    lock_output(out, "compile", inputs=(source, data))
    if given.get("tuning_dir"):
        from .options import WRITING
        WRITING.append(("tuning-dir", str(given["tuning_dir"])))    # named by the hint after Ctrl-C
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    result = compile_source(chosen, source, out, given, log, seed, (resolution, width, batch, classes), data=data,
                            check_images=check_images, allow_nonfinite=allow_nonfinite, force=force)
    click.echo(result.weights_line, err=True)
    click.echo(f"wrote {out}/: {result.files_line}, manifest.json")


@cli.command()
@click.argument("folder", type=click.Path())
@click.option("--rpc", "rpc_addr", metavar="HOST:PORT", help="Run on a TVM RPC server (python3 -m tvm.exec.rpc_server).")
@click.option("--qemu", is_flag=True, help="Run the folder's aarch64 C++ runner here under qemu-aarch64.")
@click.option("--runs", type=ranged(RUNS), default=20, show_default=True, help="Timed runs.")
@click.option("--input", "input_npy", type=click.Path(), help="A float32 .npy input (default: the folder's input.npy).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
def deploy(folder, rpc_addr, qemu, runs, input_npy, json_out):
    """Run a TVM deploy folder (autonl compile --backend tvm) on a device: through TVM RPC
    (--rpc: upload the library, run and time it there) or under qemu-user (--qemu: the
    cross-built runner). Prints the median latency and the largest difference from the
    logits PyTorch gave on this machine."""
    from autonl.workflows.deploy import deploy_folder

    res = deploy_folder(folder, rpc_addr, qemu, runs, input_npy)
    diff = res.max_abs_diff
    click.echo(f"{res.where}: median {res.median_ms:.2f} ms over {res.runs} runs"
               + (f"; max |output - reference| {diff:.2e}" if diff is not None else ""))
    _random_weights_line(folder)
    write_json(json_out, res.doc)


def _random_weights_line(folder) -> None:
    """One line when the folder was compiled from random weights (its manifest says so)."""
    from autonl.workflows.deploy import random_weights_note
    note = random_weights_note(folder)
    if note:
        click.echo(note, err=True)


@cli.command()
@click.argument("folder", type=click.Path())
@click.option("--runs", type=ranged(RUNS), default=5, show_default=True, help="Runs; each kernel's median is reported.")
@click.option("--top", type=ranged(POSITIVE_INT), default=15, show_default=True, help="Kernels to print.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every kernel's time as JSON.")
def profile(folder, runs, top, json_out):
    """Per-layer (fused kernel) time of a TVM deploy folder, on the machine the library was
    built for (run it on the board for aarch64 folders). TVM 0.27's runtime has no VM
    profiler: kernels are timed through the VM's instrument hook."""
    from autonl.workflows.deploy import profile_folder

    res = profile_folder(folder, runs)
    click.echo(f"{res.library} ({res.target}): {res.model_us / 1e3:.2f} ms a run; its "
               f"{len(res.kernels)} kernels take {res.kernels_us / 1e3:.2f} ms (median of {runs} runs, "
               f"timed one by one through the VM's instrument hook)")
    click.echo(f"{'kernel':<52} {'calls':>5} {'us':>10} {'share':>6}")
    for r in res.kernels[:top]:
        click.echo(f"{r['kernel'][:52]:<52} {r['calls']:>5} {r['total_us']:>10.1f} {r['share']:>6.1%}")
    _random_weights_line(folder)
    write_json(json_out, res.doc)
