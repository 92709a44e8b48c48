"""The application layer (``autonl.workflows``): what a command does from a user's SOURCE
to its files, built on the backends (torch, onnx, tvm, latency): ``autonl run``
(:mod:`.run`, its report :mod:`.report`), compiling with checks on real images
(:mod:`.checks`), and the one resolver of a SOURCE (:mod:`.sources`)."""
