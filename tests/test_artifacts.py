"""Artefacts are checked before they are loaded, and nothing is left running.

A deploy folder's library, parameters, runner and test arrays are checked against the sizes
and sha256 in its own manifest.json before anything is loaded or run (`autonl profile`,
`autonl deploy --rpc/--qemu`, the backends' `load`); a library that loads but is not a
Relax VM executable is one line. The tuning workers (TVM popen workers) are shut down at
once on error and on Ctrl-C; the RPC servers the tests start are stopped with their worker.
(conftest.py checks after every test and at the end of the session that no process the
suite started is still running, orphans included.)
"""
import json
import shutil
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

from autonl.backends.catalog import get_backend
from autonl.backends.manifest import verified, verify_folder, write_manifest
from autonl.ir import AutonlError

from conftest import autonl_exe, describe, free_port, leftovers, rpc_server_on_loopback, stop_process_tree, suite_processes
from helpers import TINY_IR as TINY, assert_one_line_error

CHANGED = "the folder was changed after autonl compile wrote it"


@pytest.fixture
def tvm_host(autonl_s_builds):
    """AutoNL-S at 32 px, width 0.35, compiled for the host with TVM (conftest's session build)."""
    return autonl_s_builds["host"]


@pytest.fixture
def onnx_folder(autonl_s_builds):
    return autonl_s_builds["onnx"]


def copy_of(folder, tmp_path):
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def replace_file(path, data: bytes):
    """Write ``path`` as a new file: a library this process has loaded stays mapped, and
    rewriting its pages in place would crash the process (SIGBUS) when it next touches them."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def flip_byte(path, at=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    replace_file(path, bytes(data))


def rewrite_manifest(folder):
    """Make the manifest agree with the files again (what a consistent tamperer would do)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, manifest, list(manifest["files"]))


def sha_of(folder, name):
    return json.loads((folder / "manifest.json").read_text())["files"][name]["sha256"]


def test_a_tampered_library_is_refused_before_anything_is_loaded(tvm_host, cli, tmp_path):
    d = copy_of(tvm_host, tmp_path)
    want = sha_of(d, "model.so")
    flip_byte(d / "model.so")
    fragments = (f"{d / 'model.so'}: sha256 does not match manifest.json (expected {want[:12]}...", CHANGED)
    assert_one_line_error(cli("profile", d), *fragments)
    # refused before connecting: the server's address is not even tried
    assert_one_line_error(cli("deploy", d, "--rpc", f"127.0.0.1:{free_port()}"), *fragments)
    assert_one_line_error(cli("deploy", d, "--qemu"), *fragments)
    with pytest.raises(AutonlError, match="model.so: sha256 does not match"):
        get_backend("tvm").load(d)


def test_every_file_used_from_a_deploy_folder_is_checked(tvm_host, tmp_path):
    from autonl.backends.tvm import remote

    d = copy_of(tvm_host, tmp_path)
    runner = get_backend("tvm").load(d)["TVM (untuned)"]      # the untouched folder loads and runs
    assert np.abs(runner(np.load(d / "input.npy")) - np.load(d / "reference_output.npy")).max() <= 1e-4

    flip_byte(d / "model.params")
    with pytest.raises(AutonlError, match="model.params: sha256 does not match"):
        get_backend("tvm").load(d)
    with pytest.raises(AutonlError, match="model.params: sha256 does not match"):
        remote.profile(d)
    shutil.copy2(tvm_host / "model.params", d / "model.params")

    with open(d / "reference_output.npy", "ab") as f:       # a size mismatch needs no hashing
        f.write(b"\0")
    with pytest.raises(AutonlError, match=r"reference_output.npy: \d+ bytes, manifest.json says \d+"):
        remote.profile(d)
    (d / "reference_output.npy").unlink()
    with pytest.raises(AutonlError, match=r"reference_output.npy: missing \(manifest.json lists it\)"):
        remote.profile(d)
    shutil.copy2(tvm_host / "reference_output.npy", d / "reference_output.npy")

    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["files"]["input.npy"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AutonlError, match="input.npy: not listed in"):
        remote.profile(d)
    (d / "manifest.json").unlink()
    with pytest.raises(AutonlError, match="no manifest.json"):
        get_backend("tvm").load(d)
    with pytest.raises(AutonlError, match="no manifest.json"):
        verified(d, "model.so")


