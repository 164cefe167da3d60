"""Size and opening time of the interactive ΔLP page for a long document (not a test: it prints figures).

    python benchmarks/bench_page.py                  # 2,000 tokens, window 50
    python benchmarks/bench_page.py --tokens 5000 --window 100

The page's size and speed depend only on how many (target, source) values it holds, so the rows are made up
(random ΔLP values, word-like tokens) instead of computed. The page is written to a temporary file and opened
in Debian's Chromium (through Playwright, as the browser test does): the time from navigation to the rendered
text, and the time to select a target (click) until its sources are shaded, are the medians of five tries.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def synthetic_rows(tokens: int, window: int, seed: int = 0) -> list[dict]:
    """ΔLP-table rows of one document of ``tokens`` tokens: every target with the sources in its window."""
    rng = random.Random(seed)
    words = [" " + "".join(rng.choice("etaoinshrdlu") for _ in range(rng.randint(2, 8))) for _ in range(tokens)]
    rows = []
    for t in range(tokens):
        lp = -rng.expovariate(0.3)
        for s in range(max(-1, t - window), t):
            delta = rng.gauss(0, 0.5)
            rows.append({"document": 0, "target_index": t, "target_token": words[t], "source_index": s,
                         "source_token": "<s>" if s < 0 else words[s], "lp": lp, "lp_without": lp - delta,
                         "delta_lp": delta, "distance": t - s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from huggingface_patch.attribution.page import deltalp_page, page_data

    rows = synthetic_rows(args.tokens, args.window)
    start = time.perf_counter()
    page = deltalp_page(page_data(rows, 0, {"window": args.window, "units": "bits"}), "benchmark")
    build = time.perf_counter() - start
    print(f"{args.tokens} tokens, window {args.window}: {len(rows):,} (target, source) values")
    print(f"  page: {len(page.encode('utf-8')) / 2**20:.2f} MiB, built in {build:.2f} s")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "page.html")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)
        opened, selected = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            for _ in range(5):
                tab = browser.new_page()
                start = time.perf_counter()
                tab.goto(f"file://{path}")
                tab.wait_for_selector(".tok")
                opened.append(time.perf_counter() - start)
                last = tab.locator(".tok").nth(args.tokens)  # the document's last token (after the start token)
                start = time.perf_counter()
                last.click()
                tab.wait_for_function("document.querySelectorAll('.tok[style*=\"background\"]').length > 1")
                selected.append(time.perf_counter() - start)
                tab.close()
            browser.close()
    print(f"  opens in {statistics.median(opened):.2f} s (Chromium, headless; median of 5)")
    print(f"  selecting the last token as the target shades its sources in {statistics.median(selected) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
