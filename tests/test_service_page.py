"""The pages in a real headless browser (Debian's chromium, driven over the DevTools protocol):
sign in through the form with a read token, then a screenshot of the history page whose pixels
must show the plot's blue line and points, grey error bars and dark text on white."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("starlette")
from PIL import Image  # noqa: E402

from support.browser import Browser, chromium  # noqa: E402
from fastfid.client import Service  # noqa: E402
from fastfid.uncertainty import split_into_shards  # noqa: E402
from support.service import Server, features, make_token, stats_of  # noqa: E402

BLUE = np.array([0x1F, 0x77, 0xB4])  # the line and points (history.plot)
GREY = np.array([0x77, 0x77, 0x77])  # the error bars


def pixels_near(image: np.ndarray, colour: np.ndarray, tolerance: int = 40) -> np.ndarray:
    return np.abs(image.astype(int) - colour).max(axis=-1) <= tolerance


def test_sign_in_then_the_history_page_renders_in_chromium(tmp_path, rng):
    browser = chromium() or pytest.skip("no headless browser: apt-get install chromium")
    store = tmp_path / "store"
    token, read = make_token(store, "ci", "admin"), make_token(store, "viewer", "read")
    with Server(store) as server, Browser(browser, 800, 700) as page:
        client = Service(server.url, token)
        client.upload_reference("golden", stats_of(rng, 2000, 16))
        for step, shift in (("10k", 0.8), ("20k", 0.5), ("30k", 0.3), ("40k", 0.2)):
            client.evaluate(model="ddpm", checkpoint=step, reference="golden", feature_space="test-space",
                            shards=split_into_shards(features(rng, 800, 16, shift=shift), 8))
        page.navigate(f"{server.url}/models/ddpm")  # no token yet: the sign-in form, which comes back here
        assert "Read token" in page.evaluate("document.body.innerText")
        page.evaluate(f"document.querySelector('input[name=token]').value = {read!r};"
                      "document.querySelector('form[action=\"/signin\"]').submit()")
        page.wait_for("Page.loadEventFired")
        assert page.evaluate("location.pathname") == "/models/ddpm"
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script on the page can read it
        [cookie] = [c for c in page.cookies() if c["name"] == "fastfid_read"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        screenshot = page.screenshot()
        page.navigate(f"{server.url}/")  # the index, with the same cookie
        index = page.evaluate("document.body.innerText")
        assert "ddpm" in index and "golden" in index and "Sign out" in index
    image = np.asarray(Image.open(io.BytesIO(screenshot)).convert("RGB"))
    assert image.shape[:2] == (700, 800)
    blue, grey = pixels_near(image, BLUE), pixels_near(image, GREY, tolerance=20)
    white = (image > 245).all(axis=-1)
    assert white.mean() > 0.6  # a page, not an error screen
    assert blue.sum() > 1500  # four points (r = 5) and three line segments, 3 px wide
    assert grey.sum() > 100  # the error bars
    # FID falls over the checkpoints: the blue points descend from left to right.
    columns = np.nonzero(blue.any(axis=0))[0]
    left, right = columns.min(), columns.max()
    assert right - left > 400  # the line spans the plot
    height_left = np.nonzero(blue[:, left:left + 10].any(axis=1))[0].mean()
    height_right = np.nonzero(blue[:, right - 10:right + 1].any(axis=1))[0].mean()
    assert height_left < height_right  # image rows grow downwards: a high FID is near the top
    dark_text = (image < 80).all(axis=-1)
    assert dark_text.sum() > 500  # the title, axes and table
