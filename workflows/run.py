"""``autonl run``: data to deployable model in one command.

Stages, each in its own folder under the run directory: ``search/`` (a search space on the
data, built from SOURCE: the built-in AutoNL space, a preset, or the user's own network,
toward a MAC or latency target), ``derived/`` (discrete graph, inherited weights, comparison
with MobileNetV2 and AutoNL-S/L), ``train/`` (a short fine-tune), ``baseline/`` (the network
the user started from, or for the built-in space a MobileNetV2 of the derived network's MACs,
trained from scratch for the search's and fine-tuning's steps together), ``deploy/``
(``autonl compile`` with the chosen backend, whose parity check stops the run on a
mismatch). Then ``report.md`` and ``report.html`` (plots, architecture, costs, accuracy per
class against the baseline, latencies) and ``manifest.json`` (inputs, seeds, versions, every
file with its sha256), written last. Every file is written under a temporary name and renamed.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from autonl.ir import AutonlError, Graph, atomic_write, build_preset
from autonl.passes import analyze_cost, resize_graph
from autonl.passes.sources import Source, as_search_space, is_preset, load_source

from autonl.backends.base import Backend
from autonl.backends.catalog import get_backend
from autonl.backends.loading import load_model_or_graph
from autonl.backends.locks import output_lock
from autonl.backends.manifest import check_out, versions, write_manifest
from autonl.backends.outputs import replacing_folder

from .compile import compile_with_checks
from .report import write_report

BUILTIN_SPACE = "search-space"     # the default SOURCE: the AutoNL space as a relaxed preset


def _stage(log, name: str):
    log(f"== {name}")
    return time.time()


@dataclass
class RunSource:
    """What ``autonl run SOURCE`` searches: ``relaxed`` (the search space), ``start`` (the
    discrete network the user started from; None for a relaxed source such as the built-in
    space) and how to name it."""

    name: str
    relaxed: Graph
    start: Graph | None
    resolution: int
    cost_resolution: int     # where a MAC target is counted: 224 for a preset, else the network's own size


@dataclass
class Baseline:
    """The network the derived one is compared with, as ``autonl run`` prints it."""

    name: str
    steps: int
    val_acc: float
    onnxruntime_ms: float


@dataclass
class Int8Accuracy:
    """The deployed fp32 and int8 models' validation accuracy (onnxruntime) and the change."""

    fp32: float
    int8: float
    change: float


@dataclass
class RunSummary:
    """What ``autonl run`` did, stage by stage: ``summary.json`` (:meth:`to_json`, its keys
    in this order) and the figures the command prints (the properties). The stages' own
    results (``search``, ``train``, ``comparison``...) stay as their JSON."""

    data: str
    source: str
    space: str | None
    target_macs: float | None
    target_latency_ms: float | None
    latency_target: dict | None
    backend: str
    seed: int
    search: dict
    derived: dict              # {"derived": costs, "mobilenetv2": ..., "autonl-s": ..., "autonl-l": ...}
    resolution: int
    classes: int
    input_resolution: int
    cost_resolution: int
    train: dict
    deploy_checks: dict | None
    settings: dict
    chance: float
    accuracy_warning: str | None
    data_facts: dict | None
    int8: dict | None
    latency: dict              # {runtime: ms}
    latency_timing: dict
    seconds: dict
    comparison: dict | None

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def derived_macs(self) -> float:
        return self.derived["derived"]["macs"]

    @property
    def val_acc(self) -> float:
        """The derived network's validation accuracy after fine-tuning."""
        return self.train["val_acc"]

    @property
    def int8_accuracy(self) -> Int8Accuracy | None:
        """The deployed models' accuracy, when an int8 model was made."""
        a = (self.int8 or {}).get("accuracy")
        return Int8Accuracy(a["fp32"], a["int8"], a["change"]) if a else None

    @property
    def baseline(self) -> Baseline | None:
        c = self.comparison
        if not c:
            return None
        return Baseline(c["baseline"]["name"], c["baseline"]["steps"], c["baseline_acc"]["val_acc"],
                        c["latency_ms"]["baseline"])


