"""``fold-bn``: fold inference-mode batch norm into the convolution before it.

For a ``conv2d`` whose only user is a ``batch_norm``, with scale ``g / sqrt(var + eps)``
per output channel::

    W' = W * scale          b' = (b - mean) * scale + beta

The conv gets ``bias=true`` and the BN node goes; uses of the BN read the conv. The rewrite
needs the model's weights (it runs on an :class:`autonl.ir.Model`) and is for deployment
graphs: the folded graph computes what the original computes in eval mode.
Arithmetic is in float64, stored back in the weights' own dtype.
"""
from __future__ import annotations

import numpy as np

from autonl.ir import AutonlError, Graph
from autonl.ir.ops import get_op

from .base import Pass, PassResult, Weights
from .pass_registry import register_pass


@register_pass("fold-bn")
class FoldBatchNorm(Pass):
    """Fold batch_norm into the conv2d before it (needs the model's weights; for deployment)."""

    uses_weights = True

    def pairs(self, graph: Graph) -> list[tuple[str, str]]:
        out = []
        for bn in graph:
            if bn.op != "batch_norm" or bn.inputs[0] not in graph.nodes:
                continue
            conv = graph.nodes[bn.inputs[0]]
            if conv.op == "conv2d" and len(graph.users(conv.name)) == 1 and conv.name not in graph.outputs:
                out.append((conv.name, bn.name))
        return out

    def requires(self, graph: Graph, weights: Weights) -> None:
        if graph.relaxed:
            raise AutonlError(f"graph '{graph.name}' still has choices; derive it first")
        pairs = self.pairs(graph)
        if pairs and not weights:
            raise AutonlError(f"graph '{graph.name}' has no bound weights; fold-bn rewrites weights, so it "
                              f"runs on a model (autonl compile, or PassManager(...)(Model(graph, weights)))")
        for conv, bn in pairs:
            needed = [f"{conv}.weight"] + [f"{bn}.{t}" for t in ("weight", "bias", "running_mean", "running_var")]
            missing = [k for k in needed if k not in weights]
            if missing:
                raise AutonlError(f"graph '{graph.name}': no bound weight {missing[0]} for folding %{bn} into %{conv}")

    def call(self, graph: Graph, weights: Weights) -> PassResult:
        pairs = self.pairs(graph)
        p = dict(weights)
        for conv_name, bn_name in pairs:
            conv, bn = graph.nodes[conv_name], graph.nodes[bn_name]
            eps = get_op("batch_norm").full_attrs(bn.attrs)["eps"]
            w = p[f"{conv_name}.weight"]
            gamma, beta, mean, var = (p.pop(f"{bn_name}.{t}").astype(np.float64)
                                      for t in ("weight", "bias", "running_mean", "running_var"))
            p.pop(f"{bn_name}.num_batches_tracked", None)
            scale = gamma / np.sqrt(var + eps)
            bias = p.get(f"{conv_name}.bias")
            bias = np.zeros_like(mean) if bias is None else bias.astype(np.float64)
            p[f"{conv_name}.weight"] = (w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
            p[f"{conv_name}.bias"] = ((bias - mean) * scale + beta).astype(w.dtype)
            conv.attrs["bias"] = True
            graph.replace_all_uses_with(bn_name, conv_name)
            graph.erase_node(bn_name)
        return PassResult(graph, bool(pairs), weights=p)
