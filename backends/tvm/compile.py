"""``autonl compile --backend tvm``: Relax build, MetaSchedule tuning, a deployable library.

Translation: through TVM's ONNX frontend (``tvm.relax.frontend.onnx.from_onnx``) from the
model the ONNX backend emits. That ONNX model is already checked (onnx.checker, shape
inference, onnxruntime against torch to 1e-4), holds BN folded and LightNL as its two
matmuls in the cheaper order, and the frontend maps each of its nodes (Conv, MatMul, Clip,
Sigmoid, Slice, Reshape, Transpose, Gemm) one to one onto Relax ops; a second, direct
IR-to-Relax emitter would duplicate the op mapping with nothing gained. Weights stay
function parameters (``keep_params_in_input``) so that MetaSchedule's weight prepacking can
lift their layout transform into ``main_transform_params``, which :func:`apply_lifted` then
runs once at compile time (``model.params`` holds the weights laid out).

Tuning (``tune_trials`` per task > 0, host targets): MetaSchedule on the tasks extracted
from the module; the database (``tuning/`` in the output folder) is reused: tasks that
already have a record are not tuned again, so a second compile with the same database runs
no new trials. Written: ``model.so`` (host) or ``model.aarch64.so``, ``model.params``
(tvm.runtime.save_param_dict; keys ``p0000``.. in call order), ``input.npy`` and
``reference_output.npy`` (a test input and PyTorch's logits for it), ``layers.json``
(per-layer time, tuned against untuned, host only), for aarch64 targets the C++ runner, its
runtime libraries and a README for the board (``remote.package_runner``), ``manifest.json``.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from autonl.ir import AutonlError
from autonl.ir import atomic_write, render

from ..latency.timing import median_ms
from ..locks import output_lock
from ..loading import TorchModel, deploy_model, reference_input, torch_logits
from ..manifest import check_out, io_signature, prepare_out, versions, write_manifest
from ..parity import RULE, compare
from ..onnx.export import export_onnx
from ..onnx.runtime import run, session
from .options import LAYOUTS, TvmOptions
from .targets import NamedTarget, get_target, require_cc
from .threads import set_tvm_threads, target_threads
from .tuning import time_prim, tune


def to_relax(onnx_model, shape: list[int], layout: str = "nchw", weights: bool = True):
    """(IRModule, params list) for a fixed input shape; transposes feeding a matmul are read
    in place by the matmul, sigmoids use a vectorizable exp (:mod:`.lowering`).

    ``layout="nhwc"`` (tuned builds, :func:`layout_for`): Relax's ConvertLayout runs the
    convolutions in NHWC with OHWI weights before those rewrites (after them, the swish's
    sigmoid would be an opaque kernel that ConvertLayout wraps in transposes), and the
    weights' own transforms are applied here, once: ``main`` takes the weights laid out, and
    neither tuning nor the deployed library ever sees a weight transpose.

    NHWC for tuned builds: equal-budget MetaSchedule runs on AutoNL-S's convolutions measured
    depthwise kernels at 14x14 and the 224x224 stem about 2x and 1.6x faster in NHWC (the
    vectorized axis is the channel, not a 14- or 7-wide row), 1x1 convolutions at 7x7 within
    10% (``benchmarks/tvm_layouts.py``, docs/deploy.md "Layout"). The ONNX model stays NCHW: the
    activation transforms sit at the input, around LightNL's reshapes and at the classifier.
    ``weights=False``: the module only (for task extraction), its params list left empty."""
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    from .lowering import fast_sigmoid, fold_transposes_into_matmuls

    if layout not in LAYOUTS:
        raise AutonlError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    name = onnx_model.graph.input[0].name
    mod = from_onnx(onnx_model, shape_dict={name: shape}, keep_params_in_input=True)
    mod, params = detach_params(mod)
    params = params.get("main", [])   # a model without weights has none
    if layout == "nhwc":
        mod, params = _nhwc(mod, params if weights else None)
    return fast_sigmoid(fold_transposes_into_matmuls(mod)), params


def layout_for(layout: str, prepack: bool, tuned: bool) -> str:
    """The layout a build uses: ``layout`` for tuned, prepacked builds; NCHW otherwise (an
    untuned NHWC kernel gains nothing, and without prepacking the weights would be
    transposed on every call)."""
    if layout not in LAYOUTS:
        raise AutonlError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    return layout if prepack and tuned else "nchw"


def _nhwc(mod, params: list | None):
    """``mod`` with its convolutions in NHWC/OHWI and ``params`` transformed to match (the
    weight transforms ConvertLayout inserts are lifted out and run here, once; ``None``: not
    run, and no params returned)."""
    from tvm import relax

    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
    return apply_lifted(relax.transform.LiftTransformParams()(mod), params)


LIFTED = "main_transform_params"


def apply_lifted(mod, params: list | None):
    """(``mod`` without ``main_transform_params``, ``params`` run through it here): the weight
    transforms LiftTransformParams pulled out of ``main`` (a layout change, a tuned kernel's
    layout rewrite) are computed once, on this machine (they move data, whatever the target),
    so that ``main`` takes the weights laid out and no transform runs on the device, in the
    runner or over RPC. ``params`` None or empty: the module only."""
    import tvm
    from tvm import relax

    lifted = next((gv for gv in mod.get_global_vars() if gv.name_hint == LIFTED), None)
    if lifted is None:
        return mod, params or []
    laid_out = []
    if params:
        funcs = {tvm.ir.GlobalVar("main"): mod[lifted].with_attr("global_symbol", "main")}
        for gv, f in mod.functions_items():      # the kernels it calls (already lowered after tuning)
            if isinstance(f, tvm.tirx.PrimFunc):
                funcs[gv] = f.without_attr("target") if f.attrs and "target" in f.attrs else f
        transform = relax.transform.DeadCodeElimination(["main"])(tvm.IRModule(funcs))
        vm = relax.VirtualMachine(tvm.compile(transform, target=tvm.target.Target("llvm")), tvm.cpu())
        laid_out = list(vm["main"]([p if isinstance(p, tvm.runtime.Tensor) else tvm.runtime.tensor(p)
                                    for p in params]))
    return tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv != lifted}), laid_out


def pre_tuning(mod, target, prepack: bool):
    """The static_shape_tuning pipeline's steps before tuning (TVM 0.27 relax/pipeline.py)."""
    import tvm
    from tvm import relax

    seq = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
           relax.get_pipeline("zero")]
    if prepack:
        seq.append(relax.transform.AttachAttrLayoutFreeBuffers())
    with target:
        return tvm.transform.Sequential(seq)(mod)


