"""Lower a discrete IR graph to a ``torch.fx.GraphModule`` whose ``.code`` reads like
hand-written PyTorch: one call per IR node, modules and variables named after the nodes.

Each op's lowering is registered with :func:`torch_op`; an op without one is an error that
names it. Parameters live in submodules at the node's path (``mbconv_3``, ``mbconv_3.expand``),
so the state dict of a graph and of its lowered form (``lower-composites``) are the same.
"""
from __future__ import annotations

import operator
import re
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from autonl.ir import AutonlError, Graph, Model, Node, verify
from autonl.ir.ops import conv_pads, get_op, lightnl_order, mbconv_dw_pads, se_act
from autonl.ir.registry import Registry

from . import modules as M

Lowering = Callable[["LoweringContext", Node, list], fx.Node]
TORCH_LOWERINGS: Registry[Lowering] = Registry("op for the torch backend", plural="ops with a torch lowering")


def torch_op(name: str) -> Callable[[Lowering], Lowering]:
    """Register the torch lowering of op ``name``."""
    return TORCH_LOWERINGS.decorator(name)


def var_name(ir_name: str) -> str:
    """A Python identifier for an IR value name (``mbconv_3.expand`` -> ``mbconv_3_expand``)."""
    return re.sub(r"\W", "_", ir_name)


class LoweringContext:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.root = nn.Module()
        self.fx_graph = fx.Graph()

    def attrs(self, node: Node) -> dict:
        return get_op(node.op).full_attrs(node.attrs)

    def in_type(self, node: Node, i: int = 0):
        return self.graph.type_of(node.inputs[i])

    def module(self, node: Node, module: nn.Module, args: list) -> fx.Node:
        """Install ``module`` at the node's path and call it."""
        parent = self.root
        *prefix, leaf = node.name.split(".")
        for part in prefix:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, module)
        return self.fx_graph.create_node("call_module", node.name, tuple(args), name=var_name(node.name))

    def function(self, node: Node, fn, args: list, kwargs: dict | None = None, method: bool = False) -> fx.Node:
        return self.fx_graph.create_node("call_method" if method else "call_function", fn, tuple(args),
                                         kwargs or {}, name=var_name(node.name))


def to_torch(graph: Graph) -> fx.GraphModule:
    """The graph as a GraphModule (train mode, freshly initialised weights)."""
    verify(graph, allow_relaxed=False)
    return lower_graph(graph, LoweringContext(graph), lambda node: TORCH_LOWERINGS.get(node.op))