def run_source(source: str, space: str, resolution: int | None, classes: int, data: str,
               lightnl_norm: str | None = None) -> RunSource:
    """A preset (built at ``resolution`` with the data's classes), a graph file (text or JSON
    form), a model folder or a run folder (:class:`~autonl.passes.sources.Source`): as a
    search space. A discrete network goes through the search-space pipeline with ``space``
    (``autonl``: blocks and LightNL searched; ``lightnl-only``: LightNL placement only, the
    blocks kept as they are); its own input size is kept (a ``resolution`` given for it is
    refused: it applies to presets only)."""
    src = Source.resolve(source)
    if src.is_preset:
        graph = src.graph(resolution, None, None, classes)
    else:
        graph = src.graph(resolution)
        out_classes = graph.type_of(graph.outputs[0]).shape[-1]
        if out_classes != classes:
            raise AutonlError(f"{src.name} predicts {out_classes} classes but the data '{data}' has {classes}; "
                              f"give a network with {classes} outputs")
    own = graph.inputs[next(iter(graph.inputs))].shape[-1]
    return RunSource(src.name, as_search_space(graph, space, lightnl_norm), None if graph.relaxed else graph, own,
                     224 if src.is_preset else own)


DEFAULT_TARGET_MACS = "300M"     # the built-in space's, at 224x224


def check_own_network_target(source: str, target_macs: str | None, target_latency: str | None) -> None:
    """A SOURCE that is not a preset needs a target of its own (:data:`DEFAULT_TARGET_MACS`
    is the built-in space's)."""
    if target_macs is None and target_latency is None and not is_preset(source):
        raise AutonlError(f"give --target-macs (counted at its own input size) or --target-latency for {source}; "
                          f"the {DEFAULT_TARGET_MACS} default is the built-in space's, at 224x224 (autonl show "
                          f"{source} --cost gives its MACs)")


