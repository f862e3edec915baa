"""Screenshot a report page in headless Chromium, so that it can be looked at.

    python scripts/screenshot_report.py runs/seed48-quick/report/report.html shot.png

Needs Debian's chromium (``apt-get install -y chromium``) and the playwright package (dev extra);
prints any console message or page error the page produced, and exits 1 if there was one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def screenshot(page_path: Path, image: Path, width: int = 1280, full_page: bool = True) -> list:
    """Load the page, save a screenshot, and return the console messages and page errors."""
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise RuntimeError("chromium not found: apt-get install -y chromium")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.on("console", lambda message: problems.append(f"console {message.type}: "
                                                           f"{message.text}"))  # fmt: skip
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.screenshot(path=str(image), full_page=full_page)
        browser.close()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    problems = screenshot(args.page, args.image, args.width)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"screenshot written to {args.image}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