def to_torch_with_weights(model: Model) -> fx.GraphModule:
    """The model's graph as a GraphModule in eval mode, with the model's weights loaded
    strictly: every tensor of the module (BN's batch counters may be left out), nothing else,
    each with the module's shape and dtype; a misfit is one line naming the tensor."""
    module = to_torch(model.graph)
    expected = module.state_dict()
    state = {k: torch.from_numpy(v) for k, v in model.weights.items()}
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v.clone()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    if missing or unexpected:
        parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(unexpected)}"]
                                                                   if unexpected else [])
        raise AutonlError(f"the weights do not fit graph '{model.graph.name}': {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape) or state[k].dtype != v.dtype:
            raise AutonlError(f"the weights do not fit graph '{model.graph.name}': {k} is "
                              f"{str(state[k].dtype).removeprefix('torch.')}{list(state[k].shape)}, the graph's "
                              f"module has {str(v.dtype).removeprefix('torch.')}{list(v.shape)}")
    module.load_state_dict(state, strict=True)
    return module.eval()


def lower_graph(graph: Graph, ctx: LoweringContext, pick: Callable[[Node], Lowering]) -> fx.GraphModule:
    """Emit every node with the lowering ``pick`` returns for it (the supernet picks its own
    for relaxed nodes) and wrap the result as a GraphModule."""
    env: dict[str, fx.Node] = {}
    for name in graph.inputs:
        env[name] = ctx.fx_graph.placeholder(var_name(name))
    for name in graph.topological_order():
        node = graph.nodes[name]
        env[name] = pick(node)(ctx, node, [env[v] for v in node.inputs])
    outs = [env[v] for v in graph.outputs]
    ctx.fx_graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    return fx.GraphModule(ctx.root, ctx.fx_graph, class_name=var_name(graph.name))


def torch_lowering(op: str) -> Lowering:
    return TORCH_LOWERINGS.get(op)


# -- primitives ----------------------------------------------------------------------------
@torch_op("conv2d")
def _conv2d(ctx, node, args):
    a, cin = ctx.attrs(node), ctx.in_type(node).shape[1]
    conv = M.conv2d(cin, a["out"], a["k"], a["s"], conv_pads(a), groups=a["groups"], bias=a["bias"])
    return ctx.module(node, conv, args)


@torch_op("batch_norm")
def _batch_norm(ctx, node, args):
    a, t = ctx.attrs(node), ctx.in_type(node)
    return ctx.module(node, M.batch_norm(t.shape[1], a["eps"], a["momentum"], a["zero_init"], t.rank), args)


for _name, _fn in (("relu", F.relu), ("relu6", F.relu6), ("silu", F.silu), ("sigmoid", torch.sigmoid),
                   ("hardswish", F.hardswish), ("hardsigmoid", F.hardsigmoid)):
    torch_op(_name)(lambda ctx, node, args, fn=_fn: ctx.function(node, fn, args))

torch_op("add")(lambda ctx, node, args: ctx.function(node, operator.add, args))
torch_op("mul")(lambda ctx, node, args: ctx.function(node, operator.mul, args))
torch_op("matmul")(lambda ctx, node, args: ctx.module(node, M.MatMul(), args))


@torch_op("scale")
def _scale(ctx, node, args):
    return ctx.function(node, operator.mul, [args[0], float(ctx.attrs(node)["factor"])])


@torch_op("l2_normalize")
def _l2_normalize(ctx, node, args):
    a = ctx.attrs(node)
    return ctx.function(node, M.l2_normalize, [args[0], a["axis"], a["eps"]])


@torch_op("global_avg_pool")
def _pool(ctx, node, args):
    return ctx.function(node, torch.mean, args, {"dim": (2, 3), "keepdim": ctx.attrs(node)["keepdim"]})


@torch_op("flatten")
def _flatten(ctx, node, args):
    return ctx.function(node, torch.flatten, [args[0], ctx.attrs(node)["start"]])


@torch_op("reshape")
def _reshape(ctx, node, args):
    return ctx.function(node, "reshape", [args[0], *ctx.attrs(node)["shape"]], method=True)


@torch_op("permute")
def _permute(ctx, node, args):
    return ctx.function(node, "permute", [args[0], *ctx.attrs(node)["dims"]], method=True)


@torch_op("linear")
def _linear(ctx, node, args):
    a = ctx.attrs(node)
    return ctx.module(node, nn.Linear(ctx.in_type(node).shape[-1], a["out"], bias=a["bias"]), args)


@torch_op("dropout")
def _dropout(ctx, node, args):
    return ctx.module(node, nn.Dropout(ctx.attrs(node)["p"]), args)


@torch_op("slice")
def _slice(ctx, node, args):
    a, rank = ctx.attrs(node), ctx.in_type(node).rank
    end = None if a["end"] >= 2**62 else a["end"]
    index = tuple([slice(None)] * a["axis"] + [slice(a["start"] or None, end, a["step"] if a["step"] != 1 else None)])
    del rank
    return ctx.function(node, operator.getitem, [args[0], index])


# -- composites ----------------------------------------------------------------------------
@torch_op("mbconv")
def _mbconv(ctx, node, args):
    a = ctx.attrs(node)
    if a["skip"]:
        raise AutonlError(f"node %{node.name}: a skipped mbconv has no torch form; derive the graph first")
    t = ctx.in_type(node)
    mod = M.MBConv(t.shape[1], a["out"], a["e"], a["k"], a["s"], a["se"], a["act"], a["eps"], a["momentum"],
                   se_act(a), a["se_gate"], mbconv_dw_pads(*t.shape[2:], a["k"], a["s"], a["pad"]))
    return ctx.module(node, mod, args)


@torch_op("se")
def _se(ctx, node, args):
    a = ctx.attrs(node)
    return ctx.module(node, M.SqueezeExcite(ctx.in_type(node).shape[1], a["reduce"], a["act"], a["gate"]), args)


@torch_op("lightnl")
def _lightnl(ctx, node, args):
    a, t = ctx.attrs(node), ctx.in_type(node)
    if not a["insert"]:  # an absent block is the identity: no module, no call
        return args[0]
    mod = M.LightNL(t.shape[1], a["r"], a["s"], lightnl_order(t, a["r"], a["s"]), a["eps"], a["momentum"], a["norm"])
    return ctx.module(node, mod, args)


@torch_op("non_local")
def _non_local(ctx, node, args):
    a = ctx.attrs(node)
    return ctx.module(node, M.NonLocal(ctx.in_type(node).shape[1], a["ratio"], a["eps"], a["momentum"]), args)
