"""The playground's page weight and paint times in headless chromium, against a one-line page (issue 15).

    python bench/playground.py [--runs 7]

Serves the playground (lamina-playground) from a real Lamina server in front of the e2e fake upstream, sums the
compressed (gzip, as served) and raw bytes of every file the page loads, then loads the page `--runs` times in
Debian's headless chromium (selenium, /usr/bin/chromedriver, browser cache off) and reports the medians of first
paint, first contentful paint, DOMContentLoaded and load, and of "ready" (the model list filled from /v1/models),
next to the same figures for a one-line HTML page served over loopback by Python's http.server: the ratio is what
the playground costs over the cheapest possible page on the same machine.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from browser import browser, missing  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from lamina.testing import serve  # noqa: E402
from playground_config import playground_config  # noqa: E402

BASELINE = b"<!doctype html><html lang=en><title>baseline</title><p>Hello.</p>"
TIMINGS = """
const paint = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
const nav = performance.getEntriesByType('navigation')[0];
return {first_paint: paint['first-paint'], fcp: paint['first-contentful-paint'],
        dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd};
"""


def page_weight(site: str) -> tuple[int, int, list[str]]:
    """Compressed and raw bytes of the page and every file it loads, found the way the browser finds them."""
    wanted, seen, compressed, raw = ["playground/"], [], 0, 0
    while wanted:
        path = wanted.pop()
        if path in seen:
            continue
        seen.append(path)
        response = requests.get(f"{site}/{path}", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
        response.raise_for_status()
        body = response.raw.read()  # as sent: gzip
        text = gzip.decompress(body) if response.headers.get("content-encoding") == "gzip" else body
        compressed, raw = compressed + len(body), raw + len(text)
        folder = path.rsplit("/", 1)[0] + "/"
        for link, module in re.findall(r'(?:src|href)="([^":]+)"|from "\./([\w.]+)"', text.decode()):
            wanted.append(folder + (link or module))
    return compressed, raw, seen


class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(BASELINE)))
        self.end_headers()
        self.wfile.write(BASELINE)

    def log_message(self, *args: Any) -> None:
        pass


def load_times(driver: Any, url: str, ready: str | None) -> dict[str, float]:
    driver.get("about:blank")
    start = time.perf_counter()
    driver.get(url)  # returns after the load event
    if ready:
        while not driver.execute_script(ready):
            time.sleep(0.005)
    ready_ms = (time.perf_counter() - start) * 1000
    while None in (figures := driver.execute_script(TIMINGS)).values():  # paint entries land a frame later
        time.sleep(0.01)
    return {**figures, "ready": ready_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if reason := missing():
        sys.exit(f"cannot run: {reason}")
    baseline_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=baseline_server.serve_forever, daemon=True).start()
    baseline_url = f"http://127.0.0.1:{baseline_server.server_address[1]}/"
    with FakeOpenAI() as fake, serve(playground_config(fake)) as api, tempfile.TemporaryDirectory() as tmp:
        site = api.removesuffix("/v1")
        compressed, raw, files = page_weight(site)
        print(f"page weight: {compressed / 1024:.1f} KiB compressed, {raw / 1024:.1f} KiB raw, {len(files)} files")
        driver = browser(Path(tmp) / "profile")
        try:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
            ready = "return document.querySelectorAll('#chat-model option').length > 0"
            load_times(driver, f"{site}/playground/", ready)  # warm-up: chromium's own first-run work
            load_times(driver, baseline_url, None)
            runs = {"baseline": [], "playground": []}
            for _ in range(args.runs):
                runs["baseline"].append(load_times(driver, baseline_url, None))
                runs["playground"].append(load_times(driver, f"{site}/playground/", ready))
        finally:
            driver.quit()
    baseline_server.shutdown()
    print(f"median of {args.runs} loads, browser cache off, ms since navigation start:")
    print(f"{'page':<12}{'first paint':>13}{'FCP':>9}{'DOMContentLoaded':>18}{'load':>9}{'ready':>9}")
    medians = {}
    for page, samples in runs.items():
        medians[page] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        m = medians[page]
        row = f"{m['first_paint']:>13.0f}{m['fcp']:>9.0f}{m['dcl']:>18.0f}{m['load']:>9.0f}{m['ready']:>9.0f}"
        print(f"{page:<12}{row}")
    ratio = medians["playground"]["fcp"] / medians["baseline"]["fcp"]
    print(f"first contentful paint: playground / one-line page = {ratio:.2f}x")


if __name__ == "__main__":
    main()
