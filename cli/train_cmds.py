"""Commands of the PyTorch backend: train, eval, search, derive."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from autonl.ir import AutonlError, all_presets
from autonl.passes.sources import load_target, relaxed_graph

from autonl.backends.torch.config import SearchConfig, TrainConfig

from .app import cli
from .options import DATA_HELP, parse_macs


@cli.command()
@click.argument("target")
@click.option("--data", default=TrainConfig.data, show_default=True, help=DATA_HELP)
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--steps", type=int, default=TrainConfig.steps, show_default=True)
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option("--lr", type=float, default=TrainConfig.lr, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "rmsprop"]), default=TrainConfig.optimizer, show_default=True)
@click.option("--weight-decay", type=float, default=TrainConfig.weight_decay, show_default=True)
@click.option("--warmup-steps", type=int, default=TrainConfig.warmup_steps, show_default=True)
@click.option("--label-smoothing", type=float, default=TrainConfig.label_smoothing, show_default=True)
@click.option("--eval-every", type=int, default=TrainConfig.eval_every, show_default=True)
@click.option("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every, show_default=True)
@click.option("--workers", type=int, default=TrainConfig.workers, show_default=True, help="Data-loading processes.")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option("--device", default=TrainConfig.device, show_default=True, help="auto (GPU when present), cpu, cuda, cuda:N.")
@click.option("--train-size", type=int, help="Use at most this many training images.")
@click.option("--val-size", type=int, help="Use at most this many validation images.")
@click.option("--skip-corrupt", is_flag=True, help="Skip unreadable images instead of stopping.")
@click.option("--precise-bn", type=int, default=TrainConfig.precise_bn, show_default=True,
              help="Training batches to re-estimate BN statistics before each evaluation (0: off).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--init", "init", type=click.Path(), help="Start from these weights (model folder or .pt).")
@click.option("--from-scratch", is_flag=True, help="A model folder as TARGET: re-initialise its weights.")
@click.option("--resolution", "-r", type=int, help="Input size for presets (default 32).")
@click.option("--width", "-w", type=float, help="Width multiplier for presets.")
def train(target, out, resume, init, from_scratch, resolution, width, **config):
    """Train a preset, graph file or model folder on a dataset; writes metrics, curves,
    checkpoints, model. A model folder (e.g. from `autonl derive`) starts from its own
    weights (fine-tuning) unless --from-scratch."""
    model_folder = Path(target).is_dir() and (Path(target) / "weights.pt").is_file()
    if from_scratch and init:
        raise AutonlError("--from-scratch and --init contradict each other; pick one")
    if model_folder and not from_scratch and init is None:
        init = target
    from autonl.backends.torch.data import num_classes
    from autonl.backends.torch.train import train as run_training

    cfg = TrainConfig(**config)          # every other option is a TrainConfig field of the same name
    graph = None
    if not resume:
        if target in all_presets():  # a preset gets as many outputs as the data has classes
            graph = load_target(target, resolution or 32, width, None, num_classes(cfg.data))
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


@cli.command()
@click.argument("target", default="search-space")
@click.option("--target-macs", "target_macs", required=True, help="MAC target, e.g. 350M (at --cost-resolution).")
@click.option("--data", default=SearchConfig.data, show_default=True, help=DATA_HELP)
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--space", default="autonl", show_default=True,
              help="Search-space file (TOML/JSON) or built-in name, for graphs without choices.")
@click.option("--lambda", "lam", type=float, default=SearchConfig.lam, show_default=True, help="Weight of the cost term.")
@click.option("--steps", type=int, default=SearchConfig.steps, show_default=True)
@click.option("--warmup-steps", type=int, default=SearchConfig.warmup_steps, show_default=True, help="Steps with every option on.")
@click.option("--batch-size", type=int, default=SearchConfig.batch_size, show_default=True)
@click.option("--lr", type=float, default=SearchConfig.lr, show_default=True, help="Weights (SGD).")
@click.option("--arch-lr", type=float, default=SearchConfig.arch_lr, show_default=True, help="Thresholds (Adam).")
@click.option("--arch-optimizer", type=click.Choice(["adam", "sgd"]), default=SearchConfig.arch_optimizer, show_default=True)
@click.option("--tau", type=float, default=SearchConfig.tau, show_default=True, help="Sigmoid temperature of the gates.")
@click.option("--resolution", "-r", type=int, help="Search input size for presets (default 32).")
@click.option("--width", "-w", type=float, help="Width multiplier for presets.")
@click.option("--cost-resolution", type=int, help="Count MACs at this input size (default: the search's).")
@click.option("--checkpoint-every", type=int, default=SearchConfig.checkpoint_every, show_default=True)
@click.option("--workers", type=int, default=SearchConfig.workers, show_default=True)
@click.option("--seed", type=int, default=SearchConfig.seed, show_default=True)
@click.option("--device", default=SearchConfig.device, show_default=True, help="auto (GPU when present), cpu, cuda.")
@click.option("--train-size", type=int)
@click.option("--val-size", type=int)
@click.option("--nproc", type=int, default=1, show_default=True, help="Processes (torchrun, DDP: gloo on CPU, nccl on GPU).")
@click.option("--resume", is_flag=True, help="Continue the search in --out from its checkpoint.")
def search(target, target_macs, out, space, resolution, width, nproc, resume, **config):
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
    from autonl.backends.torch.search import search as run_search

    macs = parse_macs(target_macs)
    graph = cfg = None
    if not resume:
        cfg = SearchConfig(target_macs=macs, **config)   # the other options are SearchConfig fields
        graph = relaxed_graph(target, space, resolution or (32 if target in all_presets() else None), width,
                              num_classes(cfg.data))
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
    from autonl.backends.torch.child import comparison_table, extract_child

    result = extract_child(run_dir, out, decisions, force)
    click.echo(f"at {result['resolution']}x{result['resolution']}")
    click.echo(comparison_table({k: result[k] for k in ("derived", "mobilenetv2", "autonl-s", "autonl-l")}))
    click.echo(f"wrote {out}/ (graph.json, graph.ir, weights.pt, decisions.json, cost.json, comparison.*); "
               f"fine-tune it with: autonl train {out} --data ...", err=True)