def test_arrays_are_never_unpickled(tvm_host, tmp_path):
    from autonl.backends.tvm import remote

    d = copy_of(tvm_host, tmp_path)
    np.save(d / "input.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rewrite_manifest(d)
    with pytest.raises(AutonlError, match="allow_pickle=False"):
        remote.profile(d)


def _tir_library(path):
    """A valid TVM shared library that is not a Relax VM executable (one TIR function)."""
    import tvm
    from tvm import te

    a = te.placeholder((4,), name="a")
    b = te.compute((4,), lambda i: a[i] + 1, name="b")
    tvm.tirx.build(tvm.IRModule({"main": te.create_prim_func([a, b])}), target="llvm").export_library(str(path))


def test_a_library_that_is_not_a_relax_vm_executable_is_one_line(tvm_host, cli, tmp_path):
    d = copy_of(tvm_host, tmp_path)
    _tir_library(d / "model.so")
    rewrite_manifest(d)                           # the manifest agrees: only the kind of file is wrong
    verify_folder(d, ["model.so", "model.params"])
    assert_one_line_error(cli("profile", d), f"{d / 'model.so'}", "not a Relax VM executable")
    with rpc_server_on_loopback() as addr:
        assert_one_line_error(cli("deploy", d, "--rpc", addr, "--runs", "1"), "model.so", "not a Relax VM executable")
    with pytest.raises(AutonlError, match="not a Relax VM executable"):
        get_backend("tvm").load(d)

    replace_file(d / "model.so", np.random.default_rng(0).bytes(4096))     # not even a shared library
    rewrite_manifest(d)
    assert_one_line_error(cli("profile", d), "model.so", "not an ELF shared library")


def _weight_offset(path):
    """The offset, in the file, of a byte in the middle of the model's largest initializer."""
    import onnx

    raw = max((t.raw_data for t in onnx.load(path).graph.initializer), key=len)
    start = path.read_bytes().find(raw)
    assert start > 0 and len(raw) > 64
    return start + len(raw) // 2


def test_a_tampered_onnx_model_is_refused_by_load(onnx_folder, tmp_path):
    onnx = get_backend("onnx")
    d = copy_of(onnx_folder, tmp_path)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    assert np.isfinite(onnx.load(d)["onnxruntime fp32"](x)).all()
    want = sha_of(d, "model.onnx")
    flip_byte(d / "model.onnx", at=_weight_offset(d / "model.onnx"))    # a weight: the model still parses
    with pytest.raises(AutonlError, match=rf"model.onnx: sha256 does not match manifest.json \(expected {want[:12]}"):
        onnx.load(d)
    shutil.copy2(onnx_folder / "model.onnx", d / "model.onnx")
    shutil.copy2(d / "model.onnx", d / "model.int8.onnx")                # a model the manifest does not list
    with pytest.raises(AutonlError, match="model.int8.onnx: not listed in"):
        onnx.load(d)
    (d / "model.int8.onnx").unlink()
    (d / "manifest.json").unlink()
    with pytest.raises(AutonlError, match="no manifest.json"):
        onnx.load(d)


def _popen_workers(procs):
    return [p for p in procs if "tvm.exec.popen_worker" in " ".join(p.cmdline())]


def _wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while not (found := cond()):
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)
    return found


def test_the_build_worker_is_stopped_at_once_even_while_it_starts():
    """TVM's pool shutdown closed the pipe a thread was reading and so waited for the worker's
    initializer (a 27 s import) to end; closing the builder kills it at once."""
    from autonl.backends.tvm.build_worker import pooled_builder

    me = psutil.Process()
    builder = pooled_builder(1)
    try:
        _wait_for(lambda: _popen_workers(me.children(recursive=True)), 60, "the build worker to start")
    finally:
        t0 = time.time()
        builder.close()
        took = time.time() - t0
    builder.close()                               # twice is fine
    assert took < 10, f"closing the builder took {took:.0f} s"
    assert not _popen_workers(me.children(recursive=True))


@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
def test_tuning_workers_are_shut_down_on_error_and_ctrl_c(stop):
    from autonl.backends.tvm.build_worker import tuning_workers

    me = psutil.Process()
    with pytest.raises(stop):
        with tuning_workers(1):
            # the runner's worker answered its sanity check; the builder's is starting
            _wait_for(lambda: len(_popen_workers(me.children(recursive=True))) >= 2, 60, "two workers")
            raise stop()
    assert not _popen_workers(me.children(recursive=True))


def test_ctrl_c_during_a_tuning_compile_leaves_no_worker(tmp_path):
    """`autonl compile --tune-trials` interrupted (SIGINT to autonl alone, not to its process
    group, so that the workers are not interrupted themselves) leaves no process behind."""
    (tmp_path / "tiny.ir").write_text(TINY)
    before = set(suite_processes())
    # SIGINT as a terminal delivers it: a suite started in the background (`cmd &` in a
    # script) ignores SIGINT, autonl would inherit that, and Python then keeps it ignored
    p = subprocess.Popen([autonl_exe(), "compile", str(tmp_path / "tiny.ir"), "--backend", "tvm", "--tune-trials",
                          "1", "--out", str(tmp_path / "out")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        root = psutil.Process(p.pid)
        workers = _wait_for(lambda: p.poll() is None and _popen_workers(root.children(recursive=True)), 240,
                            "tuning to start its build worker")
        tree = root.children(recursive=True)
        for _attempt in range(2):     # TVM drops an interrupt now and then: Ctrl-C pressed twice at most
            sent = time.time()
            p.send_signal(signal.SIGINT)
            exited, after_exit = None, []
            try:
                while True:
                    try:
                        _out, err = p.communicate(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        if exited is None and p.poll() is not None:
                            # what still runs when autonl has exited (and may hold its stderr open)
                            exited = time.time() - sent
                            after_exit = [describe(q) for pid, q in suite_processes().items() if pid not in before]
                        if time.time() - sent > 90:
                            raise
                took = time.time() - sent
                exited = took if exited is None else exited
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            pytest.fail("autonl compile did not stop on Ctrl-C")
    finally:
        stop_process_tree(p)          # only if it is still running
    # before, the builder's shutdown waited for its worker's 27 s import (40 to 70 s here)
    assert took < 30, (f"autonl compile took {took:.0f} s to stop after Ctrl-C (it exited after {exited:.0f} s; "
                       f"still running then: {after_exit})")
    assert p.returncode != 0
    assert "Traceback" not in err
    assert not leftovers(before)
    assert not [q for q in tree if q.is_running() and q.status() != psutil.STATUS_ZOMBIE], workers