def post_tuning(mod, target, work_dir: str, prepack: bool):
    import tvm
    from tvm import relax

    with target:   # MetaScheduleApplyDatabase reads the target when it is constructed
        seq = [relax.transform.MetaScheduleApplyDatabase(work_dir)]
        if prepack:
            seq += [relax.transform.SplitLayoutRewritePreproc(), relax.transform.LiftTransformParams(),
                    relax.transform.FoldConstant()]
        return tvm.transform.Sequential(seq)(mod)


def build(mod, target, params, prepack: bool, work_dir: str | None):
    """(executable, params for main) for ``mod``: tuned when ``work_dir`` holds a database."""
    import tvm

    if work_dir is None:
        return tvm.compile(mod, target=target), params
    mod = post_tuning(pre_tuning(mod, target, prepack), target, work_dir, prepack)
    if prepack:      # the tuned kernels' weight layouts, applied here once (apply_lifted)
        mod, params = apply_lifted(mod, params)
    with target:
        return tvm.compile(mod, target=target), params


def vm_runner(ex, params):
    """A function x -> logits running ``ex`` on the CPU through the Relax VM."""
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    args = list(params)
    if _has(vm, "main_transform_params"):   # weight prepacking: lay the weights out once
        args = list(vm["main_transform_params"](args))

    def fn(x: np.ndarray) -> np.ndarray:
        return vm["main"](tvm.runtime.tensor(x, dev), *args).numpy()

    fn.vm, fn.args, fn.dev = vm, args, dev
    return fn


