"""`forge dashboard`: one offline page whose charts really render, from a run's metrics alone.

The rendering tests open the page in headless Chromium with the network cut off (every host
name fails to resolve and the proxy is a closed port), screenshot it, and look for the charts'
coloured marks inside each chart's box. They are skipped only when no Chromium binary exists
(`.ci/run` installs the Debian package `chromium`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgelib.analyze import GROK_STAGES
from forgelib.dashboard import build_dashboard, dvc_template_html, install_dvc_template
from forgelib.dashboard_charts import MAX_POINTS, grok_stage_bands, read_curve

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")
# The first five colours of Vega's default category scheme (tableau10): the lines and points.
PALETTE = ((0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18), (0xE4, 0x57, 0x56), (0x72, 0xB7, 0xB2), (0x54, 0xA2, 0x4B))


def write_tsv(path: Path, name: str, points) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{name}\n" + "".join(f"{s}\t{v}\n" for s, v in points))


@pytest.fixture
def run_metrics(tmp_path) -> Path:
    """A small but complete metrics/ tree, shaped like the pipeline's."""
    m = tmp_path / "metrics"
    m.mkdir()
    cost = {"wall_s": 12.5, "peak_rss_gib": 0.5}
    families = {"arithmetic": 0.4, "modular": 0.1}
    (m / "base.json").write_text(json.dumps({"models": {"ancestor": {"mean": 0.4}, "arith": {"mean": 0.5}},
                                             "specialists": {"arith": "arithmetic"}, **cost}))
    (m / "evomerge.json").write_text(json.dumps({
        "generations": [{"best": 0.3 + 0.02 * g, "mean": 0.2 + 0.01 * g, "worst": 0.1} for g in range(8)],
        "evolved_test_mean": 0.55, "ancestor_test_mean": 0.4, **cost}))
    (m / "train.json").write_text(json.dumps({
        "test_mean": 0.6, "input_test_mean": 0.55, "trained": {"families": families}, "input": {"families": families},
        "loop": {"controllers": {"grokfast": {"grokfast/lamb": 2.0}}}, **cost}))
    (m / "compress.json").write_text(json.dumps({
        "fp32_bytes": 400_000, "input_test_mean": 0.6,
        "stage1": {"bits_per_param": 3.4, "retention": 0.9, "bytes": 42_500, "test_mean": 0.54, "fraction_fp32": 0.106},
        "final": {"bits_per_param": 2.7, "retention": 0.8, "bytes": 33_750, "test_mean": 0.48, "fraction_fp32": 0.084},
        **cost}))
    (m / "summary.json").write_text(json.dumps({
        "rows": [{"phase": "base", "model": "ancestor", "test_mean": 0.4},
                 {"phase": "evomerge", "model": "evolved", "test_mean": 0.55},
                 {"phase": "train", "model": "trained", "test_mean": 0.6},
                 {"phase": "compress", "model": "compressed (final)", "test_mean": 0.48, "fraction_fp32": 0.084}],
        "gates": {"train.modular_accuracy": {"passed": True, "measured": "0.1 >= 0.07"},
                  "compress.final_retention": {"passed": False, "measured": "0.80 >= 0.9"}},
        "all_gates_passed": False}))
    plots = m / "train" / "plots" / "metrics"
    steps = range(10, 210, 10)
    write_tsv(plots / "loss.tsv", "loss", [(s, 2.0 / (1 + s / 50)) for s in steps])
    write_tsv(plots / "eval" / "val_acc.tsv", "val_acc", [(s, min(1.0, s / 200)) for s in steps])
    write_tsv(plots / "eval" / "train_acc.tsv", "train_acc", [(s, min(1.0, s / 120)) for s in steps])
    write_tsv(plots / "grokfast" / "lamb.tsv", "lamb", [(s, 2.0 + math.sin(s / 30)) for s in steps])
    write_tsv(plots / "edge" / "level" / "modular.tsv", "modular", [(s, 1 + s // 70) for s in steps])
    write_tsv(plots / "geometry" / "stage.tsv", "stage", [(s, 0 if s < 80 else 1 if s < 150 else 2) for s in steps])
    return m


def test_page_is_one_self_contained_file_with_every_chart(run_metrics, tmp_path):
    result = build_dashboard(run_metrics, tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert result["path"] == str(tmp_path / "report" / "index.html") and result["bytes"] == len(page.encode())
    assert "<script" not in page and not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == result["charts"] == 6  # evomerge, accuracy, loss, lambda, edge level, frontier
    assert all(svg.count("<path") >= 3 for svg in svgs)
    for text in ("compressed (final)", "FAIL compress.final_retention", "1/1 pass", *GROK_STAGES[:3],
                 "edge curriculum level per family", "compression frontier"):
        assert text in page, text


def test_missing_curves_are_explained_not_fatal(tmp_path):
    (tmp_path / "metrics").mkdir()
    build_dashboard(tmp_path / "metrics", tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<svg" not in page and "no report yet" in page
    assert "the edge curriculum (train.edge) was off in this run" in page


def test_grok_stage_bands_hold_each_stage_until_the_next(tmp_path):
    write_tsv(tmp_path / "geometry" / "stage.tsv", "stage", [(50, 0.0), (100, 0.0), (150, 2.0), (200, 3.0)])
    bands = grok_stage_bands(tmp_path, last_step=260)
    assert [(b["stage"], b["start"], b["end"]) for b in bands] == [
        ("pre-grok", 50, 150), ("active", 150, 200), ("consolidation", 200, 260)]


def test_grok_stage_names_match_the_geometry_probe():
    from forgelib.train.geometry import STAGES

    assert GROK_STAGES == STAGES


def test_long_curves_are_thinned_keeping_both_ends(tmp_path):
    write_tsv(tmp_path / "loss.tsv", "loss", [(s, s * 0.5) for s in range(1, 2002)])
    points = read_curve(tmp_path / "loss.tsv")
    assert len(points) <= MAX_POINTS + 1 and points[0] == (1.0, 0.5) and points[-1] == (2001.0, 1000.5)
    assert read_curve(tmp_path / "absent.tsv") == []


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    offline = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
               "--proxy-bypass-list=<-loopback>", "--disable-background-networking"]
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-device-scale-factor=1", *offline, *args],
                          capture_output=True, text=True, timeout=timeout, check=True)


def palette_pixels(image, box) -> int:
    """Pixels within a small distance of a chart colour, inside ``box`` (left, top, right, bottom)."""
    crop = image.convert("RGB").crop(box)
    return sum(count for count, rgb in crop.getcolors(crop.width * crop.height)
               if any(sum((a - b) ** 2 for a, b in zip(rgb, c)) < 40 ** 2 for c in PALETTE))


def saturated_pixels(image, box) -> int:
    """Clearly coloured (not white, grey or black) pixels inside ``box``."""
    crop = image.convert("RGB").crop(box)
    return sum(count for count, rgb in crop.getcolors(crop.width * crop.height) if max(rgb) - min(rgb) >= 60)


@needs_chromium
def test_charts_render_in_headless_chromium_offline(run_metrics, tmp_path):
    from PIL import Image

    page = Path(build_dashboard(run_metrics, tmp_path / "report")["path"])
    # the same page plus a script that reports every chart's box (the page itself has no script)
    probe = tmp_path / "report" / "probe.html"
    probe.write_text(page.read_text().replace("</body>", "<script>document.title = JSON.stringify([...document."
                                              "querySelectorAll('figure > svg')].map(s => { const r = s.getBoundingClientRect();"
                                              " return [r.left, r.top, r.right, r.bottom].map(Math.round); }));</script></body>"))
    size = (1200, 4000)
    dom = chromium(f"--window-size={size[0]},{size[1]}", "--dump-dom", probe.as_uri()).stdout
    boxes = json.loads(re.search(r"<title>(.*?)</title>", dom).group(1).replace("&quot;", '"'))
    assert len(boxes) == 6 and all(b[2] - b[0] > 200 and b[3] - b[1] > 100 and b[3] <= size[1] for b in boxes), boxes
    chromium(f"--window-size={size[0]},{size[1]}", f"--screenshot={tmp_path / 'shot.png'}", page.as_uri())
    shot = Image.open(tmp_path / "shot.png")
    assert shot.size == size
    for box in boxes:
        assert palette_pixels(shot, tuple(box)) >= 40, box  # coloured lines or points drawn in this chart
    # the area between charts is page background: the check above is not satisfied everywhere
    assert palette_pixels(shot, (0, 0, size[0], 40)) == 0


def test_dashboard_builds_from_the_repository_metrics_within_10_seconds(tmp_path):
    if not (ROOT / "metrics" / "summary.json").is_file():
        pytest.skip("no metrics/summary.json in this checkout: run `dvc repro` first")
    forge = Path(sys.executable).parent / "forge"
    started = time.perf_counter()
    proc = subprocess.run([str(forge), "dashboard", "--metrics", str(ROOT / "metrics"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    assert seconds <= 10, f"forge dashboard took {seconds:.1f} s"
    assert (tmp_path / "index.html").read_text().count("<svg") >= 4


@needs_chromium
def test_dvc_plots_show_renders_offline_with_the_installed_template(tmp_path):
    """`forge dashboard --dvc-template`'s template: `dvc plots show` writes a page with vega inlined
    instead of DVC's CDN scripts, and the plot renders with the network off."""
    from PIL import Image

    env = {"DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, env=env, check=True, capture_output=True)
    write_tsv(tmp_path / "loss.tsv", "loss", [(s, 2.0 / (1 + s / 50)) for s in range(0, 200, 10)])
    (tmp_path / "dvc.yaml").write_text("plots:\n  - loss.tsv:\n      x: step\n      y: loss\n")
    template = install_dvc_template(tmp_path)
    assert template == tmp_path / ".dvc" / "offline-plots.html" and "{plot_divs}" in template.read_text()
    assert "offline-plots.html" in (tmp_path / ".dvc" / "config.local").read_text()
    subprocess.run(["dvc", "plots", "show", "-o", "plots"], cwd=tmp_path, env=env, check=True, capture_output=True)
    page = tmp_path / "plots" / "index.html"
    assert "cdn.jsdelivr.net" not in page.read_text() and "vegaEmbed" in page.read_text()
    chromium("--window-size=1000,700", "--virtual-time-budget=10000", f"--screenshot={tmp_path / 'shot.png'}",
             page.as_uri())
    assert saturated_pixels(Image.open(tmp_path / "shot.png"), (0, 0, 1000, 700)) >= 200  # the plotted line


def test_dvc_template_keeps_dvc_placeholders_and_needs_no_network():
    text = dvc_template_html()
    assert text.count("{plot_divs}") == 1 and "{scripts}" not in text and "<script src" not in text
    assert "window.vegaEmbed" in text
