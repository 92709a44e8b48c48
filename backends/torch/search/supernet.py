"""The single-path supernet: relaxed IR nodes lowered to superkernels with threshold gates.

method.md section 3. Every binary decision is a :class:`Gate`: a statistic compared with a
trainable threshold, ``g = 1[u > 0]`` forward and the gradient of ``sigmoid(u / tau)``
backward (straight-through), so each forward pass computes exactly one sub-network's
value while thresholds get gradients. A gate that is *on* selects the dearer option
(kernel 5, expansion 6, keep the block, insert LightNL, ratio 1/4, stride 1); thresholds
start at 0, so every option starts on and the search starts from the largest child.

Statistics (our choice, documented): the *mean* squared weight of the part a decision
switches on, divided by its value at construction, so that one ``tau`` and one threshold
learning rate fit every gate (the spec's squared norm up to a per-gate constant):
  kernel   the ring of the largest depthwise kernel outside the smaller one;
  expand   the depthwise weights of the second half of the hidden channels;
  skip     the depthwise weights of the first half (a block whose weights die goes);
  insert   the LightNL depthwise weights;
  ratio, stride, and any choice that owns no weights: a learned importance scalar a, u = a - t.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from autonl.ir import AutonlError, Choice, Graph, Node, verify
from autonl.ir.node_cost import node_cost
from autonl.ir.choice import attr_combinations
from autonl.ir.ops import LIGHTNL_NORM_EPS, lightnl_channels, lightnl_order, mbconv_dw_pads, mbconv_widths, se_act

from autonl.ir.registry import Registry
from autonl.passes import SearchSpace

from ..lower import modules as M
from ..lower import Lowering, LoweringContext, lower_graph, torch_lowering


@dataclass(frozen=True)
class SupernetLowering:
    """How the supernet lowers a relaxed node of one op: the lowering, the attributes it can
    search, and how their options nest in one superkernel (for messages and docs)."""

    lower: Lowering
    searchable: tuple[str, ...]
    nesting: str


SUPERNET_LOWERINGS: Registry[SupernetLowering] = Registry("op the supernet can search",
                                                          plural="ops the supernet can search")


def supernet_op(name: str, searchable: tuple[str, ...], nesting: str) -> Callable[[Lowering], Lowering]:
    """Register the supernet lowering of relaxed ``name`` nodes and what it can search."""
    def deco(fn: Lowering) -> Lowering:
        SUPERNET_LOWERINGS.register(name, SupernetLowering(fn, searchable, nesting))
        return fn
    return deco


def ste(u: torch.Tensor, tau: float) -> torch.Tensor:
    """Hard step forward, sigmoid(u / tau) gradient backward."""
    soft = torch.sigmoid(u / tau)
    return (u > 0).to(u.dtype) + soft - soft.detach()


class Gate(nn.Module):
    """One binary decision: ``on`` selects option ``on_value``, off selects ``off_value``.

    Nothing here reads a tensor on the host: the statistic and the gate value stay on the
    device (no device-to-host synchronisation in a search step); :meth:`decision` and
    :meth:`state` read them, and are called when logging, checkpointing and deriving."""

    def __init__(self, on_value: Any, off_value: Any, importance: bool = False):
        super().__init__()
        self.on_value, self.off_value = on_value, off_value
        self.threshold = nn.Parameter(torch.zeros(()))
        self.importance = nn.Parameter(torch.ones(())) if importance else None
        self.register_buffer("scale", torch.ones(()))
        self.tau = 1.0
        self.forced: float | None = None
        self.value: torch.Tensor | None = None      # the gate of the latest forward pass
        self.statistic: torch.Tensor | None = None  # its statistic (detached, on the device)

    def calibrate(self, stat: torch.Tensor) -> None:
        self.scale.copy_(stat.detach().clamp_min(1e-12))

    def forward(self, stat: torch.Tensor | None = None) -> torch.Tensor:
        s = self.importance if self.importance is not None else stat / self.scale
        self.statistic = s.detach()
        if self.forced is not None:
            g = torch.full((), self.forced, device=self.threshold.device, dtype=self.threshold.dtype)
        else:
            g = ste(s - self.threshold, self.tau)
        self.value = g
        return g

    def is_on(self) -> bool:
        """The hard decision of the latest forward pass (reads the device)."""
        if self.forced is not None:
            return self.forced >= 0.5
        if self.statistic is None:
            return True      # before any forward pass: every option starts on
        return bool(self.statistic > self.threshold.detach())

    def decision(self) -> Any:
        return self.on_value if self.is_on() else self.off_value

    def state(self) -> list:
        """[statistic, threshold, on] for the trace (reads the device)."""
        stat = 0.0 if self.statistic is None else float(self.statistic)
        return [round(stat, 6), round(float(self.threshold.detach()), 6), int(self.is_on())]


def _binary(node: Node, attr: str, on_is_larger: bool = True) -> tuple[Any, Any]:
    options = node.attrs[attr].options
    if len(options) != 2:
        raise AutonlError(f"node %{node.name}: the single-path supernet gates binary choices; "
                          f"{attr} has {len(options)} options {list(options)}")
    lo, hi = sorted(options)
    return (hi, lo) if on_is_larger else (lo, hi)


class SuperMBConv(nn.Module):
    """An MBConv superkernel: the largest kernel and expansion, gated down (section 3)."""

    def __init__(self, node: Node, cin: int, a: dict, node_in_hw: tuple[int, int]):
        super().__init__()
        ks = a["k"].options if "k" in node.choices() else (a["k"],)
        es = a["e"].options if "e" in node.choices() else (a["e"],)
        self.kmin, self.kmax = min(ks), max(ks)
        self.hmin, self.hmax = mbconv_widths(cin, min(es), 0)[0], mbconv_widths(cin, max(es), 0)[0]
        self.s, self.act = a["s"], M.ACTIVATIONS[a["act"]]
        # TF "same" padding of the largest kernel: a smaller kernel centred in it (the kernel
        # gate's ring) sees exactly its own "same" padding, as the derived block computes.
        top, left, bottom, right = mbconv_dw_pads(*node_in_hw, self.kmax, self.s, a["pad"])
        self.dw_pads = None if (top, left, bottom, right) == (self.kmax // 2,) * 4 else (left, right, top, bottom)
        hidden = self.hmax
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False) if max(es) != 1 else None
        self.expand_bn = M.batch_norm(hidden, a["eps"], a["momentum"]) if max(es) != 1 else None
        self.dw = nn.Conv2d(hidden, hidden, self.kmax, self.s, padding=self.kmax // 2, groups=hidden, bias=False)
        self.dw_bn = M.batch_norm(hidden, a["eps"], a["momentum"])
        reduce = mbconv_widths(cin, max(es), a["se"])[1]
        self.se = M.SqueezeExcite(hidden, reduce, se_act(a), a["se_gate"]) if reduce else None
        self.project = nn.Conv2d(hidden, a["out"], 1, bias=False)
        self.project_bn = M.batch_norm(a["out"], a["eps"], a["momentum"])
        self.gates = nn.ModuleDict()
        if "k" in node.choices():
            self.gates["k"] = Gate(*_binary(node, "k"))
            ring = torch.ones(self.kmax, self.kmax)
            lo = (self.kmax - self.kmin) // 2
            ring[lo:lo + self.kmin, lo:lo + self.kmin] = 0
            self.register_buffer("ring", ring)
        if "e" in node.choices():
            self.gates["e"] = Gate(*_binary(node, "e"))
        if "skip" in node.choices():
            self.gates["skip"] = Gate(False, True)      # on = keep the block
        with torch.no_grad():
            w, _ = self._kernel(calibrating=True)
            if "e" in self.gates:
                self.gates["e"].calibrate(w[self.hmin:].pow(2).mean())
            if "skip" in self.gates:
                self.gates["skip"].calibrate(w[:self.hmin].pow(2).mean())

    def _kernel(self, calibrating: bool = False):
        w = self.dw.weight
        if "k" not in self.gates:
            return w, None
        ring = w * self.ring
        if calibrating:
            self.gates["k"].calibrate(ring.pow(2).mean())
            return w, None
        g = self.gates["k"](ring.pow(2).mean())
        return w - ring + g * ring, g

    def forward(self, x: torch.Tensor):
        w, _ = self._kernel()
        keep = self.gates["skip"](w[:self.hmin].pow(2).mean()) if "skip" in self.gates else None
        h = x
        if self.expand is not None:
            h = self.act(self.expand_bn(self.expand(h)))
        if self.dw_pads is None:
            h = F.conv2d(h, w, None, self.s, self.kmax // 2, 1, self.hmax)
        else:
            h = F.conv2d(F.pad(h, self.dw_pads), w, None, self.s, 0, 1, self.hmax)
        h = self.act(self.dw_bn(h))
        # The expansion gate masks the hidden channels where they are read, in the weights of
        # the projection (and of SE's reduce conv), not in the activations: the same function
        # of the gate, exactly, without two passes over the block's largest tensor.
        mask = None
        if "e" in self.gates:
            g = self.gates["e"](w[self.hmin:].pow(2).mean())
            mask = torch.cat([g.new_ones(self.hmin), g.expand(self.hmax - self.hmin)]).view(1, -1, 1, 1)
        if self.se is not None:
            se = self.se
            reduce_w = se.reduce.weight if mask is None else se.reduce.weight * mask
            pooled = se.act(F.conv2d(h.mean((2, 3), keepdim=True), reduce_w, se.reduce.bias))
            h = h * se.gate(se.expand(pooled))
        project_w = self.project.weight if mask is None else self.project.weight * mask
        y = self.project_bn(F.conv2d(h, project_w))
        return (y, keep) if keep is not None else y


class SuperLightNL(nn.Module):
    """LightNL with insert, ratio and stride gates; the 1/8 product is computed once and the
    next 1/8 of channels added gated (ratio 1/4), in the order cheaper for the largest option."""

    def __init__(self, node: Node, t, a: dict):
        super().__init__()
        c = t.shape[1]
        rs = a["r"].options if "r" in node.choices() else (a["r"],)
        ss = a["s"].options if "s" in node.choices() else (a["s"],)
        self.strides = sorted(ss)
        self.rc_small, self.rc_big = lightnl_channels(c, min(rs)), lightnl_channels(c, max(rs))
        self.order = lightnl_order(t, max(rs), min(ss))
        self.norm = a["norm"]
        if isinstance(self.norm, Choice):
            raise AutonlError(f"node %{node.name}: LightNL's norm is a property of the block, not a search choice")
        self.mm1, self.mm2 = M.MatMul(), M.MatMul()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn = M.batch_norm(c, a["eps"], a["momentum"], zero_init=True)
        if len(self.strides) > 2:
            raise AutonlError(f"node %{node.name}: the single-path supernet gates binary choices; s has "
                              f"{len(self.strides)} options {self.strides}")
        if len(self.strides) == 2:
            self.register_buffer("kept_keys", self._kept_keys(*t.shape[2:], *self.strides), persistent=False)
        self.gates = nn.ModuleDict()
        if "insert" in node.choices():
            self.gates["insert"] = Gate(True, False)
            with torch.no_grad():
                self.gates["insert"].calibrate(self.dw.weight.pow(2).mean())
        if "r" in node.choices():
            self.gates["r"] = Gate(*_binary(node, "r"), importance=True)
        if "s" in node.choices():
            self.gates["s"] = Gate(*_binary(node, "s", on_is_larger=False), importance=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One attention product of the largest option's size, whatever the gates select: the
        ratio gate scales the second part of the query/key channels, and the stride gate the
        keys and values that stride 1 reads and stride 2 skips (stride 2's are every other row
        and column, a subset of stride 1's), so that with hard gates the value is exactly the
        selected option's, and no option is computed beside it."""
        n, c, h, w = x.shape
        g_r = self.gates["r"]() if "r" in self.gates else None
        s = self.strides[0]
        q, kt, v = M.lightnl_operands(x, self.rc_big, s)
        a, b = self.rc_small, self.rc_big
        if self.norm == "l2":   # unit length over the selected channels: gated ones count g_r times
            q = self._unit(q, 1, a, b, g_r)
            kt = self._unit(kt, 2, a, b, g_r)
        if len(self.strides) > 1:
            g_s = self.gates["s"]()                                 # on = the smaller stride
            kt = kt * torch.where(self.kept_keys, torch.ones_like(g_s), g_s)
        if self.order == "key_value_first":
            kv = self.mm1(v, kt)                                   # [N, C, rc_big], both parts at once
            y = self.mm2(kv[:, :, :a], q[:, :a])
            if g_r is not None:
                y = y + g_r * self.mm2(kv[:, :, a:b], q[:, a:b])
        else:
            aff = self.mm1(kt[:, :, :a], q[:, :a])                 # [N, h'w', HW]
            if g_r is not None:
                aff = aff + g_r * self.mm1(kt[:, :, a:b], q[:, a:b])
            y = self.mm2(v, aff)
        y = y * (1.0 / (h * w))
        if "insert" in self.gates:   # g * BN(.) as BN with g * (gamma, beta): no pass over the output
            return x + gated_batch_norm(self.bn, self.dw(y.reshape(n, c, h, w)),
                                        self.gates["insert"](self.dw.weight.pow(2).mean()))
        return x + self.bn(self.dw(y.reshape(n, c, h, w)))

    @staticmethod
    def _unit(t: torch.Tensor, dim: int, a: int, b: int, g: torch.Tensor | None) -> torch.Tensor:
        """``t`` over the norm of its first ``a`` channels plus ``g`` times the squares of
        channels ``a:b`` (the ratio gate's part): with a hard gate exactly the chosen ratio's
        unit length; ``t``'s channels beyond those the gate selects are scaled but unused."""
        sq = t.pow(2)
        n2 = sq.narrow(dim, 0, a).sum(dim, keepdim=True)
        if g is not None and b > a:
            n2 = n2 + g * sq.narrow(dim, a, b - a).sum(dim, keepdim=True)
        return t * torch.rsqrt(n2 + LIGHTNL_NORM_EPS)

    @staticmethod
    def _kept_keys(h: int, w: int, small: int, big: int) -> torch.Tensor:
        """[1, h'w', 1] over the smaller stride's key positions: True where the larger stride
        also reads the position."""
        if big % small:
            raise AutonlError(f"LightNL strides {small} and {big}: the larger must be a multiple of the smaller")
        rows = torch.arange(0, h, small) % big == 0
        cols = torch.arange(0, w, small) % big == 0
        return (rows[:, None] & cols[None, :]).reshape(1, -1, 1)