def _has(vm, name: str) -> bool:
    try:
        vm[name]
        return True
    except Exception:  # noqa: BLE001  (the VM raises a plain error for a missing function)
        return False


def _sizes(mod) -> dict:
    """Elements of a kernel's weight (its layout-free buffer, with prepacking) and output."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    func = next(iter(mod.functions.values()))
    infos = ArgInfo.from_entry_func(mod, remove_preproc=True)

    def numel(info) -> int:
        n = 1
        for d in info.shape:
            n *= int(d)
        return n

    free = [int(i) for i in (func.attrs.get("layout_free_buffers", []) if func.attrs else [])]
    weights = [infos[i] for i in free if i < len(infos)]
    return {"weight_numel": numel(weights[0]) if weights else 0, "out_numel": numel(infos[-1]) if infos else 0}


def layer_report(mod, target, work_dir: str) -> list[dict]:
    """Per layer (MetaSchedule task: one fused kernel and how often the model calls it): the
    kernel's time untuned (TVM's default lowering) and with the database's best schedule."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    dev = tvm.cpu()
    db = ms.database.JSONDatabase(work_dir=work_dir)
    rows = []
    with target:
        tasks = ms.relax_integration.extract_tasks(mod, target)
    for task in tasks:
        prim = task.dispatched[0]
        sch = db.query_schedule(prim, target, task.task_name)
        untuned = time_prim(prim, target, dev)
        tuned = time_prim(sch.mod, target, dev) if sch is not None else None
        rows.append({"layer": task.task_name, "calls": int(task.weight), "untuned_us": untuned, "tuned_us": tuned,
                     "speedup": untuned / tuned if tuned else None, **_sizes(prim)})
    rows.sort(key=lambda r: -r["untuned_us"] * r["calls"])
    return rows


def compile_tvm(model: TorchModel, out: str | Path, options: TvmOptions = TvmOptions(), log=lambda msg: None,
                progress: bool = True) -> dict:
    """Compile (and tune) ``model`` into ``out`` with ``options``; return the manifest. The lock
    of ``out`` (:mod:`autonl.backends.locks`) is held from before any work to the manifest, so
    two compiles never share the default tuning database ``out/tuning``."""
    target = get_target(options.target)
    check_out(out)
    with output_lock(out, "compile"):
        return _compile_tvm(model, out, options, target, log, progress)


