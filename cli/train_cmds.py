"""Commands of the PyTorch backend: train, eval, search, derive."""
from __future__ import annotations

import os
import sys

import click

from autonl.ir.ops import LIGHTNL_NORMS
from autonl.workflows.train import derive_run, launch_search, search_source, train_source

from autonl.backends.torch.config import ARCH_OPTIMIZERS, LANDINGS, RESOLUTION, SearchConfig, TrainConfig

from .app import cli
from .options import (DATA_HELP, THREADS, WIDTH, CostTarget, augmentation_options, check_resume_settings,
                      config_option, config_type, cost_target_options, launch_options, left_default, lock_output,
                      ranged, refuse_graph_options_on_resume, set_torch_threads, typed_options)


@cli.command()
@click.argument("source")
@click.option("--data", help=DATA_HELP + " [default: the data a model folder records (its data.json), else "
              f"{TrainConfig.data}]")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@config_option(TrainConfig, "--steps")
@config_option(TrainConfig, "--batch-size")
@config_option(TrainConfig, "--lr")
@click.option("--optimizer", type=click.Choice(["sgd", "rmsprop"]), default=TrainConfig.optimizer, show_default=True)
@config_option(TrainConfig, "--weight-decay")
@config_option(TrainConfig, "--warmup-steps")
@config_option(TrainConfig, "--label-smoothing")
@config_option(TrainConfig, "--eval-every")
@config_option(TrainConfig, "--checkpoint-every")
@config_option(TrainConfig, "--workers", help="Data-loading processes [default: CPUs / processes here, at most 8].")
@config_option(TrainConfig, "--seed")
@click.option("--device", default=TrainConfig.device, show_default=True, help="auto (GPU when present), cpu, cuda, cuda:N.")
@config_option(TrainConfig, "--train-size", help="Use at most this many training images.")
@config_option(TrainConfig, "--val-size", help="Use at most this many validation images.")
@click.option("--skip-corrupt", is_flag=True, help="Skip unreadable images instead of stopping.")
@augmentation_options(TrainConfig)
@config_option(TrainConfig, "--precise-bn",
               help="Training batches to re-estimate BN statistics before each evaluation (0: off).")
@click.option("--channels-last/--contiguous", "channels_last", default=TrainConfig.channels_last, show_default=True,
              help="Memory format of the network and its batches (channels-last: 2x faster steps on CPU).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (a new run in its place).")
@click.option("--init", "init", type=click.Path(), help="Start from these weights (model folder or .pt).")
@click.option("--from-scratch", is_flag=True, help="A model folder as SOURCE: re-initialise its weights.")
@click.option("--resolution", "-r", type=ranged(RESOLUTION), help="Input size for presets (default 32).")
@click.option("--width", "-w", type=ranged(WIDTH), help="Width multiplier for presets.")
@click.option("--threads", type=ranged(THREADS), help="CPU threads for torch [default: the usable CPUs, fewer while other processes keep them busy].")
def train(source, out, resume, force, init, from_scratch, resolution, width, threads, **config):
    """Train a preset, graph file or model folder on a dataset; writes metrics, curves,
    checkpoints, model. A model folder (e.g. from `autonl derive`) starts from its own
    weights (fine-tuning) unless --from-scratch."""
    lock_output(out, "train", inputs=(source, init, config.get("data")))
    set_torch_threads(threads)
    overrides = None
    if resume:     # before torch: one line, at once
        refuse_graph_options_on_resume(click.get_current_context())
        overrides = check_resume_settings(out, "config.json", typed_options(click.get_current_context(), config),
                                          TrainConfig)
    result = train_source(source, out, config, resume=resume, force=force, init=init, from_scratch=from_scratch,
                          resolution=resolution, width=width, overrides=overrides,
                          left_default=left_default(click.get_current_context()))
    click.echo(result.to_json())
    click.echo(f"run folder: {out} (metrics.jsonl, curves.png, checkpoint.pt, model/)", err=True)


@cli.command("eval")
@click.argument("model")
@click.option("--data", help="Dataset whose validation split to use [default: the data the model was trained on, "
              "as its folder records]. " + DATA_HELP)
@click.option("--batch-size", type=config_type(TrainConfig, "batch_size"), default=128, show_default=True)
@click.option("--workers", type=config_type(TrainConfig, "workers"),
              help="Data-loading processes [default: CPUs here, at most 8].")
