"""The single-path supernet: one path per forward, gates, cost, and weights shared with the
derived networks (method.md sections 3 and 4)."""
import random

import pytest
import torch

from autonl.ir import AutonlError, Choice, build_preset
from autonl.passes import SearchSpace, analyze_cost
from autonl.backends.torch.search.supernet import Supernet

from helpers import assert_supernet_equals_derived

RES = 32


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


def random_decisions(graph, rng):
    return SearchSpace(graph).random(rng)


@pytest.fixture(scope="module")
def space():
    return build_preset("search-space", resolution=RES, num_classes=10)


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    return randomize(Supernet(space)).eval()


def test_forced_supernet_equals_the_derived_network_with_inherited_weights(space, supernet):
    """Property: for random decision sets the derived network, with the weights cut from the
    supernet, gives the supernet's logits (gates forced to those decisions), eval mode."""
    assert_supernet_equals_derived(space, supernet, 50, random.Random(0), torch.randn(2, 3, RES, RES))


def test_every_forward_runs_one_path_and_thresholds_learn(space):
    torch.manual_seed(0)
    net = Supernet(space).train()
    x = torch.randn(4, 3, RES, RES)
    out = net(x)
    decisions = net.decisions()
    assert all(v for n, d in decisions.items() for a, v in d.items() if a in ("insert",))  # all on at start
    lo, hi = net.cost_model.bounds()
    assert net.cost().item() == hi  # thresholds start at 0: the largest child
    loss = out.logsumexp(1).mean() + net.cost() / hi
    loss.backward()
    grads = [p.grad for p in net.arch_parameters()]
    assert len(grads) == len(net.gate_refs) + sum(1 for r in net.gate_refs if r.gate.importance is not None)
    assert all(g is not None for g in grads) and sum(float(g.abs().sum() > 0) for g in grads) > len(grads) // 2


def test_cost_bounds_match_the_ir(space):
    net = Supernet(space)
    report = analyze_cost(space)
    assert net.cost_model.bounds() == (report.macs, report.total("macs_max"))


def test_unsearchable_choices_are_refused(space):
    g = space.copy()
    g.node("mbconv_1").attrs["se"] = Choice(0.0, 0.25)
    with pytest.raises(AutonlError, match=r"cannot search mbconv attribute\(s\) \['se'\]"):
        Supernet(g)
    g = space.copy()
    g.node("mbconv_1").attrs["k"] = Choice(3, 5, 7)
    with pytest.raises(AutonlError, match="gates binary choices; k has 3 options"):
        Supernet(g)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_a_gate_folded_into_batch_norm_is_the_gate_times_batch_norm(momentum):
    """LightNL's insert gate scales BN's affine weights instead of its output: the same value,
    gradient and running statistics as ``g * bn(x)``, in training and in evaluation."""
    from autonl.backends.torch.search.supernet import gated_batch_norm

    torch.manual_seed(0)
    a = torch.nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5), a.bias.uniform_(-0.5, 0.5)
    b = type(a)(6, momentum=momentum)
    b.load_state_dict(a.state_dict())
    for step in range(3):
        x = torch.randn(4, 6, 5, 5)
        g1, g2 = torch.tensor(0.7, requires_grad=True), torch.tensor(0.7, requires_grad=True)
        y1, y2 = gated_batch_norm(a, x, g1), g2 * b(x)
        assert torch.allclose(y1, y2, atol=1e-6), step
        (y1 * x).sum().backward(), (y2 * x).sum().backward()
        assert torch.allclose(g1.grad, g2.grad, rtol=1e-5) and torch.allclose(a.weight.grad, b.weight.grad, rtol=1e-5)
    for k, v in a.state_dict().items():
        assert torch.allclose(v.float(), b.state_dict()[k].float()), k
    a.eval(), b.eval()
    x = torch.randn(2, 6, 5, 5)
    assert torch.allclose(gated_batch_norm(a, x, torch.tensor(0.3)), 0.3 * b(x), atol=1e-6)