def run_pipeline(data: str, target_macs: float | None, backend: str | Backend, out: str | Path,
                 search_steps: int | None = None, train_steps: int | None = None, resolution: int | None = None,
                 seed: int = 0, force: bool = False, log=print, batch_size: int | None = None,
                 lightnl_norm: str | None = None, target_latency_ms: float | None = None,
                 latency_table: str | None = None, aug: dict | None = None, source: str = BUILTIN_SPACE,
                 space: str = "autonl", baseline: bool = True) -> RunSummary:
    """Every stage under ``out``, under the lock of ``out`` (:mod:`autonl.backends.locks`); each stage locks
    its own folder inside it as well. ``source``: what to search (:func:`run_source`), with
    ``space`` for a discrete network. Settings left ``None`` are fitted to the data
    (:func:`~autonl.backends.torch.data.fitted_settings`) and printed with the reason.
    ``target_latency_ms`` with ``latency_table`` (instead of ``target_macs``): search toward a
    latency the table predicts; the report then has the derived network's predicted and
    measured latency. ``aug``: the augmentation options ``crop_scale``, ``flip``,
    ``eval_crop`` of search and training (:func:`~autonl.backends.torch.data.augmentation`;
    left out: the data's defaults). ``baseline``: train and report the comparison network."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    from autonl.backends.torch.data.builtin_data import canonical_data
    data = canonical_data(data)
    out = Path(out)
    check_out(out)
    asked = {"resolution": resolution, "batch_size": batch_size, "search_steps": search_steps,
             "train_steps": train_steps}
    try:
        with output_lock(out, "run"):
            # the inputs first: a missing dataset, table or source stops here, before the old folder is touched
            from autonl.backends.torch.data import num_classes
            classes = num_classes(data)
            table = None
            if latency_table is not None:
                from autonl.backends.latency import LatencyTable
                table = LatencyTable.read(latency_table)
                if target_latency_ms is None:    # a MAC target: the table, if any, plays no part
                    table = None
            if is_preset(source):
                settings, settings_line = _settings(data, asked)
                src = run_source(source, space, settings["resolution"], classes, data, lightnl_norm)
            else:                                # a network of the user's: its own input size
                src = run_source(source, space, resolution, classes, data, lightnl_norm)
                settings, settings_line = _settings(data, asked, (src.resolution, f"the input size of {src.name}"))
            goal = _check_goal(src.relaxed, target_macs, target_latency_ms, latency_table, table, src.cost_resolution)
            # old files set aside beside --out and put back on any failure or signal (autonl.backends.outputs)
            with replacing_folder(out, force, inputs=(data, latency_table)):
                if settings_line:
                    log(settings_line)
                run = _Run(data, classes, backend, out, settings, seed, log, aug or {}, src, table, latency_table,
                           target_macs, target_latency_ms, goal)
                return run.all(space, lightnl_norm, baseline)
    except AutonlError as e:     # an unreadable image: what to do about it in autonl run
        hinted = without_skip_hint(str(e))
        if hinted == str(e):
            raise
        raise AutonlError(hinted) from None


def without_skip_hint(message: str) -> str:
    """An unreadable image's line says what to do in a command that takes --skip-corrupt;
    ``autonl run`` does not, so it says what to do here instead."""
    from autonl.backends.torch.data.loader import SKIP_HINT
    if message.endswith(SKIP_HINT):
        return (message[:-len(SKIP_HINT)] + "remove or replace that file in the dataset and run again (autonl run "
                "has no --skip-corrupt; autonl search and autonl train take it)")
    return message


def _check_goal(graph: Graph, target_macs, target_latency_ms, latency_table, table, cost_resolution: int) -> str:
    """The target in words, after checking it is within the space's reach (nothing written)."""
    from autonl.backends.torch.search import check_target_bounds
    if target_latency_ms is not None:
        at_table = resize_graph(graph, table.resolution)
        table.check_fits(at_table)
        check_target_bounds(*table.bounds(at_table), target_latency_ms, "ms")
        return f"{target_latency_ms:.3f} ms predicted by {latency_table} ({table.describe()})"
    at = analyze_cost(resize_graph(graph, cost_resolution))
    check_target_bounds(at.macs, at.total("macs_max"), target_macs)
    return f"{target_macs / 1e6:.3g}M MACs at {cost_resolution}x{cost_resolution}"


def _settings(data: str, asked: dict, own: tuple[int, str] | None = None) -> tuple[dict, str | None]:
    """The run's settings: those asked for, the rest fitted to the data. The built-in sets
    (digits, fashion-mnist, longrange) keep what the digits were tuned with (search batch 32,
    fine-tuning batch 64, the default learning rates); on a folder both stages use the fitted
    batch, with the learning rates scaled to it (linear scaling rule)."""
    import torch

    from autonl.backends.torch.data import BUILTIN_DATASETS, fitted_settings, scaled_lr
    from autonl.backends.torch.search import SearchConfig
    from autonl.backends.torch.train import TrainConfig
    fitted = fitted_settings(data, gpu=torch.cuda.is_available())
    chosen = {k: v if v is not None else fitted[k] for k, v in asked.items()}
    if own is not None:
        chosen["resolution"] = own[0]
    builtin = data in BUILTIN_DATASETS
    batch = chosen["batch_size"]
    chosen["train_batch_size"] = TrainConfig.batch_size if builtin and asked["batch_size"] is None else batch
    chosen["search_lr"] = SearchConfig.lr if builtin else scaled_lr(SearchConfig.lr, batch)
    chosen["train_lr"] = TrainConfig.lr if builtin else scaled_lr(TrainConfig.lr, chosen["train_batch_size"])
    line = None
    if any(v is None for v in asked.values()):
        given = [k for k, v in asked.items() if v is not None]
        res = f"{chosen['resolution']} ({own[1]})" if own else chosen["resolution"]
        line = (f"settings: resolution {res}, batch {batch}, search {chosen['search_steps']} steps "
                f"(lr {chosen['search_lr']:g}), fine-tune {chosen['train_steps']} steps (lr {chosen['train_lr']:g}); "
                f"fitted to the data: {fitted['why']}" + (f" (given: {', '.join(given)})" if given else ""))
    return chosen, line


