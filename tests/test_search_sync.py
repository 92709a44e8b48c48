"""A search step reads nothing back from the device: gate statistics, decisions, the cost
and the running totals stay where they are computed, and are read on the host only when a
row is logged or a checkpoint written (every ``--log-every`` / ``--checkpoint-every`` steps).

On CPU every tensor is on the host, so a "sync" is counted as what would be one on a GPU:
a tensor turned into a Python number or list (``item``, ``float``, ``int``, ``bool``,
``tolist``, ``numpy``) by this project's code. Where CUDA is present the same steps also run
under ``torch.cuda.set_sync_debug_mode("error")``.
"""
import contextlib
import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from autonl.backends.torch.config import SearchConfig
from autonl.backends.torch.train.loop import NonFinite, Window
from autonl.backends.torch.search import make_optimizers, search, search_step
from autonl.backends.torch.search.supernet import Supernet
from autonl.ir import build_preset

# the project's four source folders (autonl.ir, .passes, .backends, .cli), wherever installed
OURS = tuple(Path(importlib.import_module(f"autonl.{p}").__file__).resolve().parent
             for p in ("ir", "passes", "backends", "cli"))
READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")
LOGGING = {"row", "check", "save", "plot_search", "write_checkpoint", "state", "decisions", "finish"}


def _ours(filename: str) -> bool:
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return any(path.is_relative_to(folder) for folder in OURS)


@contextlib.contextmanager
def host_reads():
    """Record every host read of a tensor made directly by this project's code, with the
    names of the functions on the stack (to tell logging from stepping)."""
    seen: list[tuple[str, int, str, set[str]]] = []
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            if _ours(caller.f_code.co_filename):
                stack, f = set(), caller
                while f is not None:
                    stack.add(f.f_code.co_name)
                    f = f.f_back
                seen.append((caller.f_code.co_filename, caller.f_lineno, name, stack))
            return original(self, *args, **kwargs)
        return read

    for name, original in saved.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield seen
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def _where(reads):
    return [f"{Path(f).name}:{line} {name}" for f, line, name, _stack in reads]


@pytest.fixture(scope="module")
def space():
    return build_preset("search-space", resolution=32, width=0.35, num_classes=10)


def test_search_steps_read_nothing_from_the_device(space):
    torch.manual_seed(0)
    supernet = Supernet(space).train()
    cfg = SearchConfig(target_macs=sum(supernet.cost_model.bounds()) / 2, steps=10, warmup_steps=2)
    opts = make_optimizers(supernet, cfg)
    ce = nn.CrossEntropyLoss()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    window, nonfinite = Window(), NonFinite()
    with host_reads() as reads:
        for i in range(4):                    # two warm-up steps, then two with the cost term
            loss, _ce, _macs, logits = search_step(supernet, supernet, opts, x, y, i < 2, cfg, ce)
            nonfinite.add(i, loss)
            window.add(type("R", (), {"loss": loss, "logits": logits})(), y)
    assert reads == [], _where(reads)
    assert supernet.cost_model.bounds()[0] <= supernet.cost().detach() <= supernet.cost_model.bounds()[1]

    # the counter does see reads: logging reads the gates, the totals and the loss check
    with host_reads() as reads:
        states = [r.gate.state() for r in supernet.gate_refs]
        window.accuracy(), nonfinite.check()
    assert len(reads) >= len(states) and all(len(s) == 3 for s in states)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU")