def _compile_tvm(model: TorchModel, out: str | Path, options: TvmOptions, target: NamedTarget, log,
                 progress: bool) -> dict:
    import tvm

    options.check_tuning(target)
    cc = require_cc(target)
    if options.tune_rpc is not None:
        from .remote import check_rpc
        check_rpc(options.tune_rpc, options.tune_rpc_key)       # unreachable: one line before any work
    tvm_target = tvm.target.Target(target.target_dict())
    deployed = deploy_model(model)
    onnx_model = export_onnx(deployed)
    shape = list(model.graph.inputs[next(iter(model.graph.inputs))].shape)
    work_dir = str(options.tuning_dir or Path(out) / "tuning")
    tuned = options.tuning_asked or (Path(work_dir) / "database_tuning_record.json").exists()
    layout = layout_for(options.layout, options.prepack, tuned)
    mod, params = to_relax(onnx_model, shape, layout)
    tuning = _tune(mod, tvm_target, work_dir, options, cc, progress, log) if tuned else None
    t0 = time.time()
    ex, main_params = build(mod, tvm_target, params, options.prepack and tuned, work_dir if tuned else None)
    log(f"built for {target.name} ({json.dumps(target.target_dict())}) in {time.time() - t0:.0f} s")

    checks: dict = {}
    layers = latency = None
    x = reference_input(model.graph)
    ref_t = torch_logits(model, x)
    if target.is_host:
        checks, latency = _check_on_host(model, ex, main_params, onnx_model, tvm_target, x, ref_t, log)
        if tuned:
            layers = _layers(mod, tvm_target, work_dir, options.prepack, log)
    out_path = prepare_out(out)
    files, runner_info = _write_folder(out_path, model, target, cc, ex, main_params, deployed.graph, x, ref_t,
                                       layers, log)
    from autonl.passes import analyze_cost
    cost = analyze_cost(model.graph)
    manifest = {
        "format": "autonl-deploy", "version": 1, "backend": "tvm", "target": target.name,
        "target_dict": target.target_dict(), "graph": model.graph.name, "source": model.source,
        "weights": model.weights, **io_signature(model.graph),
        "macs": cost.macs, "params": cost.params, "lightnl_macs": cost.lightnl_macs, "data": model.data,
        "translation": "IR -> ONNX (autonl) -> Relax (tvm.relax.frontend.onnx)",
        "library": files[0], "runner": runner_info,
        "test_input": "input.npy", "reference_output": "reference_output.npy (PyTorch on this machine)",
        "tuned": tuned, "weight_prepack": bool(options.prepack and tuned),
        "layout": layout.upper(), "tuning": tuning,
        "tuning_dir": work_dir if tuned else None,
        "entry": {"transform_params": None, "main": "main",
                  "params_file": "model.params", "params_order": "keys p0000, p0001, ... in call order"},
        "checks": checks, "latency": latency, "versions": versions("apache-tvm", "onnx", "onnxruntime"),
    }
    return write_manifest(out_path, manifest, files)


def _tune(mod, tvm_target, work_dir: str, options: TvmOptions, cc, progress: bool, log) -> dict:
    """Tune ``mod``'s tasks into ``work_dir`` on the options' budget (no budget: only count
    what the database covers) and say what came of it."""
    rpc = None if options.tune_rpc is None else {"addr": options.tune_rpc, "key": options.tune_rpc_key, "cc": cc}
    tuning = tune(pre_tuning(mod, tvm_target, options.prepack), tvm_target, work_dir, options.tune_trials, progress,
                  options.tune_minutes, options.resume, rpc)
    if tuning.get("unfinished") and not options.resume:
        log(f"note: {work_dir} holds an unfinished tuning run ({tuning['unfinished']}): --resume finishes it")
    log(f"tuning database {work_dir}: {tuning['trials_run']} new trials"
        + (f" in {tuning['seconds']:.0f} s" if tuning["trials_run"] else "")
        + f"; it covers {tuning['tasks_covered']} of the {tuning['tasks']} tasks (before: "
          f"{tuning['tasks_with_records']})")
    if tuning.get("trials_failed"):
        log(f"warning: {tuning['trials_failed']} trial(s) did not build or run"
            + (f"; {tuning['tasks'] - tuning['tasks_covered']} task(s) have no measured kernel and run "
               f"untuned" if tuning["tasks_covered"] < tuning["tasks"] else "")
            + f"; first: {tuning['failures'][0] if tuning['failures'] else '?'}")
    return tuning


