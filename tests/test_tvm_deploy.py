"""Deploying TVM libraries: MetaSchedule tuning and its database reuse, the aarch64 C++
runner under qemu-user, TVM RPC on loopback, per-kernel profiling, and their bad input."""
import json
import subprocess

import numpy as np
import pytest

from autonl.backends.loading import load_model_or_graph
from autonl.backends.tvm import get_target
from autonl.backends.tvm.compile import compile_tvm
from autonl.backends.tvm.options import TvmOptions
from autonl.backends.tvm.remote import find_runtime, qemu_rpc_server, runtime_dir
from autonl.ir import parse_graph
from autonl.passes import PassManager

from conftest import free_port, rpc_server_on_loopback
from helpers import TINY_IR as TINY, assert_one_line_error


def test_tuning_killed_keeps_its_records_resumes_and_its_database_is_reused(tmp_path):
    """SIGKILL mid-tuning: the records measured so far and the plan stay, no process is left,
    --resume finishes the plan, and a second compile with that database runs no new trials."""
    import time

    import psutil

    from conftest import autonl_exe
    graph = tmp_path / "tiny.ir"
    graph.write_text(TINY)
    out, db = tmp_path / "a", tmp_path / "a" / "tuning"
    cmd = [autonl_exe(), "compile", str(graph), "--backend", "tvm", "--tune-trials", "8", "--out", str(out)]
    records = db / "database_tuning_record.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (records.exists() and records.stat().st_size > 0):     # the first batch is in
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "no tuning record within 300 s"
            time.sleep(0.1)
        tree = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"left running after SIGKILL: {[p.cmdline() for p in alive]}"
    kept = records.read_text().splitlines()
    plan = json.loads((db / "tuning_plan.json").read_text())
    planned = sum(t["alloc"] for t in plan["tasks"])
    assert len(kept) >= 1 and plan["trials_done"] < planned
    assert not (out / "manifest.json").exists()

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert records.read_text().splitlines()[:len(kept)] == kept            # nothing measured was lost
    plan = json.loads((db / "tuning_plan.json").read_text())
    assert all(t["done"] >= t["alloc"] or t["closed"] for t in plan["tasks"])
    manifest = json.loads((out / "manifest.json").read_text())
    tuning = manifest["tuning"]
    assert tuning["resumed"] and tuning["trials_run"] > 0 and tuning["tasks_covered"] == tuning["tasks"]
    assert manifest["checks"]["vs_torch_max_abs_diff"] <= 1e-4
    assert manifest["checks"]["vs_onnxruntime_max_abs_diff"] <= 1e-4
    layers = json.loads((out / "layers.json").read_text())
    assert len(layers) == tuning["tasks"] and all(r["untuned_us"] > 0 and r["tuned_us"] > 0 for r in layers)

    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)   # a finished plan
    assert again.returncode != 0 and "exists" in again.stderr       # (--out is refused without --force)
    model = load_model_or_graph(PassManager(["shape-inference"])(parse_graph(TINY)).graph, seed=0)
    second = compile_tvm(model, tmp_path / "b", TvmOptions(tuning_dir=str(db)), progress=False)
    assert second["tuning"]["trials_run"] == 0 and second["tuning"]["tasks_covered"] == tuning["tasks"]
    assert second["checks"]["vs_torch_max_abs_diff"] <= 1e-4


@pytest.fixture
def arm_and_host(autonl_s_builds):
    """AutoNL-S at 32 px, width 0.35, compiled for arm64 (with the cross-built runner) and for
    the host, from the same random weights (conftest's session builds)."""
    return autonl_s_builds["arm64"], autonl_s_builds["host"]