def matched_mobilenetv2(macs: float, resolution: int, classes: int) -> tuple[Graph, float]:
    """``(MobileNetV2 graph, width)``: the width multiplier whose MACs at ``resolution`` come
    closest to ``macs`` (channels are rounded to multiples of 8, so MACs move in steps)."""
    def cost(w: float) -> float:
        return analyze_cost(build_preset("mobilenetv2", resolution=resolution, width=w, num_classes=classes)).macs
    lo, hi = 0.05, 4.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(mid) < macs else (lo, mid)
    width = min((lo, hi), key=lambda w: abs(cost(w) - macs))
    return build_preset("mobilenetv2", resolution=resolution, width=width, num_classes=classes), width


class _Run:
    """The stages of one run in ``out`` (emptied by the caller), in order (:meth:`all`)."""

    def __init__(self, data, classes, backend, out, settings, seed, log, aug, src, table, latency_table,
                 target_macs, target_latency_ms, goal):
        self.data, self.classes, self.backend, self.out, self.settings = data, classes, backend, out, settings
        self.seed, self.log, self.aug, self.src, self.table = seed, log, aug, src, table
        self.latency_table, self.target_macs, self.target_latency_ms, self.goal = (
            latency_table, target_macs, target_latency_ms, goal)
        self.timings: dict[str, float] = {}

    def all(self, space: str, lightnl_norm: str | None, baseline: bool) -> RunSummary:
        from autonl.backends.torch.data import accuracy_line, chance_level
        self.out.mkdir(parents=True, exist_ok=True)
        search = self.search(space)
        derived = self.derive()
        trained = self.fine_tune()
        acc_line, acc_warning = accuracy_line(trained["val_acc"], self.data)
        self.log(f"fine-tuned: {acc_line}")
        if acc_warning:
            self.log(acc_warning)
        if trained.get("val_nonfinite"):
            self.log(f"warning: {trained['val_nonfinite']} of {trained['val_n']} validation images give non-finite "
                     f"logits")
        base = self.train_baseline() if baseline else None
        t = _stage(self.log, f"compile: {self.backend.name}")
        model = load_model_or_graph(self.out / "train")
        deploy = compile_with_checks(self.backend, model, self.out / "deploy", self.backend.run_options(self.data),
                                     self.log, data=self.data)
        self.timings["compile"] = time.time() - t
        base_model = load_model_or_graph(self.out / "baseline") if base else None
        comparison = self.compare(model, base_model, base) if base else None
        latency, facts, latency_target = self.latency(model, base_model, search)
        if comparison:
            comparison["latency_ms"] = {"derived": latency["onnxruntime fp32"],
                                        "baseline": facts["extra_ms"]["baseline"]}
        summary = RunSummary(
            data=self.data, source=self.src.name, space=space if self.src.start is not None else None,
            target_macs=self.target_macs, target_latency_ms=self.target_latency_ms, latency_target=latency_target,
            backend=self.backend.name, seed=self.seed, search=search,
            derived=dict(derived.rows), resolution=derived.resolution, classes=derived.classes,
            input_resolution=self.src.resolution,
            cost_resolution=self.src.cost_resolution, train=trained, deploy_checks=deploy.get("checks"),
            settings=self.settings, chance=chance_level(self.data)[0], accuracy_warning=acc_warning,
            data_facts=model.data, int8=deploy.get("int8"), latency=latency, latency_timing=facts,
            seconds=self.timings, comparison=comparison)
        as_json = summary.to_json()
        atomic_write(self.out / "summary.json", json.dumps(as_json, indent=1, default=str) + "\n")
        write_report(self.out, as_json)
        self.manifest(space, lightnl_norm)
        return summary

    def search(self, space: str) -> dict:
        from autonl.backends.torch.search import SearchConfig, search as run_search
        s = self.settings
        what = "the AutoNL space" if self.src.start is None else f"{self.src.name} with the '{space}' space"
        t = _stage(self.log, f"search: {what} on {self.data} at {s['resolution']}x{s['resolution']}, toward "
                             f"{self.goal}, {s['search_steps']} steps")
        cfg = SearchConfig(target_macs=self.target_macs, target_latency_ms=self.target_latency_ms,
                           latency_table=str(Path(self.latency_table).resolve()) if self.table else None,
                           data=self.data, steps=s["search_steps"], warmup_steps=max(1, s["search_steps"] // 5),
                           batch_size=s["batch_size"], lr=s["search_lr"], seed=self.seed,
                           cost_resolution=None if self.table else self.src.cost_resolution, **self.aug)
        search = run_search(self.src.relaxed, cfg, self.out / "search")
        self.timings["search"] = time.time() - t
        if search.get("landing_warning"):
            self.log(search["landing_warning"])
        return search

    def derive(self):
        from autonl.backends.torch.search.child import derive_child
        t = _stage(self.log, "derive")
        derived = derive_child(self.out / "search", self.out / "derived", None, False)
        self.timings["derive"] = time.time() - t
        return derived

    def fine_tune(self) -> dict:
        from autonl.backends.torch.train import TrainConfig, train as run_training
        s = self.settings
        t = _stage(self.log, f"fine-tune: {s['train_steps']} steps")
        cfg = TrainConfig(data=self.data, steps=s["train_steps"], seed=self.seed, eval_every=s["train_steps"],
                          batch_size=s["train_batch_size"], lr=s["train_lr"], **self.aug)
        trained = run_training(load_source(str(self.out / "derived")), cfg, self.out / "train",
                               init=str(self.out / "derived"))
        self.timings["train"] = time.time() - t
        return trained

    def train_baseline(self) -> dict:
        """The network to beat, trained from scratch for as many steps as the derived network's
        weights saw (search, then fine-tuning), with the fine-tuning's recipe."""
        from autonl.backends.torch.train import TrainConfig, train as run_training
        s = self.settings
        derived = load_source(str(self.out / "derived"))
        if self.src.start is not None:
            graph, name = self.src.start, f"your network ({Path(self.src.name).name})"
            why = "the network the search started from"
        else:
            macs = analyze_cost(derived).macs
            graph, width = matched_mobilenetv2(macs, self.src.resolution, self.classes)
            name = f"MobileNetV2 x{width:.2f}"
            why = f"MobileNetV2 at the width whose MACs come closest to the derived network's ({macs / 1e6:.2f}M)"
        steps = s["search_steps"] + s["train_steps"]
        t = _stage(self.log, f"baseline: {name}, {steps} steps from scratch")
        cfg = TrainConfig(data=self.data, steps=steps, seed=self.seed, eval_every=steps,
                          batch_size=s["train_batch_size"], lr=s["train_lr"], **self.aug)
        trained = run_training(graph, cfg, self.out / "baseline")
        self.timings["baseline"] = time.time() - t
        ours, theirs = analyze_cost(derived), analyze_cost(graph)
        return {"name": name, "why": why, "steps": steps, "val_acc": trained["val_acc"], "macs": theirs.macs,
                "params": theirs.params, "derived_macs": ours.macs, "derived_params": ours.params,
                "resolution": self.src.resolution}

    def compare(self, model, base_model, base: dict) -> dict:
        """Accuracy overall and per class of the derived network and the baseline, on the whole
        validation split, and a warning when the derived network is not the more accurate."""
        import torch

        from autonl.backends.torch.data import make_val_loader
        from autonl.backends.torch.train.evaluation import per_class_accuracy
        crop = (model.data or {}).get("augmentation", {}).get("eval_crop")
        loader, classes = make_val_loader(self.data, self.src.resolution, 64, eval_crop=crop)
        dev = torch.device("cpu")
        ours = per_class_accuracy(model.module, loader, dev, len(classes))
        theirs = per_class_accuracy(base_model.module, loader, dev, len(classes))
        better = ours["val_acc"] > theirs["val_acc"]
        warning = None if better else (
            f"warning: the searched network is not more accurate than {base['name']} trained for the same "
            f"{base['steps']} steps ({ours['val_acc']:.3f} against {theirs['val_acc']:.3f}); LightNL did not pay "
            f"for itself here: try more steps, another target, or keep your network")
        self.log(f"compared with {base['name']} ({base['steps']} steps from scratch): accuracy {ours['val_acc']:.3f} "
                 f"against {theirs['val_acc']:.3f}")
        if warning:
            self.log(warning)
        return {"baseline": base, "classes": classes, "derived_acc": ours, "baseline_acc": theirs,
                "derived_better": better, "warning": warning}

    def latency(self, model, base_model, search: dict) -> tuple[dict, dict, dict | None]:
        """The latency table of the report (every runtime, timed one way) and, with a latency
        target, the derived network's predicted and measured latency: the table's row when
        the latency table was made with onnxruntime at this input size (one figure), else
        timed as the table was (its backend, threads, machine speed)."""
        table = self.table
        threads = table.provenance["threads"] if table is not None else None
        extra = {"baseline": base_model} if base_model is not None else {}
        latency, facts = measure_latency(model, self.out / "deploy", self.backend, threads=threads, extra=extra)
        if facts["warning"]:
            self.log(facts["warning"])
        if table is None:
            return latency, facts, None
        prov = table.provenance
        same = (prov["backend"] == "onnx" and table.resolution == self.src.resolution and not prov.get("rpc")
                and not (prov.get("options") or {}).get("int8"))
        if same:
            measured = latency["onnxruntime fp32"]
            target = {"target_ms": self.target_latency_ms, "predicted_ms": search["predicted_latency_ms"],
                      "measured_ms": measured, "error": measured / self.target_latency_ms - 1,
                      "resolution": table.resolution, "table": table.path, "of": table.describe(),
                      "how": "the report's onnxruntime fp32 row (timed here with the table's threads)"}
        else:
            target = measure_against_table(model.graph, table, self.target_latency_ms, search["predicted_latency_ms"])
        self.log(f"latency at {table.resolution}x{table.resolution} ({table.describe()}): target "
                 f"{self.target_latency_ms:.3f} ms, predicted {target['predicted_ms']:.3f} ms, measured "
                 f"{target['measured_ms']:.3f} ms ({target['error']:+.1%})")
        return latency, facts, target

    def manifest(self, space: str, lightnl_norm: str | None) -> None:
        out = self.out
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p != out / "manifest.json")
        manifest = {
            "format": "autonl-run", "version": 1,
            "inputs": {"data": self.data, "source": self.src.name, "space": space,
                       "target_macs": self.target_macs, "target_latency_ms": self.target_latency_ms,
                       "latency_table": self.latency_table, "backend": self.backend.name, **self.settings,
                       "lightnl_norm": lightnl_norm or "space default"},
            "seeds": {"search": self.seed, "train": self.seed, "calibration": 0},
            "versions": versions("torch", "onnx", "onnxruntime", "apache-tvm", "numpy"),
            "seconds": self.timings,
        }
        write_manifest(out, manifest, files)


