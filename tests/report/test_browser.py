"""The report in a real browser: headless Chromium renders every section and image,
with no console error, no network request and no script; and the checker fails on a
deliberately broken page. Skipped only when Chromium is missing outside CI."""

from __future__ import annotations

import base64
import io
import os
import re

import pytest

from .browser import check_page, chromium
from .test_report import SECTION_IDS, hostile_report

pytestmark = pytest.mark.skipif(chromium() is None and not os.environ.get("CI"),
                                reason="chromium is not installed (CI installs it)")


def assert_not_blank(png: bytes) -> None:
    from PIL import Image

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1280, 1600)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, charts: many colours
    extrema = image.getextrema()
    assert any(low != high for low, high in extrema)


def test_report_renders_in_chromium(small_report, small_html, tmp_path):
    page = check_page(small_report[0])
    assert page.problems() == []
    assert [s["id"] for s in page.sections] == SECTION_IDS
    assert all(s["visible"] and s["heading"] for s in page.sections)
    assert len(page.images) == small_html.count("<img ") == 10
    assert all(image["ok"] and image["width"] > 100 for image in page.images)
    assert page.scripts == 0
    (tmp_path / "screenshot.png").write_bytes(page.screenshot)
    assert_not_blank(page.screenshot)


def test_checker_reports_a_broken_page(small_html, tmp_path):
    """A corrupt image, a script error, a console error and a missing file are caught."""
    broken = re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", small_html)
    first = re.search(r'src="data:image/png;base64,([^"]+)"', broken)
    garbage = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really a png").decode()
    broken = broken.replace(first[1], garbage, 1)
    broken = broken.replace("</body>", '<img src="missing.png" alt="missing file">'
                            '<script>console.error("deliberate console error");'
                            'undefinedFunction();</script></body>')
    path = tmp_path / "broken.html"
    path.write_text(broken)
    page = check_page(path)
    assert page.broken_images == ["composition charts", "missing file"]
    errors = " | ".join(page.errors)
    assert "deliberate console error" in errors
    assert "undefinedFunction is not defined" in errors
    assert "ERR_FILE_NOT_FOUND" in errors
    assert len(page.problems()) >= 5


def test_checker_reports_network_requests_and_dialogs(small_html, tmp_path):
    """Without the page's content policy a remote image would be fetched: reported."""
    page_html = re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", small_html)
    page_html = page_html.replace("</body>", '<img src="http://127.0.0.1:9/x.png" alt="remote">'
                                  "<script>alert('hi')</script></body>")
    path = tmp_path / "remote.html"
    path.write_text(page_html)
    page = check_page(path)
    assert page.requests == ["http://127.0.0.1:9/x.png"]
    assert page.dialogs == ["hi"]


def test_content_policy_blocks_what_slips_in(small_html, tmp_path):
    """The report's own policy refuses remote resources and inline scripts (the checker
    still reports the attempted request: it counts attempts, not successes)."""
    path = tmp_path / "policy.html"
    path.write_text(small_html.replace("</body>", '<img src="http://127.0.0.1:9/x.png" '
                                       'alt="remote"><script>alert(1)</script></body>'))
    page = check_page(path)
    assert page.dialogs == []
    assert page.broken_images == ["remote"]
    assert page.requests == ["http://127.0.0.1:9/x.png"]
    assert any("Content Security Policy" in error for error in page.errors)


def test_hostile_names_stay_text_in_the_browser(small_db, tmp_path):
    path = tmp_path / "hostile.html"
    path.write_text(hostile_report(small_db))
    page = check_page(path)
    assert page.problems() == []
    assert page.scripts == 0
    assert [s["id"] for s in page.sections] == SECTION_IDS
