"""Op definitions: importing this package registers every built-in op."""
from . import composites, primitives  # noqa: F401  (registration side effect)
from .composites import ACTIVATIONS, GATES, mbconv_dw_pads, same_pads, se_act
from .composites import LIGHTNL_NORM_EPS, LIGHTNL_NORMS, conv_out_size, lightnl_channels, lightnl_matmul_macs, lightnl_order, mbconv_widths
from .primitives import conv_pads
from .op_registry import OPS, REQUIRED, AttrSpec, Cost, OpDef, all_ops, get_op, register_op

__all__ = ["OPS", "REQUIRED", "AttrSpec", "Cost", "OpDef", "all_ops", "get_op", "register_op",
           "LIGHTNL_NORMS", "LIGHTNL_NORM_EPS", "conv_out_size", "lightnl_channels", "lightnl_matmul_macs", "lightnl_order", "mbconv_widths",
           "ACTIVATIONS", "GATES", "se_act", "conv_pads", "mbconv_dw_pads", "same_pads"]
