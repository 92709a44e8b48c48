"""Atomic writes and structural comparison."""
import errno
import os

import pytest

from autonl.ir import AutonlError, assert_structural_equal, build_preset, parse_graph, structural_equal
from autonl.ir import atomic_write, load_graph, save_graph


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "g.ir"
    save_graph(build_preset("mobilenetv2", resolution=32), path)
    before = path.read_text()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(AutonlError, match="cannot write: No space left on device"):
        save_graph(build_preset("autonl-l", resolution=32), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.ir"]


def test_save_and_load_both_forms(tmp_path):
    g = build_preset("autonl-s", resolution=64)
    for name in ("g.ir", "g.json"):
        save_graph(g, tmp_path / name)
        back = load_graph(tmp_path / name)
        assert back == g and back.source == str(tmp_path / name)
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_structural_equal_ignores_names_not_structure():
    a = parse_graph("graph g(%x: f32[1,4]) {\n  %a : f32[1,4] = relu(%x)\n  %b : f32[1,4] = add(%a, %x)\n  return %b\n}")
    renamed = parse_graph("graph g(%y: f32[1,4]) {\n  %p : f32[1,4] = relu(%y)\n  %q : f32[1,4] = add(%p, %y)\n  return %q\n}")
    swapped = parse_graph("graph g(%x: f32[1,4]) {\n  %a : f32[1,4] = relu(%x)\n  %b : f32[1,4] = add(%x, %a)\n  return %b\n}")
    other_op = parse_graph("graph g(%x: f32[1,4]) {\n  %a : f32[1,4] = relu6(%x)\n  %b : f32[1,4] = add(%a, %x)\n  return %b\n}")
    defaults = parse_graph("graph g(%x: f32[1,4]) {\n  %a : f32[1,4] = relu(%x)\n  %b : f32[1,4] = add(%a, %x)\n  return %b\n}")
    assert structural_equal(a, renamed) and structural_equal(a, defaults)
    assert not structural_equal(a, swapped) and not structural_equal(a, other_op)
    c1 = parse_graph("graph g(%x: f32[1,8,4,4]) {\n  %c : f32[1,8,4,4] = conv2d(%x) {out=8}\n  return %c\n}")
    c2 = parse_graph("graph g(%x: f32[1,8,4,4]) {\n  %c : f32[1,8,4,4] = conv2d(%x) {out=8, k=1, s=1}\n  return %c\n}")
    assert structural_equal(c1, c2)


def test_structural_equal_says_what_differs():
    a = parse_graph("graph g(%x: f32[1,4]) {\n  %a : f32[1,4] = relu(%x)\n  return %a\n}")
    b = parse_graph("graph g(%x: f32[1,4]) {\n  %a : f32[1,4] = relu6(%x)\n  return %a\n}")
    result = structural_equal(a, b)
    assert not result and result.differences == ("~ %a: op relu -> relu6",)
    with pytest.raises(AssertionError, match=r"~ %a: op relu -> relu6"):
        assert_structural_equal(b, a)
    assert str(structural_equal(a, a)) == "the graphs are structurally equal"
