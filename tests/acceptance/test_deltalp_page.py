"""The interactive ΔLP page in a real browser (Debian's Chromium, driven by Playwright).

The page of a tiny model's corpus is loaded from ``file://``; a target is clicked, and the shading of every
source and the values in the side panel must be what ``deltalp.csv`` says for that target; the lens mode and
its layer slider show the lens values. CI installs Chromium and sets ``HFP_REQUIRE_BROWSER=1``, so there a
missing browser fails instead of skipping.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil

import pytest

from analysis import deltalp as deltalp_cli
from huggingface_patch.testing import save_tiny_model

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TEXT = "!ARTICLE\nThe keys to the old cabinet are on the table.\n!ARTICLE\nA dog ran home, then slept.\n"


def _browser():
    if CHROMIUM is None or not _has_playwright():
        if os.environ.get("HFP_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium and Playwright are required here (HFP_REQUIRE_BROWSER=1)")
        pytest.skip("needs Debian's chromium and the playwright package")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def _colour(value: float, bound: float) -> tuple[int, ...]:
    """What the page computes: white blended towards red (positive) or blue (negative) by |value| / bound."""
    x = max(-1.0, min(1.0, value / bound))
    target = (178, 24, 43) if x > 0 else (33, 102, 172)
    return tuple(round(255 + (c - 255) * abs(x)) for c in target)


def _rgb(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", text)[:3])


@pytest.fixture(scope="module")
def page_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    corpus = root / "corpus.sentitems"
    corpus.write_text(TEXT, encoding="utf-8")
    model = save_tiny_model("gpt2", str(root / "tiny-gpt2"))
    out = root / "out"
    assert deltalp_cli.main(["--model", model, "--corpus", str(corpus), "--window", "6", "--html", "--lens",
                             "--plot-range", "0:0-12", "--output-dir", str(out)]) == 0
    return out


def test_page_is_self_contained(page_folder):
    text = (page_folder / "deltalp_doc0.html").read_text(encoding="utf-8")
    assert "<script src" not in text and "<link" not in text and "http://" not in text and "https://" not in text
    data = json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S).group(1))
    assert data["settings"]["window"] == 6 and data["lens"], "the lens data is in the page"


def test_clicking_a_target_shades_its_sources_as_the_table_says(page_folder):
    with open(page_folder / "deltalp.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["document"] == "0"]
    target = 9
    mine = {int(r["source_index"]): float(r["delta_lp"]) for r in rows if int(r["target_index"]) == target}
    bound = max(abs(v) for v in mine.values())
    with _browser() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                       "--disable-background-networking"])
        page = browser.new_page()
        page.goto((page_folder / "deltalp_doc0.html").as_uri())
        page.click(f'#text .tok[data-index="{target}"]')
        shading = page.eval_on_selector_all("#text .tok", "spans => spans.map(s => [Number(s.dataset.index), "
                                                          "getComputedStyle(s).backgroundColor])")
        panel = page.inner_text("#panel")
        assert page.get_attribute("#panel", "data-target") == str(target)
        for index, colour in shading:
            if index in mine:
                # the page holds ΔLP to 4 decimals: one unit of a colour channel either way
                expected = _colour(mine[index], bound)
                assert max(abs(a - b) for a, b in zip(_rgb(colour), expected)) <= 1, f"source {index}: {colour}"
            else:
                assert colour in ("rgba(0, 0, 0, 0)", "transparent"), f"token {index} outside the window is shaded"
        for value in mine.values():
            assert f"{value:.3f}" in panel
        lp = float(next(r["lp"] for r in rows if int(r["target_index"]) == target))
        assert f"LP = {lp:.3f} bits" in panel

        page.check('input[value="lens"]')
        page.fill("#layer", "0")
        page.dispatch_event("#layer", "input")
        lens_panel = page.inner_text("#panel")
        assert "logit contribution" in lens_panel and "layer emb" in lens_panel
        browser.close()


def test_notebook_view_is_the_page_in_a_working_frame(page_folder):
    """``DeltaLPStudy._repr_html_`` (what a notebook shows) embeds exactly the page of the first document, and
    the embedded page works: clicking a token inside the frame shades its sources."""
    import html

    from huggingface_patch.attribution import DeltaLPStudy

    with open(page_folder / "deltalp.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    settings = json.loads((page_folder / "deltalp_summary.json").read_text(encoding="utf-8"))
    study = DeltaLPStudy(rows=rows, summary={}, settings=settings)
    shown = study._repr_html_()
    source = re.search(r'srcdoc="([^"]*)"', shown)
    assert source and html.unescape(source.group(1)) == study.page("0")
    assert 'sandbox="allow-scripts"' in shown
    target = 9
    expected = {int(r["source_index"]) for r in rows if r["document"] == "0" and int(r["target_index"]) == target}
    with _browser() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.set_content(f"<html><body>{shown}</body></html>")
        frame = page.frame_locator("iframe")
        frame.locator(f'#text .tok[data-index="{target}"]').click()
        shaded = frame.locator("#text .tok").evaluate_all(
            "spans => spans.filter(s => s.style.background).map(s => Number(s.dataset.index))")
        assert set(shaded) == expected, (sorted(shaded), sorted(expected))
        browser.close()