def test_search_steps_do_not_synchronise_the_gpu(space):
    torch.manual_seed(0)
    supernet = Supernet(space).cuda().train()
    cfg = SearchConfig(target_macs=sum(supernet.cost_model.bounds()) / 2, steps=10, warmup_steps=1)
    opts = make_optimizers(supernet, cfg)
    ce = nn.CrossEntropyLoss()
    x, y = torch.randn(4, 3, 32, 32, device="cuda"), torch.randint(0, 10, (4,), device="cuda")
    search_step(supernet, supernet, opts, x, y, False, cfg, ce)       # first step: allocations, lazy init
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(3):
            search_step(supernet, supernet, opts, x, y, False, cfg, ce)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_whole_search_reads_the_device_only_when_it_logs(tmp_path, space):
    """Through the run loop (data, steps, logging, checkpoints): every read this project makes
    inside the loop, outside the data pipeline, comes from logging, the loss check or
    checkpointing."""
    cfg = SearchConfig(target_macs=int(sum(Supernet(space).cost_model.bounds()) / 2), steps=8, warmup_steps=2,
                       log_every=4, checkpoint_every=8, batch_size=8, train_size=64, val_size=16, workers=0,
                       data="digits")
    with host_reads() as reads:
        search(space, cfg, tmp_path / "run", progress=False)
    # the data pipeline works on the host by design (in DataLoader workers; here in-process)
    in_loop = [r for r in reads if "run_steps" in r[3] and "_next_data" not in r[3]]
    stepping = [r for r in in_loop if not (r[3] & LOGGING)]
    assert in_loop, "the loop logs, so it reads"
    assert stepping == [], _where(stepping)


@pytest.mark.parametrize("sandwich", [False, True])
def test_the_sandwich_rule_trains_switched_off_options_and_leaves_the_thresholds_as_they_were(space, sandwich):
    """--sandwich: after the warm-up, a step also trains the weights on the largest and on a
    random sub-network, so a LightNL block the thresholds switched off still learns; the
    thresholds' update is the selected path's alone (the same with and without)."""
    def one_step(sandwich):
        torch.manual_seed(0)
        supernet = Supernet(space).train()
        with torch.no_grad():
            supernet.net.lightnl_0.gates.insert.threshold.fill_(1e6)     # the thresholds switch it off
        for m in supernet.modules():     # no dropout: the extra passes draw other masks
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        cfg = SearchConfig(target_macs=sum(supernet.cost_model.bounds()) / 2, steps=10, warmup_steps=2,
                           sandwich=sandwich, weight_decay=0.0)
        opts = make_optimizers(supernet, cfg)
        # the block's batch norm (its depthwise weight also feeds the gate's statistic)
        before = supernet.net.lightnl_0.bn.weight.detach().clone()
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
        search_step(supernet, supernet, opts, x, y, False, cfg, nn.CrossEntropyLoss())
        assert supernet.decisions()["lightnl_0"]["insert"] is False
        moved = not torch.equal(before, supernet.net.lightnl_0.bn.weight.detach())
        return moved, [p.detach().clone() for p in supernet.arch_parameters()]

    moved, thresholds = one_step(sandwich)
    assert moved == sandwich
    if sandwich:
        _, alone = one_step(False)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(thresholds, alone))


def test_landing_candidates_keep_the_most_accurate_within_the_target(tmp_path, space):
    """SearchConfig.candidates: networks near the thresholds' choice, each within the landing
    tolerance, evaluated in the supernet; the most accurate is the one derived."""
    import json

    from autonl.backends.torch.search.landing import LANDING_TOLERANCE

    target = int(sum(Supernet(space).cost_model.bounds()) / 2)
    cfg = SearchConfig(target_macs=target, steps=6, warmup_steps=2, batch_size=8, train_size=64, holdout=32,
                       workers=0, data="digits", candidates=5)
    result = search(space, cfg, tmp_path / "run", progress=False)
    rows = result["candidates"]
    assert 2 <= len(rows) <= 5 and rows[0]["changed"] == [] and all(r["changed"] for r in rows[1:])
    assert all(abs(r["cost"] / target - 1) <= LANDING_TOLERANCE for r in rows)
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val_acc"] == max(r["val_acc"] for r in rows)
    # the decisions written are the chosen candidate's: its cost is the derived network's
    assert result["derived_macs"] == pytest.approx(chosen[0]["cost"], rel=1e-6)
    assert json.loads((tmp_path / "run" / "decisions.json").read_text())
