"""The search's recipe settings: the thresholds' optimiser (``shared-adam`` moves each
threshold in proportion to its pull; Adam moves them alike) and the target ramp."""
import io

import pytest
import torch
from torch import nn

from autonl.backends.torch.search.arch_optim import SharedAdam
from autonl.backends.torch.config import SearchConfig
from autonl.backends.torch.train.loop import NonFinite
from autonl.backends.torch.search import make_optimizers, search, search_step, step_target
from autonl.backends.torch.search.supernet import Supernet
from autonl.ir import AutonlError, build_preset

PULLS = torch.tensor([1.0, 0.1, -2.0, 0.0])


def _moves(opt_type, steps=5, **kw):
    p = nn.Parameter(torch.zeros(4))
    opt = opt_type([p], **kw)
    for _ in range(steps):
        opt.zero_grad()
        (p * PULLS).sum().backward()
        opt.step()
    return -p.detach()


def test_shared_adam_moves_each_threshold_in_proportion_to_its_pull_where_adam_moves_them_alike():
    shared = _moves(SharedAdam, lr=0.1)
    assert torch.allclose(shared / shared[0], PULLS, atol=1e-6)
    # one shared scale: the typical (root-mean-square) pull moves about lr per step
    rms = PULLS.pow(2).mean().sqrt()
    assert shared[0] == pytest.approx(5 * 0.1 * 1.0 / float(rms), rel=1e-3)
    adam = _moves(torch.optim.Adam, lr=0.1)
    assert adam[0] == pytest.approx(adam[1]) == pytest.approx(-adam[2]) and adam[3] == 0


def test_shared_adam_resumes_exactly_from_a_checkpoint_read_with_weights_only():
    def run(split):
        p = nn.Parameter(torch.zeros(4))
        opt = SharedAdam([p], lr=0.1)
        for i in range(6):
            if i == split:
                buf = io.BytesIO()
                torch.save({"p": p.detach().clone(), "opt": opt.state_dict()}, buf)
                buf.seek(0)
                saved = torch.load(buf, weights_only=True)
                p = nn.Parameter(saved["p"])
                opt = SharedAdam([p], lr=0.1)
                opt.load_state_dict(saved["opt"])
            opt.zero_grad()
            (p * PULLS * (i + 1)).sum().backward()
            opt.step()
        return p.detach()
    assert torch.equal(run(split=None), run(split=3))


def test_the_target_ramp_falls_geometrically_from_the_largest_cost_to_the_target():
    cfg = SearchConfig(target_macs=100.0, steps=300, warmup_steps=100, target_ramp=0.5)
    assert step_target(0, cfg, 400.0) == step_target(100, cfg, 400.0) == pytest.approx(400.0)
    assert step_target(150, cfg, 400.0) == pytest.approx(200.0)       # half-way: the geometric mean
    assert step_target(200, cfg, 400.0) == step_target(299, cfg, 400.0) == pytest.approx(100.0)
    assert step_target(150, SearchConfig(target_macs=100.0, steps=300, warmup_steps=100), 400.0) == 100.0
    assert step_target(150, cfg, 50.0) == 100.0            # a target above the largest: the target
    with pytest.raises(AutonlError, match="target-ramp"):
        SearchConfig(target_macs=100.0, target_ramp=1.5)
    with pytest.raises(AutonlError, match="arch optimizer"):
        SearchConfig(target_macs=100.0, arch_optimizer="lamb")


@pytest.fixture(scope="module")
def space():
    return build_preset("search-space", resolution=32, width=0.35, num_classes=10)


def test_a_ramped_search_with_shared_adam_logs_its_current_target_and_lands(tmp_path, space):
    lo, hi = Supernet(space).cost_model.bounds()
    cfg = SearchConfig(target_macs=int(lo + 0.4 * (hi - lo)), steps=12, warmup_steps=4, target_ramp=0.5,
                       arch_optimizer="shared-adam", log_every=1, checkpoint_every=12, batch_size=8, train_size=64,
                       val_size=16, workers=0, data="digits")
    result = search(space, cfg, tmp_path / "run", progress=False)
    import json
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    targets = [r["step_target"] for r in rows]
    assert targets[0] == pytest.approx(hi) and targets[-1] == pytest.approx(cfg.target_macs)
    assert all(a >= b for a, b in zip(targets, targets[1:]))
    assert result["derived_macs"] > 0


def test_shared_adam_steps_keep_every_number_on_the_device(space):
    """The shared second moment is a device tensor: stepping reads nothing back (the same
    check as tests/test_search_sync.py's, with this optimiser)."""
    from test_search_sync import _where, host_reads
    torch.manual_seed(0)
    supernet = Supernet(space).train()
    cfg = SearchConfig(target_macs=sum(supernet.cost_model.bounds()) / 2, steps=10, warmup_steps=1,
                       arch_optimizer="shared-adam", target_ramp=0.5)
    opts = make_optimizers(supernet, cfg)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    nonfinite = NonFinite()
    with host_reads() as reads:
        for i in range(3):
            loss, *_ = search_step(supernet, supernet, opts, x, y, i < 1, cfg, nn.CrossEntropyLoss(),
                                   step_target(i, cfg, supernet.cost_model.bounds()[1]))
            nonfinite.add(i, loss)
    assert reads == [], _where(reads)
