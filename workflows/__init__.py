"""The application layer (``autonl.workflows``): what a command does from a user's SOURCE
to its files, built on the backends (torch, onnx, tvm, latency): ``autonl run``
(:mod:`.run`, its report :mod:`.report`), ``autonl compile`` with its checks on real images
(:mod:`.compile`), ``autonl eval`` (:mod:`.evaluate`), and a SOURCE with its weights
(:mod:`.sources`, over the one resolver, :mod:`autonl.passes.sources`)."""
