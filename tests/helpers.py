"""Assertions shared by the tests."""


def assert_one_line_error(proc, *fragments):
    """A bad input gives exit != 0 and exactly one `error:` line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def start_and_sigkill(command: list[str], run_dir, timeout: float = 300) -> None:
    """Start ``command`` (an autonl run writing to ``run_dir``), SIGKILL it as soon as its first
    checkpoint exists, and check that it had not finished by then."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / "checkpoint.pt").exists(), "no checkpoint was written"
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed"


def module_with_params(graph):
    """The graph lowered to torch (eval mode) with its bound weights (graph.params) loaded."""
    import torch

    from autonl.backends.torch.lower import to_torch
    module = to_torch(graph).eval()
    missing, unexpected = module.load_state_dict({k: torch.from_numpy(v) for k, v in graph.params.items()},
                                                 strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return module