def measure_against_table(graph, table, target_ms: float, predicted_ms: float) -> dict:
    """The derived network at the table's resolution, timed with the table's backend, options
    and threads and scaled to its machine speed (:mod:`autonl.backends.latency.timing`): the latency the
    search aimed at, measured."""
    from autonl.backends.latency import Effort
    from autonl.backends.latency.measure import table_probe, time_graphs
    prov = table.provenance
    at = resize_graph(graph, table.resolution)
    timings, _, _ = time_graphs({"derived": at}, get_backend(prov["backend"]), prov["threads"],
                                prov.get("options") or {}, prov.get("rpc"), Effort(rounds=20), "latency", progress=False,
                                probe=table_probe(table), probe_ref_ms=table.probe_ms)
    t = timings["derived"]
    return {"target_ms": target_ms, "predicted_ms": predicted_ms, "measured_ms": t.ms, "p10_ms": t.p10_ms,
            "p90_ms": t.p90_ms, "error": t.ms / target_ms - 1, "resolution": table.resolution,
            "table": table.path, "of": table.describe(),
            "how": "timed as the table was (its backend and threads), scaled to its machine's speed"}


def measure_latency(model, deploy: Path, backend: Backend, rounds: int = 7, threads: int | None = None,
                    extra: dict | None = None) -> tuple[dict, dict]:
    """Batch-1 latency of PyTorch eager and of each deployed model (``{runtime: ms}``) and the
    run's facts (threads, the load of other processes, a warning line or None, and
    ``extra_ms``: each model of ``extra`` (``{label: TorchModel}``) in onnxruntime fp32).

    ``threads``: torch's and onnxruntime's (None: torch's current count, onnxruntime's
    usable CPUs). Timed as ``autonl bench`` times (:func:`~autonl.backends.latency.timing.measure_all`):
    each runtime in a block of calls per round, the runtimes in turn, and its lowest round
    median, so that neither runtime's threads (torch's spinning OpenMP pool, onnxruntime's)
    are timed while the other's still hold the cores. Alternating single calls measured both
    several times slower than alone (a 32 px network: eager 51 ms against 8 ms alone)."""
    import torch

    from autonl.backends.cpu import usable_cpus
    from autonl.backends.latency.timing import Effort, measure_all, wall_timer
    from autonl.backends.loading import deploy_model, reference_input
    from autonl.backends.onnx.export import export_onnx
    from autonl.backends.onnx.runtime import run, session
    x = reference_input(model.graph, batch=1)
    xt = torch.from_numpy(x)
    torch_threads = threads or torch.get_num_threads()
    ort_threads = threads or usable_cpus()

    def eager():
        with torch.inference_mode():
            model.module(xt)

    calls = {"torch eager": eager}
    for label, fn in backend.load(deploy).items():      # the folder checked against its manifest
        calls[label] = lambda f=fn: f(x)
    for label, file in (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", "model.int8.onnx")):
        if label in calls and (deploy / file).is_file():     # as deployed: onnxruntime's spinning pool
            sess = session(deploy / file, threads=ort_threads, spin=True)
            calls[label] = lambda s=sess: run(s, x)
    if "onnxruntime fp32" not in calls:   # the alternative a user would pick, beside any other backend
        sess = session(export_onnx(deploy_model(model)), threads=ort_threads, spin=True)
        calls["onnxruntime fp32"] = lambda: run(sess, x)
    for label, other in (extra or {}).items():
        sess = session(export_onnx(deploy_model(other)), threads=ort_threads, spin=True)
        calls[f"extra:{label}"] = lambda s=sess, xo=reference_input(other.graph, batch=1): run(s, xo)
    saved = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        measured = measure_all({k: wall_timer(fn) for k, fn in calls.items()},
                               Effort(warmup=3, rounds=rounds, round_seconds=0.1, max_round_runs=50, extra=1))
    finally:
        torch.set_num_threads(saved)
    ms = {k: t.ms for k, t in measured.timings.items()}
    facts = {"torch_threads": torch_threads, "onnxruntime_threads": ort_threads, "cpus": usable_cpus(),
             "others_busy_cpus": measured.others_cpus,
             "rule": "each runtime timed in blocks of calls, in turn, over rounds; its lowest round median",
             "warning": measured.busy_warning(max(torch_threads, ort_threads)),
             "extra_ms": {k[len("extra:"):]: v for k, v in ms.items() if k.startswith("extra:")}}
    return {k: v for k, v in ms.items() if not k.startswith("extra:")}, facts