@click.option("--device", default="auto", show_default=True)
@config_option(TrainConfig, "--val-size", help="Use at most this many validation images.")
@click.option("--skip-corrupt", is_flag=True)
@click.option("--threads", type=ranged(THREADS), help="CPU threads for torch [default: the usable CPUs, fewer while other processes keep them busy].")
@config_option(TrainConfig, "--eval-crop", help="Centre crop's share of the shorter side [default: what the model was "
               "trained with (its data.json)].")
def evaluate_cmd(model, data, batch_size, workers, device, val_size, skip_corrupt, threads, eval_crop):
    """Evaluate a model folder (or a run folder's model/) on a dataset's validation split
    (only val/ is read). Prints one JSON line; images whose logits are not finite are
    counted (val_nonfinite) and named in a warning line."""
    from autonl.workflows.evaluate import evaluate_folder

    set_torch_threads(threads)
    result = evaluate_folder(model, data, batch_size, workers, device, val_size, skip_corrupt, eval_crop)
    click.echo(result.to_json())
    click.echo(result.line, err=True)
    for w in result.warnings:
        click.echo(w, err=True)


@cli.command()
@click.argument("source", default="search-space")
@cost_target_options("MAC target, e.g. 350M (at --cost-resolution); this or --target-latency is required unless "
                     "--resume.", "Latency target, e.g. 4.5ms, predicted by --latency-table.")
@click.option("--data", default=SearchConfig.data, show_default=True, help=DATA_HELP)
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--space", default="autonl", show_default=True,
              help="Search-space file (TOML/JSON) or built-in name (autonl; lightnl-only: LightNL placement only, "
                   "your blocks kept), for graphs without choices.")
@click.option("--lightnl-norm", "lightnl_norm", type=click.Choice(LIGHTNL_NORMS),
              help="LightNL candidates' norm instead of the space's: l2 (bounded, the default of the "
                   "autonl space) or none (the paper's product, cubic in its input).")
@config_option(SearchConfig, "--lambda", "lam", help="Weight of the cost term.")
@config_option(SearchConfig, "--steps")
@config_option(SearchConfig, "--warmup-steps", help="Steps that train the weights only (every option on, or see --warmup-drop).")
@config_option(SearchConfig, "--warmup-drop", help="Chance that each gate is off in a warm-up step (0.5: a uniformly "
               "random sub-network each step; 0: every option on).")
@config_option(SearchConfig, "--target-ramp", help="Share of the steps after the warm-up over which the target "
               "falls from the largest sub-network's cost to --target-* (geometrically), so that the gates give "
               "way one by one near the current target; 0: the target from the first step.")
@click.option("--sandwich/--no-sandwich", default=SearchConfig.sandwich, show_default=True,
              help="After the warm-up, each step also trains the weights on the largest and on one random "
                   "sub-network (BigNAS's sandwich rule), so that switched-off options keep learning; a step "
                   "after the warm-up costs about 3x, and on Fashion-MNIST it chose no better (docs: benchmarks).")
@click.option("--landing", type=click.Choice(LANDINGS), default=SearchConfig.landing, show_default=True,
              help="When the thresholds end more than 5% off the target: margin flips the gates nearest their "
                   "thresholds; measured tries the 8 nearest single flips that land, each in the supernet (loss on "
                   "--holdout images, else on training batches), and keeps the best.")
@config_option(SearchConfig, "--batch-size")
@config_option(SearchConfig, "--lr", help="Weights (SGD, or --optimizer).")
@click.option("--optimizer", type=click.Choice(["sgd", "rmsprop"]), default=SearchConfig.optimizer, show_default=True,
              help="The weights' optimizer (rmsprop: TF-style, as train's).")
@config_option(SearchConfig, "--arch-lr", help="Thresholds (Adam).")
@click.option("--arch-optimizer", type=click.Choice(ARCH_OPTIMIZERS), default=SearchConfig.arch_optimizer, show_default=True,
              help="The thresholds' optimizer: shared-adam moves each in proportion to its pull (Adam's second "
                   "moment shared by all); adam moves every threshold alike; sgd at the loss's own scale.")
