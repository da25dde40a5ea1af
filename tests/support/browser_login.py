"""A stand-in for the user at a browser: `python browser_login.py URL`.

Used as $BROWSER by the browser test: Python's webbrowser runs it with the sign-in
URL. It drives Debian's Chromium (headless, through Playwright) to fill the sign-in
page with ALAI_TEST_LOGIN_USER / ALAI_TEST_LOGIN_PASSWORD, submit, and wait for the
CLI's "Signed in" page on localhost. Exit 0 only if that page appeared.
"""

from __future__ import annotations

import os
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("ALAI_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]


def main(url: str) -> int:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.fill("#username", os.environ["ALAI_TEST_LOGIN_USER"])
            page.fill("#password", os.environ["ALAI_TEST_LOGIN_PASSWORD"])
            page.click("#sign-in")
            page.wait_for_selector("text=Signed in to alai", timeout=20_000)
            shot = os.environ.get("ALAI_TEST_SCREENSHOT")
            if shot:
                page.screenshot(path=shot)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