def gated_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``g * bn(x)``, computed as batch norm with affine weights ``g * gamma`` and ``g * beta``
    (the same value and running statistics as ``bn``, which it updates as ``bn`` would)."""
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    use_batch = bn.training or bn.running_mean is None
    momentum = bn.momentum if bn.momentum is not None else (   # None: a cumulative average, as nn.BatchNorm
        1.0 / float(bn.num_batches_tracked) if bn.training and bn.num_batches_tracked is not None else 0.0)
    return F.batch_norm(x, bn.running_mean if not bn.training or bn.track_running_stats else None,
                        bn.running_var if not bn.training or bn.track_running_stats else None,
                        bn.weight * g, bn.bias * g, use_batch, momentum, bn.eps)


@dataclass
class GateRef:
    node: str
    attr: str
    gate: Gate


@supernet_op("mbconv", ("k", "e", "skip"),
             "the smaller kernel is the centre of the larger; the smaller expansion the first hidden "
             "channels of the larger; skip gates the whole branch")
def _super_mbconv(ctx: LoweringContext, node: Node, args: list) -> fx.Node:
    a = ctx.attrs(node)
    if "e" in node.choices() and 1 in node.attrs["e"].options:
        raise AutonlError(f"node %{node.name}: expansion 1 has no expansion conv, so it cannot share a "
                          "superkernel with larger expansions; use options above 1")
    t = ctx.in_type(node)
    out = ctx.module(node, SuperMBConv(node, t.shape[1], a, tuple(t.shape[2:])), args)
    if "skip" in node.choices():  # the module returns (output, keep gate); the residual add uses both
        g = ctx.fx_graph
        ctx.keep_gates[node.name] = g.create_node("call_function", operator.getitem, (out, 1), name=f"{out.name}_keep")
        return g.create_node("call_function", operator.getitem, (out, 0), name=f"{out.name}_out")
    return out


@supernet_op("lightnl", ("insert", "r", "s"),
             "the smaller ratio's query/key channels are the first of the larger's; stride gates "
             "between the two key/value samplings; insert gates the block")
def _super_lightnl(ctx: LoweringContext, node: Node, args: list) -> fx.Node:
    a = ctx.attrs(node)
    if a["insert"] is False:
        return args[0]
    return ctx.module(node, SuperLightNL(node, ctx.in_type(node), a), args)


class SupernetContext(LoweringContext):
    def __init__(self, graph: Graph):
        super().__init__(graph)
        self.keep_gates: dict[str, fx.Node] = {}
        self.block_of: dict[str, str] = {}      # residual add -> skippable mbconv it closes


def _gated_add(ctx: SupernetContext, node: Node, args: list) -> fx.Node:
    block = ctx.block_of[node.name]
    x = ctx.graph.nodes[block].inputs[0]
    branch, shortcut = (args[0], args[1]) if node.inputs[1] == x else (args[1], args[0])
    gated = ctx.fx_graph.create_node("call_function", operator.mul, (ctx.keep_gates[block], branch),
                                     name=f"{ctx.keep_gates[block].name}_branch")
    return ctx.function(node, operator.add, [shortcut, gated])


class Supernet(nn.Module):
    """A relaxed graph as one single-path network, plus its gates and differentiable cost."""

    def __init__(self, graph: Graph, tau: float = 1.0, cost_graph: Graph | None = None, latency=None):
        """``cost_graph``: the same graph at the resolution the MAC target refers to (default:
        ``graph`` itself), e.g. search at 32x32 while counting MACs at 224x224. ``latency``: a
        :class:`~autonl.backends.latency.LatencyTable` for ``cost_graph``: the cost is then its
        predicted milliseconds instead of MACs."""
        super().__init__()
        from autonl.passes.derive import residual_add

        verify(graph)
        self.graph = graph
        ctx = SupernetContext(graph)
        for node in graph:
            if node.op == "mbconv" and "skip" in node.choices():
                add = residual_add(graph, node.name)
                if add is None:
                    raise AutonlError(f"node %{node.name}: skip is a choice but no residual add closes the block")
                ctx.block_of[add] = node.name

        def pick(node: Node):
            if node.name in ctx.block_of:
                return _gated_add
            if node.relaxed:
                spec = SUPERNET_LOWERINGS.find(node.op)
                if spec is None:
                    raise AutonlError(f"node %{node.name}: the supernet cannot search {node.op} nodes; "
                                      f"searchable ops: {', '.join(SUPERNET_LOWERINGS.names())}")
                bad = sorted(set(node.choices()) - set(spec.searchable))
                if bad:
                    raise AutonlError(f"node %{node.name}: the supernet cannot search {node.op} attribute(s) "
                                      f"{bad}; searchable: {', '.join(spec.searchable)}")
                return spec.lower
            return torch_lowering(node.op)

        self.net = lower_graph(graph, ctx, pick)
        self.gate_refs: list[GateRef] = []
        for node in graph:
            if node.relaxed and _has(self.net, node.name):  # an absent LightNL has no module
                for attr, gate in self.net.get_submodule(node.name).gates.items():
                    gate.tau = tau
                    self.gate_refs.append(GateRef(node.name, attr, gate))
        if cost_graph is not None and set(cost_graph.nodes) != set(graph.nodes):
            raise AutonlError("the cost graph must have the same nodes as the searched graph")
        gates = {(r.node, r.attr): r.gate for r in self.gate_refs}
        if latency is not None:
            latency.check_fits(cost_graph or graph)
            self.cost_model = SupernetCost(cost_graph or graph, gates, cost=latency.entry, fixed=latency.fixed_ms)
        else:
            self.cost_model = SupernetCost(cost_graph or graph, gates)
        self.cost_unit = "ms" if latency is not None else "MACs"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- parameters ------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for r in self.gate_refs for p in (r.gate.threshold, r.gate.importance) if p is not None]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # -- decisions -------------------------------------------------------------------------
    def decisions(self) -> dict[str, dict[str, Any]]:
        """The current hard decision of every gate (run a forward pass first)."""
        # a choice without a gate (the ratio of an absent LightNL, which derive removes) still
        # needs a decision: the space's default
        out = SearchSpace(self.graph).default()
        for r in self.gate_refs:
            out[r.node][r.attr] = r.gate.decision()
        return out

    def force(self, decisions: dict[str, dict[str, Any]] | None) -> None:
        """Pin every gate to a decision (None: let the thresholds decide again)."""
        for r in self.gate_refs:
            if decisions is None:
                r.gate.forced = None
            else:
                value = decisions[r.node][r.attr]
                r.gate.forced = 1.0 if value == r.gate.on_value else 0.0

    def force_all_on(self) -> None:
        for r in self.gate_refs:
            r.gate.forced = 1.0

    def force_random(self, drop: float) -> None:
        """Each gate off with probability ``drop``, else on: a random sub-network, drawn from
        torch's global generator on the host (the same on every rank of a seeded run, and
        restored with a checkpoint's RNG state)."""
        off = (torch.rand(len(self.gate_refs)) < drop).tolist()
        for r, is_off in zip(self.gate_refs, off):
            r.gate.forced = 0.0 if is_off else 1.0

    def cost_of(self, decisions: dict[str, dict[str, Any]]) -> float:
        """The cost of the sub-network ``decisions`` select (no forward pass: the cost model
        reads the gates' values, set here to the decisions and put back after)."""
        saved = [r.gate.value for r in self.gate_refs]
        device = self.cost_model.macs.device
        try:
            for r in self.gate_refs:
                on = decisions[r.node][r.attr] == r.gate.on_value
                r.gate.value = torch.tensor(1.0 if on else 0.0, device=device)
            return float(self.cost_model())
        finally:
            for r, v in zip(self.gate_refs, saved):
                r.gate.value = v

    def cost(self) -> torch.Tensor:
        """MACs (or predicted milliseconds, with a latency table) of the sub-network the latest
        forward pass selected, differentiable in the gates."""
        return self.cost_model()


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