def _check_on_host(model: TorchModel, ex, main_params, onnx_model, tvm_target, x, ref_t, log) -> tuple[dict, dict]:
    """(checks, latency) of the host library: its logits against torch's and onnxruntime's
    (a difference beyond the parity rule stops the compile), then both timed at batch 1."""
    threads = target_threads(tvm_target)   # TVM's own default is half the CPUs (threads.py)
    set_tvm_threads(threads)
    runner = vm_runner(ex, main_params)
    got = runner(x)
    sess = session(onnx_model, threads)
    ref_o = run(sess, x)
    vs_t, vs_o = compare(ref_t, got), compare(ref_o, got)
    checks = {"vs_torch_max_abs_diff": vs_t["max_abs_diff"], "vs_onnxruntime_max_abs_diff": vs_o["max_abs_diff"],
              "max_abs_logit": vs_t["max_abs_logit"], "allowed": vs_t["allowed"], "rule": RULE,
              "nonfinite_rows": vs_t["nonfinite_rows"]}
    log(f"TVM vs torch: max |diff| {checks['vs_torch_max_abs_diff']:.2e}; vs onnxruntime "
        f"{checks['vs_onnxruntime_max_abs_diff']:.2e}; logits up to {vs_t['max_abs_logit']:.2f} "
        f"(allowed {vs_t['allowed']:.2e}: {RULE})")
    if not (vs_t["passed"] and vs_o["passed"]):
        raise AutonlError(f"parity check failed: TVM differs from torch/onnxruntime by more than "
                          f"{vs_t['allowed']:.3g} ({RULE}) on '{model.graph.name}'; nothing was written")
    batch = x.shape[0]
    latency = {"batch": batch, "threads": threads, "tvm_ms": median_ms(runner, x),
               "onnxruntime_ms": median_ms(lambda v: run(sess, v), x)}
    log(f"latency at batch {batch}, {threads} threads: TVM {latency['tvm_ms']:.2f} ms, onnxruntime "
        f"{latency['onnxruntime_ms']:.2f} ms ({latency['tvm_ms'] / latency['onnxruntime_ms']:.2f}x)")
    return checks, latency


def _layers(mod, tvm_target, work_dir: str, prepack: bool, log) -> list[dict]:
    """The per-layer report of a tuned host build (:func:`layer_report`), summed up in one line."""
    layers = layer_report(pre_tuning(mod, tvm_target, prepack), tvm_target, work_dir)
    known = [r for r in layers if r["tuned_us"]]
    u, t = (sum(r[k] * r["calls"] for r in known) for k in ("untuned_us", "tuned_us"))
    log(f"layers: {len(known)} of {len(layers)} tuned; their kernels take {u / 1e3:.2f} ms untuned, "
        f"{t / 1e3:.2f} ms tuned ({u / max(t, 1e-9):.1f}x); per layer in layers.json")
    return layers


def _write_folder(out_path: Path, model: TorchModel, target: NamedTarget, cc, ex, main_params, graph, x, ref_t,
                  layers, log) -> tuple[list[str], dict | None]:
    """Write the library (first of the returned files), its parameters, the deploy graph, the
    test input and reference output, for boards the runner and its README, and layers.json;
    return (files, runner info)."""
    import tvm

    lib = "model.so" if target.is_host else "model.aarch64.so"
    files = [lib, "model.params", "deploy_graph.ir"]
    with tempfile.TemporaryDirectory(dir=out_path, prefix=".build-") as tmp:
        tmp_lib = os.path.join(tmp, lib)
        try:
            ex.export_library(tmp_lib, **({"cc": cc} if cc else {}))
        except Exception as e:  # the linker's failure arrives as a generic TVM error
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise AutonlError(f"linking {lib} for '{target.name}' failed: {first[:200]}") from None
        os.replace(tmp_lib, out_path / lib)
    atomic_write(out_path / "model.params", bytes(tvm.runtime.save_param_dict(
        {f"p{i:04d}": p for i, p in enumerate(main_params)})))
    atomic_write(out_path / "deploy_graph.ir", render(graph, "text"))
    for name, arr in (("input.npy", x), ("reference_output.npy", ref_t)):
        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write(out_path / name, buf.getvalue())
        files.append(name)
    runner_info = None
    if not target.is_host:   # the C++ runner and a README for the board
        from .remote import package_runner, write_board_readme
        runner_info = package_runner(out_path, target, cc, log)
        files += runner_info.pop("files") + [write_board_readme(out_path, target, model.graph.name, lib, model.data)]
    if layers is not None:
        atomic_write(out_path / "layers.json", json.dumps(layers, indent=1) + "\n")
        files.append("layers.json")
    return files, runner_info
