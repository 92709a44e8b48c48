"""The documented custom-pass example (docs/passes.md, "Write your own pass") runs as printed
and prints what it says."""
import re
import subprocess
import sys

from conftest import REPO


def doc_block(page, heading):
    text = (REPO / "docs" / page).read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_custom_pass_snippet_runs_as_printed():
    code = doc_block("passes.md", "## Write your own pass")
    promised = re.search(r"# prints: (.*)", code).group(1).strip()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == promised
    assert len(code.strip().splitlines()) <= 20