@config_option(SearchConfig, "--tau", help="Sigmoid temperature of the gates.")
@click.option("--resolution", "-r", type=ranged(RESOLUTION), help="Search input size for presets (default 32).")
@click.option("--width", "-w", type=ranged(WIDTH), help="Width multiplier for presets.")
@config_option(SearchConfig, "--cost-resolution", help="Count MACs at this input size (default: the search's).")
@config_option(SearchConfig, "--checkpoint-every")
@config_option(SearchConfig, "--workers", help="Data-loading processes [default: CPUs / processes here, at most 8].")
@config_option(SearchConfig, "--seed")
@click.option("--device", default=SearchConfig.device, show_default=True, help="auto (GPU when present), cpu, cuda.")
@config_option(SearchConfig, "--train-size", help="Use at most this many training images.")
@config_option(SearchConfig, "--val-size", help="Use at most this many validation images.")
@config_option(SearchConfig, "--holdout", help="Hold out this many training images as the search's validation "
               "(the validation split is then not read).")
@augmentation_options(SearchConfig)
@click.option("--channels-last/--contiguous", "channels_last", default=SearchConfig.channels_last, show_default=True,
              help="Memory format of the supernet and its batches (channels-last: 1.6x faster steps on CPU).")
@click.option("--compile", "compile", is_flag=True,
              help="torch.compile the supernet (off by default: slower on CPU, see benchmarks/search_throughput.py).")
@launch_options
@click.option("--resume", is_flag=True, help="Continue the search in --out from its checkpoint.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (a new search in its place).")
@click.option("--threads", type=ranged(THREADS), help="CPU threads for torch in each process [default: the usable CPUs / processes here].")
def search(source, target, out, space, lightnl_norm, resolution, width, launch, resume, force, threads, **config):
    """Differentiable single-path search of where LightNL goes (and kernel, expansion, skip)."""
    if not any(v is not None for v in target) and not resume:
        raise click.UsageError("Missing option '--target-macs' (the MAC target, e.g. 350M) or '--target-latency' "
                               "(e.g. 4.5ms, with --latency-table).")
    target = CostTarget.parse(*target, resume=resume)
    macs, latency, latency_table = target.macs, target.latency_ms, target.table
    overrides = None
    if resume:     # before torchrun and torch: one line, at once
        refuse_graph_options_on_resume(click.get_current_context())
        given = typed_options(click.get_current_context(), config)
        if macs is not None:
            given["--target-macs"] = ("target_macs", macs)
        if latency is not None:
            given["--target-latency"] = ("target_latency_ms", latency)
        overrides = check_resume_settings(out, "search_config.json", given, SearchConfig)
    launching = os.environ.get("WORLD_SIZE") is None and (launch.nproc > 1 or launch.nnodes > 1)
    set_torch_threads(threads, here=not launching, processes=launch.nproc if launching else 1)
    inputs = (source, space, latency_table, config.get("data"))    # never inside or around --out
    if launching:
        if launch.node_rank == 0:     # node 0 holds the lock for its workers (HELD_BY_PARENT)
            lock_output(out, "search", inputs=inputs)
        rc = launch_search(out, launch, sys.argv[1:], resume, force)
        if rc:      # a failed launch puts a replaced folder back (unless it left a checkpoint)
            raise click.exceptions.Exit(rc)
        return 0
    if os.environ.get("WORLD_SIZE") is None:   # under torchrun, rank 0 takes the lock as it writes
        lock_output(out, "search", inputs=inputs)
    result = search_source(source, out, config, target_macs=macs, target_latency_ms=latency,
                           latency_table=latency_table, space=space, lightnl_norm=lightnl_norm, resolution=resolution,
                           width=width, resume=resume, force=force, overrides=overrides,
                           left_default=left_default(click.get_current_context()))
    if result.metrics:
        click.echo(result.to_json())
        click.echo(f"run folder: {out} (decisions.json, metrics.jsonl, trace.jsonl, "
                   f"{'latency.png' if result.by_latency else 'macs.png'}, decisions.png)",
                   err=True)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Folder to create.")
@click.option("--decisions", type=click.Path(), help="Use these decisions instead of RUN_DIR/decisions.json.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def derive(run_dir, out, decisions, force):
    """Derive a search run: discrete graph + inherited weights + costs + comparison."""
    lock_output(out, "derive", inputs=(run_dir, decisions))
    result = derive_run(run_dir, out, decisions, force)
    click.echo(result.header())
    click.echo(result.table())
    click.echo(f"wrote {out}/ (graph.json, graph.ir, weights.pt, decisions.json, cost.json, comparison.*); "
               f"fine-tune it with: autonl train {out} --data ...", err=True)
