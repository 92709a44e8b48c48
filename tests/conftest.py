import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
