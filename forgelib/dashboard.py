"""`forge dashboard`: one self-contained HTML page per run, built from ``metrics/`` alone.

The charts are Vega-Lite specs rendered to static SVG by vl-convert (the Vega runtime bundled in
a Rust library), inlined into the page: no JavaScript, no CDN, so the page opens offline and
renders the same in any browser. Chart specs live in :mod:`forgelib.dashboard_charts`.

Sections: the phases table (test mean, size, gates per phase from ``summary.json``), what each
stage cost (``forge analyze``), EvoMerge fitness per generation, the training curves with the
grokking stages, the controllers over time (Grokfast lambda, edge curriculum levels), and the
compression frontier (bits per parameter against retention).

:func:`install_dvc_template` makes `dvc plots show` offline as well: it writes an HTML template
that inlines vega, vega-lite and vega-embed (vl-convert's ``javascript_bundle``) and points
DVC's ``plots.html_template`` at it in ``.dvc/config.local``.
"""

from __future__ import annotations

import datetime as dt
import html
import subprocess
import time
from pathlib import Path

from forgelib import dashboard_charts as charts
from forgelib.analyze import analyze
from forgelib.io import read_json, write_text_atomic

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 4px 10px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1a7f37; } .fail { color: #cf222e; font-weight: bold; } .note { color: #777; font-style: italic; }
figure { margin: 12px 0; } .row { display: flex; flex-wrap: wrap; gap: 16px; }
"""


def _size(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return "-"


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _gates_cell(gates: dict) -> str:
    if not gates:
        return "-"
    failed = [name for name, g in gates.items() if not g.get("passed")]
    if not failed:
        return f'<span class="pass">{len(gates)}/{len(gates)} pass</span>'
    return f'<span class="fail">FAIL {", ".join(html.escape(n) for n in failed)}</span> ({len(gates) - len(failed)}/{len(gates)} pass)'


def phases_table(summary: dict, compress: dict, analysis: dict) -> str:
    """One row per model of summary.json (ancestor, specialists, evolved, trained, compressed, and
    any phase the report learns later): test mean, size, and its phase's gates."""
    fp32 = compress.get("fp32_bytes")
    sizes = {f"compressed ({s})": compress[s].get("bytes") for s in ("stage1", "final") if s in compress}
    gates_by_phase = {name: p["gates"] for name, p in analysis["phases"].items()}
    rows = ["<tr><th>phase</th><th>model</th><th>test mean</th><th>size</th><th>bits / param</th><th>gates</th></tr>"]
    for row in summary.get("rows", []):
        model = row["model"]
        size = sizes.get(model, fp32 * row["fraction_fp32"] if fp32 and "fraction_fp32" in row else fp32)
        bits = 32 * row["fraction_fp32"] if "fraction_fp32" in row else (32.0 if fp32 else None)
        rows.append(f"<tr><td>{html.escape(row['phase'])}</td><td>{html.escape(model)}</td>"
                    f"<td class=num>{_fmt(row.get('test_mean'), '.3f')}</td><td class=num>{_size(size)}</td>"
                    f"<td class=num>{_fmt(bits, '.2f')}</td><td>{_gates_cell(gates_by_phase.get(row['phase'], {}))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def cost_table(analysis: dict) -> str:
    rows = ["<tr><th>stage</th><th>wall s</th><th>peak RSS GiB</th><th>test mean</th><th>&Delta;</th><th>vs</th></tr>"]
    for name, p in analysis["phases"].items():
        rows.append(f"<tr><td>{html.escape(name)}</td><td class=num>{_fmt(p['wall_s'], '.1f')}</td>"
                    f"<td class=num>{_fmt(p['peak_rss_gib'], '.2f')}</td><td class=num>{_fmt(p['test_mean'], '.3f')}</td>"
                    f"<td class=num>{_fmt(p['delta_test_mean'], '+.3f')}</td><td>{p['compared_to'] or ''}</td></tr>")
    total = analysis["total"]
    rows.append(f"<tr><th>total</th><td class=num>{_fmt(total['wall_s'], '.1f')}</td>"
                f"<td class=num>{_fmt(total['peak_rss_gib'], '.2f')}</td><td></td><td></td><td></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _figure(spec: dict | None, missing: str) -> str:
    if spec is None:
        return f'<p class="note">{html.escape(missing)}</p>'
    import vl_convert

    return f"<figure>{vl_convert.vegalite_to_svg(spec)}</figure>"


def _revision(metrics_dir: Path) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(metrics_dir), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown"


def build_dashboard(metrics_dir: str | Path = "metrics", out_dir: str | Path = "report") -> dict:
    """Write ``out_dir/index.html``; return ``{"path", "bytes", "charts", "seconds"}``."""
    started = time.perf_counter()
    metrics_dir = Path(metrics_dir)

    def load(name: str) -> dict:
        path = metrics_dir / name
        return read_json(path) if path.is_file() else {}

    summary, compress, evomerge = load("summary.json"), load("compress.json"), load("evomerge.json")
    analysis = analyze(metrics_dir)
    train_plots = metrics_dir / "train" / "plots" / "metrics"
    figures = [
        ("EvoMerge fitness per generation", _figure(charts.evomerge_fitness(evomerge),
                                                    f"no generations in {metrics_dir / 'evomerge.json'}")),
        ("Training: accuracy and grokking stages", _figure(charts.training_accuracy(train_plots),
                                                           f"no eval/*_acc curves under {train_plots}")),
        ("Training: loss", _figure(charts.training_loss(train_plots), f"no loss curves under {train_plots}")),
        ("Controllers over time", '<div class="row">' + _figure(
            charts.grokfast_lambda(train_plots), "no grokfast/lamb curve: Grokfast was off in this run") + _figure(
            charts.edge_levels(train_plots), "no edge/level/* curves: the edge curriculum (train.edge) was off in "
                                             "this run") + "</div>"),
        ("Compression frontier", _figure(charts.compression_frontier(compress),
                                         f"no stage1/final in {metrics_dir / 'compress.json'}")),
    ]
    gates_ok = summary.get("all_gates_passed")
    status = ("all gates passed" if gates_ok else "gates FAILED") if gates_ok is not None else "no report yet"
    body = [f"<h1>Forge run {html.escape(_revision(metrics_dir))}</h1>",
            f"<p>{html.escape(status)} &middot; built {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} "
            f"from <code>{html.escape(str(metrics_dir))}/</code></p>",
            "<h2>Phases</h2>", phases_table(summary, compress, analysis),
            "<h2>What each stage cost</h2>", cost_table(analysis)]
    for title, content in figures:
        body += [f"<h2>{html.escape(title)}</h2>", content]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Forge dashboard</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = Path(out_dir) / "index.html"
    write_text_atomic(path, page)
    path.chmod(0o644)  # a page to open or serve, not a private temp file
    return {"path": str(path), "bytes": len(page.encode()), "charts": page.count("<svg"),
            "seconds": round(time.perf_counter() - started, 2)}


DVC_TEMPLATE_NAME = "offline-plots.html"
"""Written into the ``.dvc`` directory (git-ignored there) by :func:`install_dvc_template`."""


def dvc_template_html() -> str:
    """A `dvc plots show` HTML template with vega, vega-lite 5 (the version of DVC's plot
    templates) and vega-embed inlined, instead of DVC's default ``{scripts}`` from a CDN."""
    import vl_convert

    v5 = [v for v in vl_convert.get_vegalite_versions() if v.startswith("5.")]
    bundle = vl_convert.javascript_bundle(vl_version=max(v5, key=lambda v: tuple(map(int, v.split("."))))
                                          if v5 else None)
    bundle = bundle.replace("</script", "<\\/script")  # an inline script ends at the first "</script"
    return ("<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<meta charset=\"utf-8\">\n<title>DVC Plot (offline)</title>\n"
            f"<script>{bundle}</script>\n<style>table {{ border-spacing: 15px; }}</style>\n</head>\n"
            "<body>\n{plot_divs}\n</body>\n</html>\n")


def install_dvc_template(repo_root: str | Path = ".") -> Path:
    """Write the offline template to ``.dvc/offline-plots.html`` and set ``plots.html_template``
    in ``.dvc/config.local`` (both stay out of git), so `dvc plots show` needs no network."""
    from forgelib.errors import ForgeError

    dvc_dir = Path(repo_root) / ".dvc"
    if not dvc_dir.is_dir():
        raise ForgeError(f"--dvc-template: {dvc_dir} does not exist; run it in the root of a DVC repository")
    path = dvc_dir / DVC_TEMPLATE_NAME
    write_text_atomic(path, dvc_template_html())
    proc = subprocess.run(["dvc", "config", "--local", "plots.html_template", DVC_TEMPLATE_NAME],
                          cwd=repo_root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ForgeError(f"--dvc-template: `dvc config --local plots.html_template` failed: {proc.stderr.strip()}")
    return path
