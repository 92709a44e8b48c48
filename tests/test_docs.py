"""The documentation in docs/: the Sphinx site builds without a warning, its command
reference lists every command `autonl --help` lists, and every command the guide shows runs."""
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, autonl_exe
from helpers import run_timing_command

DOCS = REPO / "docs"
GUIDE = DOCS / "guide.md"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """``sphinx-build -W --keep-going -b html docs OUT`` once for this module (output in tmp only)."""
    out = tmp_path_factory.mktemp("docs") / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
                          capture_output=True, text=True, timeout=600)
    return proc, out


def test_the_site_builds_with_warnings_as_errors(built_site):
    proc, out = built_site
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    for page in ("index", "guide", "commands", "ir", "passes", "training", "deploy", "design", "benchmarks"):
        assert (out / f"{page}.html").is_file(), page
    # the pass API comes from the docstrings
    passes = (out / "passes.html").read_text()
    for name in ("autonl.passes.base.Pass", "autonl.passes.base.PassResult",
                 "autonl.passes.pass_registry.register_pass", "autonl.passes.manager.PassManager"):
        assert f'id="{name}"' in passes, name


def help_commands() -> list[str]:
    """The command names in the Commands section of `autonl --help`."""
    proc = subprocess.run([autonl_exe(), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("Commands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, re.M)]


def test_the_command_reference_lists_every_command_and_option(built_site):
    import click

    from autonl.cli.main import cli

    proc, out = built_site
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = help_commands()
    ctx = click.Context(cli, info_name="autonl")
    assert listed == cli.list_commands(ctx) and len(listed) >= 15, listed
    page = (out / "commands.html").read_text()
    documented = set(re.findall(r'<section id="autonl-([a-z0-9-]+)">', page))
    assert documented == set(listed), (sorted(set(listed) - documented), sorted(documented - set(listed)))
    for name in listed:
        command = cli.get_command(ctx, name)
        assert f"<h4>{name}" in page, name
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                longest = max(param.opts, key=len).lstrip("-")
                assert f'id="cmdoption-autonl-{name}-{longest}"' in page, (name, param.opts)


def guide_commands() -> list[str]:
    """Every line starting with `autonl ` in the guide's ```sh blocks, in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines() if line.startswith("autonl ")]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_every_command_in_the_guide_runs(tmp_path):
    """The guide's commands, in order, in one scratch folder holding what the guide says the
    reader has: an image folder `mydata/` and `mynet.py` with a `build()` returning an nn.Module."""
    from autonl.backends.torch.data.shapes_folder import write_shapes_folder

    commands = guide_commands()
    for needed in ("autonl run ", "autonl search ", "autonl derive ", "autonl train ", "autonl compile ",
                   "autonl bench ", "autonl latency-table ", "autonl import "):
        assert any(c.startswith(needed) for c in commands), needed
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    write_shapes_folder(work / "mydata", train_per_class=8, val_per_class=4, seed=4, sizes=(36, 48))
    shutil.copy(REPO / "tests" / "nets" / "tiny_user_net.py", work / "mynet.py")
    env = {k: v for k, v in os.environ.items() if k not in ("AUTONL_DEBUG", "AUTONL_CACHE_DIR")}
    env["HOME"] = str(home)
    exe = autonl_exe()      # the installed console script, next to this Python
    times = []
    for line in commands:
        args = shlex.split(line, comments=True)
        assert args[0] == "autonl", line
        start, cpu = time.monotonic(), _children_cpu()
        proc = run_timing_command(lambda: subprocess.run([exe, *args[1:]], cwd=work, env=env, capture_output=True,
                                                         text=True, timeout=600))
        times.append((time.monotonic() - start, _children_cpu() - cpu, line))
        assert proc.returncode == 0, f"{line}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    print("\nwall s  cpu s  command")   # shown with pytest -s
    print("\n".join(f"{wall:6.1f} {cpu:6.1f}  {line}" for wall, cpu, line in times))
    assert (work / "runs" / "quickstart" / "report.html").is_file()
    assert (work / "runs" / "deploy" / "model.onnx").is_file()
    assert (work / "runs" / "mine" / "report.md").is_file()