def test_cost_of_decisions_is_the_derived_networks_cost(space, supernet):
    from autonl.passes.derive import Derive
    rng = random.Random(3)
    for _ in range(5):
        d = random_decisions(space, rng)
        assert supernet.cost_of(d) == analyze_cost(Derive(d)(space).graph).macs


def test_landing_flips_the_least_decided_gates_toward_the_target(space):
    """A search that ends off its target lands within 5% by flipping the gates nearest their
    thresholds, each at most once; a search already within 5% is left as it is."""
    from autonl.backends.torch.search.landing import land
    from autonl.passes.derive import Derive
    torch.manual_seed(0)
    net = Supernet(space).eval()
    net(torch.randn(2, 3, RES, RES))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():      # thresholds spread around the statistics: some gates near, some far
        for r in net.gate_refs:
            r.gate.threshold.copy_(r.gate.statistic + (torch.rand((), generator=g) - 0.3))
    net(torch.randn(2, 3, RES, RES))
    chosen = net.decisions()
    lo, hi = net.cost_model.bounds()
    c0 = net.cost_of(chosen)
    for target in (lo + 0.3 * (c0 - lo), c0 + 0.5 * (hi - c0)):
        landed, flipped = land(net, chosen, target)
        assert abs(net.cost_of(landed) / target - 1) <= 0.05 and flipped
        assert net.cost_of(landed) == analyze_cost(Derive(landed)(space).graph).macs
        changed = [(n, a) for n in chosen for a in chosen[n] if chosen[n][a] != landed[n][a]]
        assert len(changed) == len(flipped) == len(set(changed))
        margin = {(r.node, r.attr): abs(float(r.gate.statistic - r.gate.threshold.detach())) for r in net.gate_refs}
        assert min(margin[k] for k in changed) <= sorted(margin.values())[len(margin) // 2]
    assert land(net, chosen, c0 * 1.03) == (chosen, [])


def test_measured_landing_keeps_the_single_flip_with_the_lowest_loss(space):
    """SearchConfig.landing="measured": the least decided single flips that land within 5% are
    each measured in the supernet (BN statistics re-estimated, loss on the same images); the
    lowest loss is kept; a search already within 5% is left as it is."""
    from autonl.backends.torch.search.landing import LANDING_TOLERANCE, land_measured
    torch.manual_seed(0)
    net = Supernet(space).eval()
    net(torch.randn(2, 3, RES, RES))
    chosen = net.decisions()
    c0 = net.cost_of(chosen)
    # a target that one flip reaches and the thresholds' choice misses by more than 5%
    flips = {}
    for r in net.gate_refs:
        trial = {n: dict(a) for n, a in chosen.items()}
        trial[r.node][r.attr] = r.gate.off_value
        flips[(r.node, r.attr)] = net.cost_of(trial)
    target = min(flips.values())
    assert c0 / target - 1 > LANDING_TOLERANCE
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(4, 3, RES, RES, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(3)]
    landed, flipped, rows = land_measured(net, chosen, target, batches, batches[:2], torch.device("cpu"),
                                          log=lambda m: None)
    assert len(rows) == 8 and len(flipped) == 1       # MEASURED_CANDIDATES: many single flips land here
    assert all(r.gate.forced is None for r in net.gate_refs)   # the thresholds decide again afterwards
    assert all(abs(r["cost"] / target - 1) <= LANDING_TOLERANCE for r in rows)
    best = min(rows, key=lambda r: r["loss"])
    assert [r["flip"] for r in rows if r["chosen"]] == [best["flip"]] == flipped
    changed = [(n, a) for n in chosen for a in chosen[n] if chosen[n][a] != landed[n][a]]
    assert len(changed) == 1 and net.cost_of(landed) == best["cost"]
    assert land_measured(net, chosen, c0 * 1.03, batches, batches, torch.device("cpu")) == (chosen, [], [])
    # no single flip lands (the target is far below): the margin landing's greedy flips, nothing measured
    far = net.cost_model.bounds()[0] * 1.02
    landed, flipped, rows = land_measured(net, chosen, far, batches, batches, torch.device("cpu"))
    assert rows == [] and len(flipped) > 1 and abs(net.cost_of(landed) / far - 1) <= LANDING_TOLERANCE
