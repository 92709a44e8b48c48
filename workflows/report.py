"""The report of ``autonl run``: ``report.md`` and ``report.html`` with the same content (plots,
the derived architecture next to the published ones, accuracy, latency, time per stage)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from autonl.ir import atomic_write

from autonl.backends.checks import shown_classes


def _table(rows: list[list], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_ms(ms: float) -> str:
    """Milliseconds with three significant digits (0.0613, 1.27, 51.2)."""
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


CMP_HEAD = ["network", "MACs", "params", "onnxruntime fp32 ms", "accuracy"]


def _comparison_rows(s: dict) -> tuple[list, list]:
    """The derived network against the baseline (costs at the network's input size), and
    their accuracy per class."""
    cmp = s.get("comparison")
    if not cmp:
        return [], []
    b, lat = cmp["baseline"], cmp.get("latency_ms") or {}

    def ms(key):
        return fmt_ms(lat[key]) if key in lat else "-"
    rows = [["derived (searched)", f"{b['derived_macs'] / 1e6:.2f}M", f"{b['derived_params'] / 1e6:.3f}M", ms("derived"),
             f"{cmp['derived_acc']['val_acc']:.3f}"],
            [b["name"], f"{b['macs'] / 1e6:.2f}M", f"{b['params'] / 1e6:.3f}M", ms("baseline"),
             f"{cmp['baseline_acc']['val_acc']:.3f}"]]

    def acc(v):
        return "-" if v is None else f"{v:.3f}"
    classes = [[name, acc(a), acc(c), n] for name, a, c, n in zip(
        cmp["classes"], cmp["derived_acc"]["per_class"], cmp["baseline_acc"]["per_class"],
        cmp["derived_acc"]["per_class_n"])]
    return rows, classes


def _arch_rows(s: dict) -> list[list]:
    """The derived network next to the published ones: costs, blocks, LightNL placement."""
    arch = []
    for name, c in s["derived"].items():
        nl = ", ".join(f"{d['after']} (r={d['r']}, s={d['s']})" for d in c.get("lightnl", [])) or "-"
        arch.append([name, f"{c['macs'] / 1e6:.1f}M", f"{c['params'] / 1e6:.2f}M", c.get("blocks", "-"),
                     len(c.get("lightnl", [])), nl])
    return arch


ARCH_HEAD = ["network", "MACs", "params", "blocks", "LightNL", "LightNL after (ratio, stride)"]


def _accuracy_rows(s: dict) -> list[list]:
    train = s["train"]
    rows = [["supernet at the end of the search", f"{s['search'].get('supernet_val_acc', float('nan')):.3f}"],
            ["derived network after fine-tuning (fp32)", f"{train['val_acc']:.3f}"]]
    if s.get("int8") and s["int8"].get("accuracy"):
        a = s["int8"]["accuracy"]
        rows.append(["deployed fp32 (onnxruntime)", f"{a['fp32']:.3f}"])
        scheme = s["int8"].get("scheme")
        rows.append([f"deployed int8 (onnxruntime{', ' + scheme if scheme else ''})",
                     f"{a['int8']:.3f} ({100 * a['change']:+.1f} points)"])
    if s.get("chance") is not None:
        rows.append(["chance (always the most common class)", f"{s['chance']:.3f}"])
    return rows


def _warnings(s: dict) -> list[str]:
    train, cmp = s["train"], s.get("comparison")
    warnings = [w for w in (s.get("accuracy_warning"), s["search"].get("landing_warning"),
                            (cmp or {}).get("warning"), (s.get("int8") or {}).get("warning")) if w]
    if train.get("val_nonfinite"):
        warnings.append(f"warning: {train['val_nonfinite']} of {train['val_n']} validation images give non-finite "
                        f"logits in torch")
    return warnings


def _data_line(s: dict) -> str:
    """The data, its classes, the settings and the check on real images, in one paragraph."""
    real = (s.get("deploy_checks") or {}).get("real_data") or {}
    classes = (s.get("data_facts") or {}).get("classes") or []
    shown = shown_classes(classes) if classes else ""
    settings = s.get("settings") or {}
    return (f"Data: `{s['data']}`, {s.get('classes', '?')} classes" + (f" ({shown})" if shown else "")
            + (f"; chance level {s['chance']:.3f}" if s.get("chance") is not None else "")
            + (f". Settings: resolution {settings['resolution']}; search {settings['search_steps']} steps, batch "
               f"{settings['batch_size']}, lr {settings.get('search_lr', 0):g}; fine-tuning "
               f"{settings['train_steps']} steps, batch {settings.get('train_batch_size', settings['batch_size'])}, "
               f"lr {settings.get('train_lr', 0):g}."
               if settings else "")
            + (f" Checked on {real['images']} real validation images: {real['nonfinite_images']} with "
               f"non-finite logits." if real.get("images") else ""))


def _latency_rows(s: dict) -> tuple[list[list], str]:
    """The latency table (each runtime against torch eager) and how it was timed."""
    lat = s["latency"]
    base = lat["torch eager"]
    rows = [[k, fmt_ms(v), f"{v / base:.2f}x"] for k, v in lat.items()]
    facts = s.get("latency_timing") or {}
    how = (f"{facts['torch_threads']} torch thread(s) and "
           f"{facts.get('onnxruntime_threads', 'the default number of')} onnxruntime thread(s) on "
           f"{facts['cpus']} CPUs; {facts['rule']}" if facts else "runtimes alternating, median")
    if facts.get("warning"):
        how += f"; {facts['warning']}"
    return rows, how


def _images(out: Path, s: dict) -> list[tuple[str, str]]:
    """``(title, path)`` of the run's plots that are there."""
    cost_plot = (("Predicted latency of the sampled network against search step", "search/latency.png")
                 if s.get("latency_target") else ("MACs of the sampled network against search step", "search/macs.png"))
    images = [cost_plot,
              ("Decisions per block (LightNL on/off, ratio, stride)", "search/decisions.png"),
              ("Fine-tuning: loss and accuracy", "train/curves.png")]
    return [(t, p) for t, p in images if (out / p).is_file()]


def _goal(s: dict) -> tuple[str, str]:
    """The target in words and where the derived network landed."""
    srch, lt = s["search"], s.get("latency_target")
    if lt:
        goal = f"{lt['target_ms']:.2f} ms"
        landed = (f"the derived network is predicted at {lt['predicted_ms']:.3f} ms and measures {lt['measured_ms']:.3f} "
                  f"ms ({lt['error']:+.1%} off target; at {lt['resolution']}x{lt['resolution']}, {lt['of']}), "
                  f"{srch['derived_macs'] / 1e6:.1f}M MACs")
    else:
        cr = s.get("cost_resolution", 224)
        goal = f"{s['target_macs'] / 1e6:.3g}M MACs"
        landed = (f"the derived network has {srch['derived_macs'] / 1e6:.3g}M MACs at {cr}x{cr} "
                  f"({srch['off_target']:+.1%} off target)")
    return goal, landed


def _comparison_text(cmp: dict | None) -> tuple[str, str]:
    """The comparison's title and the note on how the baseline was trained and measured."""
    if not cmp:
        return "", ""
    b = cmp["baseline"]
    return (f"Against {b['name']}, trained for the same steps",
            f"{b['name']}: {b['why']}, trained from scratch for {b['steps']} steps (the search's and the "
            f"fine-tuning's together) with the fine-tuning's recipe; costs at {b['resolution']}x{b['resolution']}, "
            f"latencies timed with the latency table below, accuracy on the whole validation split.")


@dataclass
class _Report:
    """What report.md and report.html both say, computed once from the summary."""

    s: dict
    images: list
    warnings: list
    data_line: str
    arch: list
    acc_rows: list
    lat_rows: list
    how: str
    cmp_rows: list
    class_rows: list
    cmp_title: str
    cmp_note: str

    @classmethod
    def of(cls, out: Path, s: dict) -> _Report:
        lat_rows, how = _latency_rows(s)
        cmp_rows, class_rows = _comparison_rows(s)
        return cls(s, _images(out, s), _warnings(s), _data_line(s), _arch_rows(s), _accuracy_rows(s), lat_rows, how,
                   cmp_rows, class_rows, *_comparison_text(s.get("comparison")))

    @property
    def cmp(self) -> dict | None:
        return self.s.get("comparison")

    @property
    def parity(self) -> float | None:
        checks = self.s.get("deploy_checks") or {}
        return checks.get("parity", {}).get("max_abs_diff", checks.get("vs_torch_max_abs_diff"))

    @property
    def r_in(self) -> int:
        return self.s.get("input_resolution", self.s["resolution"])

    def head(self) -> tuple[str, str]:
        """The title and the first paragraph (the search, its target and where it landed)."""
        s, srch, lt = self.s, self.s["search"], self.s.get("latency_target")
        goal, landed = _goal(s)
        cr = s.get("cost_resolution", 224)
        counted = f"counted at {cr}x{cr}"
        what = "" if not s.get("source") or s["source"] == "search-space" \
            else f"{Path(s['source']).name} ({s.get('space')}), "
        return (f"# AutoNL run: {what}{s['data']}, {goal}, {s['backend']}",
                f"Search on `{s['data']}` toward {goal} ({'predicted by a latency table' if lt else counted}): "
                f"{landed}, {srch['lightnl_blocks']} LightNL blocks in "
                f"{srch['blocks']} MBConvs. Costs below at {s['resolution']}x{s['resolution']}, every network with "
                f"{s.get('classes', '?')} classes; latencies at the network's input size, {self.r_in}x{self.r_in}.")

    def stage_rows(self) -> list[list]:
        return [[k, f"{v:.0f} s"] for k, v in self.s["seconds"].items()]


def _markdown(r: _Report) -> list[str]:
    title, intro = r.head()
    md = [title, "", intro, "", r.data_line, ""]
    if r.warnings:
        md += ["## Warnings", ""] + [f"- **{w}**" for w in r.warnings] + [""]
    for title, path in r.images:
        md += [f"## {title}", "", f"![{title}]({path})", ""]
    md += ["## Derived architecture next to the published ones", "", _table(r.arch, ARCH_HEAD), "",
           "## Accuracy (validation split)", "", _table(r.acc_rows, ["model", "accuracy"]), ""]
    if r.cmp:
        md += [f"## {r.cmp_title}", "", _table(r.cmp_rows, CMP_HEAD), "", r.cmp_note, "",
               "### Accuracy per class", "",
               _table(r.class_rows, ["class", "derived", r.cmp["baseline"]["name"], "images"]), ""]
    md += [
           f"## Latency (batch 1 at {r.r_in}x{r.r_in}, this machine)", "",
           _table(r.lat_rows, ["runtime", "ms", "vs torch eager"]), "", f"Timed with {r.how}.", "",
           f"Deployed model against torch on the same weights: max |diff| {r.parity:.2e}." if r.parity is not None
           else "", "",
           "## Time per stage", "", _table(r.stage_rows(), ["stage", "time"]),
           "", "Files: `search/`, `derived/`, `train/`, " + ("`baseline/`, " if r.cmp else "") + "`deploy/`, "
           "`summary.json`, `manifest.json` (sha256 of every file).", ""]
    return md


def _h_table(rows, head) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _html(out: Path, r: _Report) -> str:
    title, intro = r.head()
    body = [f"<h1>{html.escape(title[2:])}</h1>", f"<p>{html.escape(intro)}</p>",
            f"<p>{html.escape(r.data_line)}</p>"]
    if r.warnings:
        body += ["<h2>Warnings</h2>", "<ul>" + "".join(f"<li><strong>{html.escape(w)}</strong></li>"
                                                      for w in r.warnings) + "</ul>"]
    for title, path in r.images:   # embedded, so that report.html alone is the whole report
        src = out / path
        data = f"data:image/png;base64,{base64.b64encode(src.read_bytes()).decode()}" if src.is_file() else path
        body += [f"<h2>{html.escape(title)}</h2>", f'<img src="{html.escape(data)}" alt="{html.escape(title)}">']
    body += ["<h2>Derived architecture next to the published ones</h2>", _h_table(r.arch, ARCH_HEAD),
             "<h2>Accuracy (validation split)</h2>", _h_table(r.acc_rows, ["model", "accuracy"])]
    if r.cmp:
        body += [f"<h2>{html.escape(r.cmp_title)}</h2>", _h_table(r.cmp_rows, CMP_HEAD),
                 f"<p>{html.escape(r.cmp_note)}</p>", "<h3>Accuracy per class</h3>",
                 _h_table(r.class_rows, ["class", "derived", r.cmp["baseline"]["name"], "images"])]
    body += [
             f"<h2>Latency (batch 1 at {r.r_in}x{r.r_in}, this machine)</h2>",
             _h_table(r.lat_rows, ["runtime", "ms", "vs torch eager"]), f"<p>Timed with {html.escape(r.how)}.</p>"]
    if r.parity is not None:
        body.append(f"<p>Deployed model against torch on the same weights: max |diff| {r.parity:.2e}.</p>")
    body += ["<h2>Time per stage</h2>", _h_table(r.stage_rows(), ["stage", "time"])]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>AutoNL run</title><style>"
            "body{font-family:sans-serif;max-width:1000px;margin:2em auto}img{max-width:100%}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "</style></head><body>" + "\n".join(body) + "</body></html>\n")


def write_report(out: Path, s: dict) -> None:
    """report.md and report.html: the same content; images are the run's own PNGs. ``s``:
    the run's summary (summary.json)."""
    report = _Report.of(out, s)
    atomic_write(out / "report.md", "\n".join(_markdown(report)))
    atomic_write(out / "report.html", _html(out, report))
