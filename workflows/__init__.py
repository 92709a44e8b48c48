"""The application layer (``autonl.workflows``): what a command does from a user's SOURCE
to its files, built on the backends (torch, onnx, tvm, latency): ``autonl run``
(:mod:`.run`, its report :mod:`.report`), ``autonl train``, ``search`` and ``derive``
(:mod:`.train`), ``autonl compile`` with its checks on real images (:mod:`.compile`),
``autonl eval`` (:mod:`.evaluate`), the latency commands (:mod:`.latency`), a deploy folder
on its device (:mod:`.deploy`), ``autonl import`` (:mod:`.importing`), where a command may
write (:mod:`.folders`), and a SOURCE with its weights (:mod:`.sources`, over the one
resolver, :mod:`autonl.passes.sources`). Each returns a typed result the command prints."""
