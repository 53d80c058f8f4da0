"""Headless Chromium for tests: open one page and return what a user would see and what went wrong.

It drives Debian's chromium (/usr/bin/chromium; CI installs it) through playwright and never downloads
a browser: a missing chromium is an error telling how to install it, never a skip. Every request the
page makes is observed; any that is not file: or data: (or http://127.0.0.1 when asked, for a local
server such as the Dagster UI) is refused and reported, so a page that needs the network shows it.

Pixel statistics are decoded by the same Chromium (a canvas over the PNG): no image library needed.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync")
LOCAL_HTTP = ("http://127.0.0.1:", "http://127.0.0.1/", "ws://127.0.0.1:")  # ws: the Dagster UI's GraphQL

_PIXELS = """async ({png, clip}) => {
  const image = new Image();
  image.src = "data:image/png;base64," + png;
  await image.decode();
  const [x, y, width, height] = clip || [0, 0, image.naturalWidth, image.naturalHeight];
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(image, x, y, width, height, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, width, height).data;
  const colours = new Map();
  for (let i = 0; i < pixels.length; i += 4) {
    const rgb = (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
    colours.set(rgb, (colours.get(rgb) || 0) + 1);
  }
  const hex = (rgb) => "#" + rgb.toString(16).padStart(6, "0");
  let commonest = 0, background = 0;
  const solid = {};
  colours.forEach((count, rgb) => {
    if (count > commonest) { commonest = count; background = rgb; }
    if (count >= 50) solid[hex(rgb)] = count;
  });
  return {width, height, distinct_colours: colours.size, background_share: commonest / (width * height),
          background: hex(background), solid};
}"""


class BrowserMissing(RuntimeError):
    """Debian's chromium is not installed; the tests that need it fail with the command that installs it."""


@dataclass(frozen=True)
class PixelStatistics:
    width: int
    height: int
    distinct_colours: int
    background_share: float  # the share of pixels of the commonest colour: 1.0 for a blank image
    background: str  # the commonest colour, "#rrggbb"
    solid: dict[str, int] = field(default_factory=dict)  # colours of 50 pixels or more (areas, not anti-aliasing)


@dataclass(frozen=True)
class PageVisit:
    url: str
    screenshot: bytes  # PNG
    pixels: PixelStatistics  # of the whole screenshot
    console_errors: list[str]
    page_errors: list[str]
    refused_requests: list[str]  # requests that would have left the machine (or the allowed local server)
    evaluated: Any  # what `evaluate` returned, after `ready`
    seconds: float  # from navigation to `ready` (to the load event without one)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for


def chromium() -> Path:
    """Debian's chromium, or BrowserMissing saying how to install it."""
    if CHROMIUM.is_file() or shutil.which("chromium"):
        return CHROMIUM if CHROMIUM.is_file() else Path(str(shutil.which("chromium")))
    raise BrowserMissing(f"{CHROMIUM} is missing: run `apt-get install -y chromium` (Debian's chromium; "
                         f"bin/setup and .ci/run install it); these tests never download a browser")


def allowed(url: str, allow_local_http: bool) -> bool:
    """Whether the page may load `url`: its own files and inline data, and the local server when asked."""
    return url.startswith(("file:", "data:", "about:", "blob:")) or (allow_local_http and url.startswith(LOCAL_HTTP))


def open_page(url: str, *, evaluate: str | None = None, ready: str | None = None, allow_local_http: bool = False,
              width: int = 1200, height: int = 900, full_page: bool = True,
              timeout_s: float = 60, interact: Callable[[Page], None] | None = None) -> PageVisit:
    """Load `url` in a fresh headless Chromium, let `interact` act on the page as a user would (e.g. click
    a tab), wait until the JS expression `ready` is true, then screenshot the page and evaluate `evaluate`
    (a JS function or expression) in it.

    A `url` that is itself refused (http://127.0.0.1 without `allow_local_http`) raises playwright's Error
    (net::ERR_BLOCKED_BY_CLIENT)."""
    from playwright.sync_api import Request, Route, sync_playwright

    executable = chromium()
    console_errors: list[str] = []
    page_errors: list[str] = []
    refused: list[str] = []
    requests: list[str] = []

    def route(route: Route, request: Request) -> None:
        if allowed(request.url, allow_local_http):
            route.continue_()
        else:
            refuse(request.url)
            route.abort("blockedbyclient")

    def refuse(url: str) -> None:
        if url not in refused:
            refused.append(url)

    def observe(request: Request) -> None:
        requests.append(request.url)
        if not allowed(request.url, allow_local_http):
            refuse(request.url)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=list(LAUNCH_ARGS),
                                             timeout=timeout_s * 1000)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
            context.route("**/*", route)
            context.on("request", observe)
            page = context.new_page()
            page.on("websocket", lambda socket: None if allowed(socket.url, allow_local_http) else refuse(socket.url))
            page.on("console", lambda message: console_errors.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            started = time.perf_counter()
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            if interact:
                interact(page)
            if ready:
                page.wait_for_function(ready, timeout=timeout_s * 1000)
            seconds = time.perf_counter() - started
            screenshot = page.screenshot(full_page=full_page, timeout=timeout_s * 1000)
            evaluated = page.evaluate(evaluate) if evaluate else None
            pixels = _pixel_statistics(context.new_page(), screenshot, None)
        finally:
            browser.close()
    return PageVisit(url=url, screenshot=screenshot, pixels=pixels, console_errors=console_errors,
                     page_errors=page_errors, refused_requests=refused, evaluated=evaluated, seconds=seconds,
                     requests=requests)


def pixel_statistics(png: bytes, clips: list[tuple[int, int, int, int]]) -> list[PixelStatistics]:
    """Statistics of rectangles (x, y, width, height) of a PNG, e.g. each chart of a screenshot, decoded by
    Chromium (one browser for all of them)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()), args=list(LAUNCH_ARGS))
        try:
            page = browser.new_page()
            return [_pixel_statistics(page, png, clip) for clip in clips]
        finally:
            browser.close()


def _pixel_statistics(page: Page, png: bytes, clip: tuple[int, int, int, int] | None) -> PixelStatistics:
    found = page.evaluate(_PIXELS, {"png": base64.b64encode(png).decode("ascii"), "clip": list(clip) if clip else None})
    return PixelStatistics(**found)