def test_arm64_runner_under_qemu_matches_the_host_build(arm_and_host, cli, tmp_path):
    import tvm
    from autonl.backends.tvm.compile import vm_runner

    arm, host = arm_and_host
    manifest = json.loads((arm / "manifest.json").read_text())
    assert manifest["runner"]["built"]
    for name in ("autonl_runner", "autonl_runner.cc", "Makefile", "README.md", "lib/libtvm_runtime.so",
                 "lib/libtvm_ffi.so", "model.aarch64.so", "model.params", "input.npy"):
        assert name in manifest["files"], name
    assert (arm / "autonl_runner").read_bytes()[18] == 183              # an aarch64 executable
    # the runner itself, under qemu-user, on the folder's test input
    out_npy = tmp_path / "arm_out.npy"
    proc = subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(arm / "autonl_runner"),
                           str(arm / "model.aarch64.so"), str(arm / "model.params"), str(arm / "input.npy"),
                           str(out_npy), "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "median_ms" in proc.stdout
    arm_logits = np.load(out_npy)
    # the host build of the same weights, through the Python Relax VM
    params = tvm.runtime.load_param_dict((host / "model.params").read_bytes())
    host_logits = vm_runner(tvm.runtime.load_module(str(host / "model.so")),
                            [params[k] for k in sorted(params)])(np.load(host / "input.npy"))
    assert arm_logits.shape == (1, 10)
    assert np.abs(host_logits).max() > 1e-3
    assert np.abs(arm_logits - host_logits).max() <= 1e-4
    # the same through the CLI, which also compares with PyTorch's logits
    res = cli("deploy", arm, "--qemu", "--runs", "2", "--json", tmp_path / "q.json", check_ok=True)
    assert "max |output - reference|" in res.stdout
    assert "weights: random init" in res.stderr         # compiled from a preset: said on every use
    assert json.loads((tmp_path / "q.json").read_text())["vs_reference_max_abs_diff"] <= 1e-4