class SupernetCost(nn.Module):
    """C(g) = sum over relaxed nodes of sum over their option combinations of
    cost(combination) * prod(g or 1 - g), times the keep gate of the block a LightNL sits in,
    plus the fixed cost of discrete nodes. Option costs come from the IR cost model (MACs),
    or from ``cost(node, combination)`` with ``fixed`` (a latency table's entries and fixed
    part); with hard gates the value is exactly the cost of the selected sub-network.

    Evaluated as a handful of batched tensor ops: every relaxed node is a row with up to
    ``K`` gates and ``P`` combinations (padding: a gate fixed at 1, a combination costing 0).
    """

    def __init__(self, graph: Graph, gates: dict[tuple[str, str], Gate],
                 cost: Callable[[Node, dict], float] | None = None, fixed: float | None = None):
        super().__init__()
        self.gate_list = list(gates.values())
        index = {key: i for i, key in enumerate(gates)}
        one = len(self.gate_list)                     # the index of a constant 1 appended at run time
        self.fixed = fixed if cost is not None else 0
        rows = []
        for node in graph:
            if not node.relaxed:
                if cost is None:
                    self.fixed += node_cost(graph, node).macs
                continue
            attrs = [a for a in node.choices() if (node.name, a) in index]
            combos = {}
            for combo in attr_combinations(node.attrs):
                # choices without a gate (an absent LightNL's ratio) do not change the cost
                key = tuple(combo[a] == gates[(node.name, a)].on_value for a in attrs)
                combos.setdefault(key, cost(node, combo) if cost is not None else node_cost(graph, node, combo).macs)
            block = one
            if node.op == "lightnl":
                src = graph.nodes.get(node.inputs[0])
                if src is not None and src.op == "mbconv" and (src.name, "skip") in index:
                    block = index[(src.name, "skip")]
            rows.append(([index[(node.name, a)] for a in attrs], combos, block))
        k = max((len(r[0]) for r in rows), default=1) or 1
        p = max((len(r[1]) for r in rows), default=1)
        idx = torch.full((len(rows), k), one, dtype=torch.long)
        on = torch.ones(len(rows), p, k, dtype=torch.bool)
        macs = torch.zeros(len(rows), p, dtype=torch.float64)
        keep = torch.full((len(rows),), one, dtype=torch.long)
        for r, (gate_idx, combos, block) in enumerate(rows):
            idx[r, :len(gate_idx)] = torch.tensor(gate_idx, dtype=torch.long)
            for c, (key, value) in enumerate(combos.items()):
                on[r, c, :len(key)] = torch.tensor(key, dtype=torch.bool)
                macs[r, c] = value
            keep[r] = block
        self.register_buffer("idx", idx, persistent=False)
        self.register_buffer("on", on, persistent=False)
        self.register_buffer("macs", macs, persistent=False)
        self.register_buffer("keep", keep, persistent=False)
        self.lo = self.fixed + sum(min(c.values()) for _, c, _ in rows)
        self.hi = self.fixed + sum(max(c.values()) for _, c, _ in rows)
        if cost is None:
            self.lo, self.hi = int(self.lo), int(self.hi)

    def forward(self) -> torch.Tensor:
        device = self.macs.device
        values = [g.value if g.value is not None else torch.ones((), device=device) for g in self.gate_list]
        gv = torch.stack([*(v.to(device, torch.float64) for v in values), torch.ones((), device=device,
                                                                                  dtype=torch.float64)])
        g = gv[self.idx].unsqueeze(1)                               # [rows, 1, K]
        weight = torch.where(self.on, g, 1 - g).prod(-1)            # [rows, P]
        per_node = (weight * self.macs).sum(-1) * gv[self.keep]    # [rows]
        return (per_node.sum() + self.fixed).float()

    def bounds(self) -> tuple[float, float]:
        """Cost of the cheapest and the dearest reachable sub-network."""
        return self.lo, self.hi


def inherit_weights(supernet: Supernet, module: nn.Module) -> dict[str, torch.Tensor]:
    """The supernet's weights cut to fit ``module`` (a derived network lowered by ``to_torch``).

    Every tensor keeps its leading entries along each dimension (the first half of the hidden
    channels, the first input channels) except the kernel dimensions of a convolution, which
    keep their centre: a 3x3 kernel is the centre of the 5x5 superkernel (method.md section 3).
    """
    source = supernet.net.state_dict()
    target = module.state_dict()
    out = {}
    for key, want in target.items():
        if key not in source:
            raise AutonlError(f"the derived network has '{key}', which the supernet lacks")
        have = source[key]
        if have.dim() != want.dim():
            raise AutonlError(f"'{key}' has {have.dim()} dims in the supernet but {want.dim()} in the derived network")
        index = []
        for d, (h, w) in enumerate(zip(have.shape, want.shape)):
            if w > h:
                raise AutonlError(f"'{key}' is larger in the derived network ({tuple(want.shape)}) than in the "
                                  f"supernet ({tuple(have.shape)})")
            centre = have.dim() == 4 and d >= 2
            start = (h - w) // 2 if centre else 0
            index.append(slice(start, start + w))
        out[key] = have[tuple(index)].clone()
    return out
