"""Screenshots of what a class sees, in headless Chromium (Debian's chromium and chromium-driver):

- report-1280x800.png, report-390x844.png: the top of the HTML report of the committed cnn study
  (`fmtransfer study report docs/study/records/cnn-draws --html ...`) on a projector and a phone;
- report-390x844-leaderboard.png: its first leaderboard on the phone;
- findings-1280x800.png, findings-1280x800-claim.png: the documentation site's "What we found"
  page (`make docs`), its top and its first claim;
- layout.json: the layout checks of tests/test_html_report.py at each size, on this report.

    python docs/screenshots/take.py     # from the repository's root; a minute or two

Run by hand when the report's or the findings' look changes, and the PNGs committed; the tests
check the same layout on a small study of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
STUDY = "cnn-draws"
SIZES = ((1280, 800), (390, 844))


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


def viewport(driver, width: int, height: int) -> None:
    """Make the page's viewport (not the window) width x height."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from fmtransfer.study.html_report import LAYOUT_PROBE

    with tempfile.TemporaryDirectory() as tmp:
        # A copy: the report draws its plots into the study's folder.
        shutil.copytree(ROOT / "docs" / "study" / "records" / STUDY, Path(tmp, STUDY),
                        ignore=shutil.ignore_patterns("plots"))
        subprocess.run([sys.executable, "-m", "fmtransfer.cli", "study", "report", STUDY, "--html", "report.html"],
                       cwd=tmp, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir",
                        str(Path(tmp, "site"))], cwd=ROOT, check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
        driver = browser()
        layout = {}
        try:
            for width, height in SIZES:
                viewport(driver, width, height)
                driver.get(Path(tmp, "report.html").as_uri())
                driver.save_screenshot(str(OUT / f"report-{width}x{height}.png"))
                checks = driver.execute_script(LAYOUT_PROBE)
                driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
                opened = driver.execute_script(LAYOUT_PROBE)
                layout[f"{width}x{height}"] = {k: checks[k] for k in ("innerWidth", "scrollWidth", "scrollHeight", "cells",
                                                                      "minSlack")} | {
                    "images": len(checks["images"]), "images_loaded": sum(checks["images"]),
                    "too_narrow": checks["tight"], "details_opened": {
                        k: opened[k] for k in ("scrollWidth", "cells", "minSlack")} | {"too_narrow": opened["tight"]}}
                if width < 600:
                    driver.get(Path(tmp, "report.html").as_uri())
                    driver.execute_script("document.querySelector('table.leaderboard').previousElementSibling"
                                          ".scrollIntoView()")
                    driver.save_screenshot(str(OUT / f"report-{width}x{height}-leaderboard.png"))
            viewport(driver, 1280, 800)
            driver.get(Path(tmp, "site", "findings.html").as_uri())
            driver.save_screenshot(str(OUT / "findings-1280x800.png"))
            layout["findings 1280x800"] = driver.execute_script(
                "return {scrollWidth: document.documentElement.scrollWidth, "
                "scrollHeight: document.documentElement.scrollHeight}")
            driver.execute_script("document.querySelector('article h3').scrollIntoView(); window.scrollBy(0, -64)")
            driver.save_screenshot(str(OUT / "findings-1280x800-claim.png"))
        finally:
            driver.quit()
    (OUT / "layout.json").write_text(json.dumps(layout, indent=2) + "\n")
    print(json.dumps(layout, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
