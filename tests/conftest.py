import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def autonl_exe() -> str:
    exe = Path(sys.executable).parent / "autonl"
    if not exe.exists():
        pytest.fail("the `autonl` command is not installed next to this Python; run scripts/setup.sh")
    return str(exe)


@pytest.fixture
def cli():
    """Run the installed `autonl` command; returns the CompletedProcess (text mode)."""

    def run(*args, cwd=None, check_ok=False):
        env = {k: v for k, v in os.environ.items() if k != "AUTONL_DEBUG"}
        proc = subprocess.run([autonl_exe(), *map(str, args)], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=300)
        if check_ok and proc.returncode != 0:
            pytest.fail(f"autonl {' '.join(map(str, args))} failed:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A small AutoNL-S (32x32, width 0.35, 10 classes) trained briefly on the built-in digits:
    a model folder with real, non-random weights for the deployment backends' tests."""
    run = tmp_path_factory.mktemp("trained") / "run"
    proc = subprocess.run([autonl_exe(), "train", "autonl-s", "--data", "digits", "--resolution", "32",
                           "--width", "0.35", "--steps", "80", "--batch-size", "64",
                           "--lr", "0.05", "--eval-every", "80", "--precise-bn", "10", "--out", str(run)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"training the fixture model failed:\n{proc.stderr}")
    return run / "model"