def test_a_failing_runner_is_one_error_line_without_its_own_prefix_doubled(arm_and_host, tmp_path):
    """The runner reports failures as `error: ...`; the CLI adds its own prefix once (it read
    "error: error: ..."). A stand-in qemu-aarch64 that fails as the runner does."""
    import os

    from conftest import autonl_exe

    arm, _ = arm_and_host
    fake = tmp_path / "bin" / "qemu-aarch64"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'error: cannot load model.aarch64.so: bad ELF' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    proc = subprocess.run([autonl_exe(), "deploy", str(arm), "--qemu", "--runs", "1"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert_one_line_error(proc, "autonl_runner under qemu-aarch64 failed: cannot load model.aarch64.so")
    assert proc.stderr.count("error:") == 1


@pytest.fixture
def rpc_server():
    """A host TVM RPC server on loopback (an aarch64 one would need an aarch64 Python under qemu),
    stopped with the worker process it runs in (conftest.rpc_server_on_loopback)."""
    with rpc_server_on_loopback() as addr:
        yield addr


def test_deploy_over_rpc_runs_and_times_the_library(arm_and_host, rpc_server, cli, tmp_path):
    _arm, host = arm_and_host
    proc = cli("deploy", host, "--rpc", rpc_server, "--runs", "3", "--json", tmp_path / "r.json", check_ok=True)
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["runs"] == 3 and res["median_ms"] > 0 and res["vs_reference_max_abs_diff"] <= 1e-4
    assert f"rpc {rpc_server}" in proc.stdout


def test_a_library_for_another_target_and_an_unreachable_server_get_one_line(arm_and_host, rpc_server, cli):
    arm, host = arm_and_host
    assert_one_line_error(cli("deploy", arm, "--rpc", rpc_server), "could not load model.aarch64.so",
                          "aarch64")
    assert_one_line_error(cli("deploy", host, "--rpc", f"127.0.0.1:{free_port()}"), "not reachable",
                          "rpc_server")
    assert_one_line_error(cli("deploy", host, "--rpc", "nowhere"), "HOST:PORT")
    assert_one_line_error(cli("deploy", host, "--qemu"), "built for x86_64", "not aarch64")
    assert_one_line_error(cli("profile", arm), "built for aarch64", "on the device")


def test_an_earlier_folder_that_lays_weights_out_on_the_device_is_refused_before_connecting(arm_and_host, cli,
                                                                                          tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(arm_and_host[1], old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["entry"]["transform_params"] = "main_transform_params"
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(cli("deploy", old, "--rpc", f"127.0.0.1:{free_port()}"), "compiled by an earlier autonl",
                          "compile the folder again")


def test_profile_reports_per_kernel_time(arm_and_host, cli, tmp_path):
    _arm, host = arm_and_host
    proc = cli("profile", host, "--runs", "2", "--top", "3", "--json", tmp_path / "p.json", check_ok=True)
    res = json.loads((tmp_path / "p.json").read_text())
    assert res["model_us"] > 0 and len(res["kernels"]) > 10
    assert any(k["kernel"].startswith(("conv2d", "fused_conv2d")) for k in res["kernels"])
    assert abs(sum(k["share"] for k in res["kernels"]) - 1) < 1e-6
    assert "kernel" in proc.stdout


def test_deploy_of_a_folder_that_is_not_a_deploy_folder(cli, tmp_path):
    assert_one_line_error(cli("deploy", tmp_path, "--qemu"), "not a TVM deploy folder")
    assert_one_line_error(cli("deploy", tmp_path), "give one of --rpc")


def test_tuning_over_rpc_writes_a_database_that_a_second_compile_reuses(rpc_server, tmp_path):
    """MetaSchedule's RPC runner against a real server on loopback: candidates built as shared
    libraries, uploaded and timed there; the database then compiles a second build with no
    new trials."""
    model = load_model_or_graph(PassManager(["shape-inference"])(parse_graph(TINY)).graph, seed=0)
    first = compile_tvm(model, tmp_path / "a", TvmOptions(tune_trials=2, tune_rpc=rpc_server), progress=False)
    tuning = first["tuning"]
    assert tuning["measured_on"] == f"RPC server {rpc_server}"
    assert tuning["trials_run"] > 0 and tuning["tasks_covered"] == tuning["tasks"]
    plan = json.loads((tmp_path / "a" / "tuning" / "tuning_plan.json").read_text())
    assert plan["cost"] == "FLOPs"           # the kernels run on the server: shares from FLOPs
    assert first["checks"]["vs_torch_max_abs_diff"] <= 1e-4
    second = compile_tvm(model, tmp_path / "b", TvmOptions(tuning_dir=str(tmp_path / "a" / "tuning")),
                         progress=False)
    assert second["tuning"]["trials_run"] == 0 and second["tuning"]["tasks_covered"] == tuning["tasks"]
    assert second["checks"]["vs_torch_max_abs_diff"] <= 1e-4


def test_tuning_on_an_emulated_arm64_board_over_rpc(arm_and_host, cli, tmp_path):
    """The deploy folder's C++ RPC server (autonl_rpc_server, cross-built for aarch64, no
    Python) under qemu-user as the board: an arm64 build tuned with its candidates cross-linked,
    uploaded and timed there; a second compile reuses the database with no new trials; and
    `autonl deploy --rpc` runs the tuned library on the emulated board at parity."""
    arm, _host = arm_and_host
    assert (arm / "autonl_rpc_server").is_file() and (arm / "autonl_rpc_server.cc").is_file()
    graph = tmp_path / "tiny.ir"
    graph.write_text(TINY)
    with qemu_rpc_server(arm, free_port()) as addr:
        cli("compile", graph, "--backend", "tvm", "--target", "arm64", "--tune-rpc", addr, "--tune-trials", "1",
            "--out", tmp_path / "a", check_ok=True)
        tuning = json.loads((tmp_path / "a" / "manifest.json").read_text())["tuning"]
        assert tuning["measured_on"] == f"RPC server {addr}"
        assert tuning["trials_run"] > 0 and tuning["tasks_covered"] == tuning["tasks"]
        cli("compile", graph, "--backend", "tvm", "--target", "arm64", "--tuning-dir", tmp_path / "a" / "tuning",
            "--out", tmp_path / "b", check_ok=True)
        manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
        assert manifest["tuned"] and manifest["tuning"]["trials_run"] == 0
        assert manifest["tuning"]["tasks_covered"] == tuning["tasks"]
        cli("deploy", tmp_path / "b", "--rpc", addr, "--runs", "2", "--json", tmp_path / "r.json", check_ok=True)
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["runs"] == 2 and res["vs_reference_max_abs_diff"] <= 1e-4


def test_rpc_tuning_bad_input_is_one_line(cli, tmp_path):
    graph = tmp_path / "tiny.ir"
    graph.write_text(TINY)
    base = ["compile", str(graph), "--backend", "tvm", "--out", str(tmp_path / "out")]
    port = free_port()
    assert_one_line_error(cli(*base, "--tune-trials", "2", "--tune-rpc", f"127.0.0.1:{port}"), "not reachable")
    assert_one_line_error(cli(*base, "--tune-trials", "2", "--tune-rpc-key", "rpi4"), "--tune-rpc HOST:PORT")
    assert_one_line_error(cli(*base, "--tune-rpc", f"127.0.0.1:{port}"), "budget")
    assert_one_line_error(cli(*base, "--tune-trials", "2", "--target", "rpi4"), "--tune-rpc")
    assert_one_line_error(cli(*base, "--tune-minutes", "0"), "--tune-minutes")
    assert_one_line_error(cli(*base, "--resume"), "nothing to resume")
    assert not (tmp_path / "out").exists()
