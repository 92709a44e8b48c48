"""The TVM backend: parity with onnxruntime and torch, named targets, aarch64 libraries,
`autonl compile --backend tvm`."""
import json
import shutil

import numpy as np
import pytest

from autonl.backends.loading import deploy_model, reference_input, torch_logits
from autonl.backends.onnx import export_onnx
from autonl.backends.onnx.runtime import run, session
from autonl.backends.tvm import TARGETS, get_target
from autonl.backends.tvm.compile import build, to_relax, vm_runner

from helpers import assert_one_line_error, discrete_presets, randomized


@pytest.mark.parametrize("name", discrete_presets())
def test_tvm_matches_onnxruntime_and_torch_at_224(name):
    import tvm
    model = randomized(name)
    proto = export_onnx(deploy_model(model))
    mod, params = to_relax(proto, [1, 3, 224, 224])
    ex, main_params = build(mod, tvm.target.Target(get_target("host").target_dict()), params, False, None)
    x = reference_input(model.graph)
    got = vm_runner(ex, main_params)(x)
    ref = torch_logits(model, x)
    assert np.abs(ref).max() > 0.05
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(got - run(session(proto), x)).max() <= 1e-4


def test_lightnl_transposes_are_read_in_place_by_the_matmuls():
    """AutoNL-S has LightNL blocks of both orders (key-value first at 56x56, affinity first at
    7x7): neither path materialises K^T; the parity of this build is the test above."""
    from autonl.backends.onnx.runtime import optimized_op_types
    model = randomized("autonl-s")
    proto = export_onnx(deploy_model(model))
    assert [n.op_type for n in proto.graph.node].count("Transpose") == 7    # one per LightNL block
    mod, _ = to_relax(proto, [1, 3, 224, 224])
    names = [g.name_hint for g in mod.get_global_vars()]
    assert "permute_dims" not in mod.script()
    assert any(n.startswith("matmul_NT") for n in names) and any(n.startswith("matmul_TN") for n in names)
    ops = optimized_op_types(proto)           # onnxruntime fuses the same transposes on its side
    assert "Transpose" not in ops and ops.count("FusedMatMul") == 14


def test_targets_resolve_and_unknown_target_lists_them(cli, tmp_path):
    import tvm
    for t in TARGETS.values():
        d = t.target_dict()
        assert d["kind"] == "llvm" and tvm.target.Target(d).kind.name == "llvm"
    assert TARGETS["host"].target_dict()["mcpu"] not in ("", "native", "generic")
    proc = cli("targets", check_ok=True)
    assert "rpi4" in proc.stdout and "cortex-a72" in proc.stdout and "android-a78" in proc.stdout
    assert_one_line_error(cli("compile", "mobilenetv2", "--backend", "tvm", "--target", "rpi", "--out",
                              tmp_path / "o"), "unknown target 'rpi'", "rpi4", "host")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="needs g++-aarch64-linux-gnu (scripts/test.sh installs it)")
def test_arm64_build_is_an_aarch64_elf_library(cli, tmp_path):
    out = tmp_path / "arm"
    cli("compile", "autonl-s", "-r", "32", "--backend", "tvm", "--target", "arm64", "--out", out, check_ok=True)
    lib = out / "model.aarch64.so"
    head = lib.read_bytes()[:64]
    assert head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1      # 64-bit, little endian
    assert int.from_bytes(head[16:18], "little") == 3                     # ET_DYN: a shared library
    assert int.from_bytes(head[18:20], "little") == 183                   # EM_AARCH64
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "arm64" and manifest["target_dict"]["mtriple"] == "aarch64-linux-gnu"
    assert "model.params" in manifest["files"]


def test_missing_cross_compiler_is_one_line(cli, tmp_path, monkeypatch):
    import os
    monkeypatch.setenv("PATH", os.path.dirname(autonl_path()))
    assert_one_line_error(cli("compile", "autonl-s", "-r", "32", "--backend", "tvm", "--target", "rpi4",
                              "--out", tmp_path / "o"), "aarch64-linux-gnu-g++", "apt-get install")
    assert not (tmp_path / "o").exists()


def autonl_path():
    from conftest import autonl_exe
    return autonl_exe()


def test_tuning_a_cross_target_is_refused(cli, tmp_path):
    assert_one_line_error(cli("compile", "autonl-s", "-r", "32", "--backend", "tvm", "--target", "arm64",
                              "--tune-trials", "4", "--out", tmp_path / "o"), "--tune-rpc HOST:PORT")
