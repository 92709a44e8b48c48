"""One parity rule (issue #38, autonl.backends.parity): relative to the largest reference
logit, so a correct network with logits in the thousands compiles, while one perturbed
weight is still refused."""
import json

import numpy as np
import torch

from autonl.backends.loading import deploy_model, load_model_or_graph
from autonl.backends.onnx.compile import parity
from autonl.backends.onnx.export import export_onnx
from autonl.backends.parity import RULE, allowed, compare
from autonl.backends.torch.train.weights import save_model
from autonl.ir import build_preset


def big_logit_model():
    """MobileNetV2 (32 px, width 0.35) with random batch-norm statistics and its classifier
    scaled up: logits in the thousands, as an imported network with odd statistics has."""
    model = load_model_or_graph(build_preset("mobilenetv2", resolution=32, width=0.35, num_classes=10), seed=3)
    with torch.no_grad():
        fc = [m for m in model.module.modules() if isinstance(m, torch.nn.Linear)][-1]
        fc.weight.mul_(2e4)
        fc.bias.mul_(2e4)
    return model


def test_the_rule():
    assert allowed(0.3) == 1e-4 and allowed(5000.0) == 0.5 and allowed(float("nan")) == 1e-4
    ref = np.array([[1000.0, -2000.0], [3.0, 4.0]], np.float32)
    assert compare(ref, ref + 0.1)["passed"] and not compare(ref, ref + 0.3)["passed"]    # allowed 0.2
    assert not compare(ref, np.array([[np.inf, 0], [3, 4]], np.float32))["passed"]       # non-finite rows differ
    assert compare(np.zeros((1, 3)), np.full((1, 3), 5e-5))["passed"]                    # small logits: 1e-4 floor


def test_large_logits_compile_and_a_perturbed_weight_is_refused(cli, tmp_path):
    model = big_logit_model()
    onnx_model = export_onnx(deploy_model(model))
    check = parity(model, onnx_model)
    assert 1e3 <= check["max_abs_logit"] <= 1e5, check
    assert check["passed"] and check["rule"] == RULE
    with torch.no_grad():                       # one weight of the last convolution, after export
        conv = [m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        conv.weight[0, 0, 0, 0] += 0.5
    bad = parity(model, onnx_model)
    assert not bad["passed"] and bad["max_abs_diff"] > 10 * bad["allowed"], bad
    # through the command line: a model folder with such logits compiles, and says the rule
    folder = save_model(model.graph, big_logit_model().module, tmp_path / "model")
    proc = cli("compile", folder, "--backend", "onnx", "--out", tmp_path / "deploy", check_ok=True)
    assert "allowed" in proc.stderr and RULE in proc.stderr
    manifest = json.loads((tmp_path / "deploy" / "manifest.json").read_text())
    assert manifest
