"""The HTML report opened in headless Chromium: the table and the plots render from the one
self-contained file. Skipped where no Chromium is installed (Debian: apt-get install chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_helpers import EAGER_DEMO, LM_EVAL, write_inspect_fixtures

from eager_eval.report.build import build_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("html")
    inspect_dir = root / "inspect"
    write_inspect_fixtures(inspect_dir)
    report = build_report([EAGER_DEMO, LM_EVAL, inspect_dir], root / "out", warn=None)
    return root / "out" / "leaderboard.html", len(report.board.rows)


def test_dom_has_the_table_and_embedded_plots(page, tmp_path):
    html, n_rows = page
    done = _chromium(tmp_path / "profile", "--dump-dom", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    table = re.search(r'<table class="leaderboard" id="leaderboard">(.*?)</table>', dom, re.S)
    assert table, "the leaderboard table is not in the rendered DOM"
    body = table.group(1).split("<tbody>", 1)[1]
    assert body.count("<tr") == n_rows
    assert "EAGer-adapt" in body and "Full Parallel" in body and "—" in body
    images = re.findall(r'<img id="([a-z_]+)"[^>]*src="data:image/png;base64,', dom)
    assert images == ["accuracy_vs_tokens", "sequences_per_prompt", "branch_points"]


def _screenshot(html: Path, tmp_path: Path, height: int):
    """The page as headless Chromium paints it, 1280 x `height`, as an RGB array in [0, 1]."""
    from matplotlib.image import imread

    shot = tmp_path / "screenshot.png"
    done = _chromium(tmp_path / "profile", f"--screenshot={shot}",
                     f"--window-size=1280,{height}", html.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (height, 1280)
    return pixels


def test_screenshot_shows_the_plot(page, tmp_path):
    html, _ = page
    pixels = _screenshot(html, tmp_path, 2000)
    # The EAGer-adapt markers are orange (#ff7f0e); nothing else on the page is: if they show,
    # the embedded PNG was decoded and painted.
    orange = ((abs(pixels[..., 0] - 1.0) < 0.05) & (abs(pixels[..., 1] - 0x7F / 255) < 0.08)
              & (pixels[..., 2] < 0.15))
    assert orange.sum() > 50
    # The table's header background (#f0f3f7) is painted near the top.
    header = ((abs(pixels[:400, :, 0] - 0xF0 / 255) < 0.01) & (abs(pixels[:400, :, 2] - 0xF7 / 255) < 0.01))
    assert header.sum() > 1000


# --- the per-prompt drill-down ---------------------------------------------------------------

from test_cli import math_file, run_args, tiny_model_dir  # noqa: E402,F401 (fixtures)


@pytest.fixture(scope="module")
def drilldown_page(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:  # noqa: F811
    """A real tree: eager_adapt on the tiny random model (it forks at once and reallocates),
    reported without plots so the trees are near the top of the page."""
    from eager_eval.frontends.cli import main as cli

    root = tmp_path_factory.mktemp("drilldown")
    data = root / "math.jsonl"
    data.write_text("".join(f'{{"problem": "what is {i} + 4", "answer": "{i + 4}"}}\n'
                            for i in range(3, 7)))
    assert cli.main(run_args(tiny_model_dir, data, root / "run", "--mode", "eager_adapt")) == 0
    build_report([root / "run"], root / "out", plots=False, warn=None)
    return root / "out" / "leaderboard.html", root / "run"


def test_dom_has_a_collapsible_tree_per_prompt(drilldown_page, tmp_path):
    import json

    html, run_dir = drilldown_page
    done = _chromium(tmp_path / "profile", "--dump-dom", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    records = [json.loads(line) for line in (run_dir / "eager_adapt.jsonl").read_text().splitlines()]
    assert dom.count('<details class="run"') == 1
    assert dom.count('<details class="prompt"') == len(records) == 4
    assert len(re.findall(r'<details class="prompt" id="[^"]+" open="">', dom)) == 1
    forks = sum(len(r["forks"]) for r in records)
    assert len(re.findall(r'<span class="fork">fork @ token \d', dom)) == forks > 0
    assert dom.count('<span class="ctx">') == forks  # the text around every fork
    event = records[0]["forks"][0]
    assert f"fork @ token {event['position']} · H {event['entropy']:.3f} &gt; τ" in dom


def test_screenshot_shows_the_open_tree(drilldown_page, tmp_path):
    html, _ = drilldown_page
    pixels = _screenshot(html, tmp_path, 1600)
    # Fork labels are #cc00cc; nothing else on the page is: the open prompt's tree is painted.
    magenta = ((abs(pixels[..., 0] - 0xCC / 255) < 0.1) & (pixels[..., 1] < 0.2)
               & (abs(pixels[..., 2] - 0xCC / 255) < 0.1))
    assert magenta.sum() > 30
