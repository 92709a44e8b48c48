"""One parity rule for every comparison of two runtimes on the same weights (compile's check
against torch, TVM against torch and onnxruntime, the checks on real images): the largest
absolute difference over the rows where the reference is finite, allowed up to
``PARITY_RTOL`` times the largest reference logit, and never less than ``PARITY_RTOL``
(``numpy.allclose``'s rtol + atol with one scale for the whole output):

    max |got - ref|  <=  1e-4 x max(1, max |ref|)

An absolute tolerance refuses correct models whose logits are large (a network with random
batch-norm statistics: logits up to 5e3 and float32 rounding of 4e-3, a relative 7e-7),
while a real mismatch, one weight perturbed, is off by far more than 1e-4 of the logits.
"""
from __future__ import annotations

import numpy as np

PARITY_RTOL = 1e-4
RULE = "max |diff| <= 1e-4 x max(1, max |reference logit|)"


def allowed(top: float) -> float:
    """The largest difference allowed when the reference's largest |logit| is ``top``."""
    return PARITY_RTOL * max(1.0, top) if np.isfinite(top) else PARITY_RTOL


def finite_diff(ref: np.ndarray, got: np.ndarray) -> tuple[float, bool, int]:
    """``(max |ref - got| over the rows where ref is finite, whether the same rows are
    non-finite in both, how many rows of ref are not)``: a model whose logits overflow on an
    input is compared where it does not (the checks on real images decide whether such a
    model may be written)."""
    ok = np.isfinite(ref).all(axis=-1)
    same = bool(np.array_equal(ok, np.isfinite(got).all(axis=-1)))
    diff = float(np.abs(ref[ok] - got[ok]).max()) if ok.any() and same else (0.0 if same else float("inf"))
    return diff, same, int((~ok).sum())


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    """The rule on one pair of outputs: ``max_abs_diff``, ``max_abs_logit`` (the reference's,
    finite rows), ``allowed``, ``relative_diff`` (diff / max(1, top)), ``nonfinite_rows``,
    ``passed`` and the ``rule`` in words."""
    diff, same, bad = finite_diff(ref, got)
    rows = np.isfinite(ref).all(-1)
    top = float(np.abs(ref[rows]).max()) if rows.any() else 0.0
    return {"max_abs_diff": diff, "max_abs_logit": top, "allowed": allowed(top),
            "relative_diff": diff / max(1.0, top), "nonfinite_rows": bad,
            "passed": bool(same and diff <= allowed(top)), "rule": RULE}


def line(what: str, check: dict) -> str:
    """``what: max |diff| 3.5e-03 on logits up to 5166.19 (allowed 5.2e-01: rule)``."""
    return (f"{what}: max |diff| {check['max_abs_diff']:.2e} on logits up to {check['max_abs_logit']:.2f} "
            f"(allowed {check['allowed']:.2e}: {RULE})")
