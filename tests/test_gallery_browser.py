"""The gallery page in a real browser: Chromium (the Debian package) driven by Playwright through
``executable_path`` - never ``playwright install``.  One browser for the module.  Skipped, with
the reason, only where no Chromium binary or no playwright package is found."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = next((p for p in (os.environ.get("SEPNMS_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
try:
    import playwright.sync_api  # noqa: F401
    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; .ci/run does)"),
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="no playwright package (pip install -e '.[test]')"),
]

PAGE_SIZE = 4


@pytest.fixture(scope="module")
def site(evaluated, tmp_path_factory):
    """A gallery over a workdir with a second stage, an ``M@X`` row, an expression holding HTML
    and two ``show`` figures; page_size 4.  Returns (page path, its data, config)."""
    from _gallery import read_page, with_second_stage
    from sepnms.engine.look.gallery import gallery
    from sepnms.engine.look.show import show

    cfg, _ = evaluated
    cfg2, _ = with_second_stage(cfg, tmp_path_factory.mktemp("browser") / "w", xss=True)
    cfg2.gallery.page_size = PAGE_SIZE
    show(cfg2, ["det", "sepnms"], "val", n=2, progress=False)
    page = gallery(cfg2, progress=False)
    return page, read_page(page.read_text())["data"], cfg2


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def tab(browser, site):
    """A fresh page with the gallery open; ``tab.dialogs`` collects any dialog that opens and
    ``tab.errors`` any script error."""
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(site[0].as_uri())
    page.wait_for_selector("body[data-ready='1']")
    yield page
    assert page.errors == []
    page.close()


def _count(tab) -> tuple[int, int, int, int]:
    m = re.fullmatch(r"(\d+) of (\d+) expressions; page (\d+) of (\d+)", tab.inner_text("#count"))
    assert m, tab.inner_text("#count")
    return tuple(int(v) for v in m.groups())


def test_every_visible_card_has_its_svg_boxes(tab, site):
    _, data, _ = site
    by_id = {c["s"]: c for c in data["cards"]}
    tab.wait_for_function("Array.from(document.querySelectorAll('.card img')).every(i => i.complete)")
    cards = tab.query_selector_all(".card")
    assert len(cards) == PAGE_SIZE
    for card in cards:
        c = by_id[int(card.get_attribute("data-sent-id"))]
        # the image file itself, loaded from its relative path
        assert card.eval_on_selector("img", "i => i.naturalWidth") == data["images"][c["i"]][1]
        for j in range(len(data["methods"])):
            fg = card.query_selector_all(f"svg g.m{j} rect.fg")
            assert c["m"][j][0] >= 1
            assert len(fg) == (c["m"][j][0] if data["methods"][j]["visible"] else 0)  # toggled off: not drawn
            assert all(r.is_visible() for r in fg)
        assert len(card.query_selector_all("svg g.gt rect.fg")) == 1
        assert len(card.query_selector_all("svg g.ctx rect.fg")) == len(c["c"]) // 4
        # the SVG lies exactly over the image
        img, svg = card.query_selector("img").bounding_box(), card.query_selector("svg").bounding_box()
        assert all(abs(img[k] - svg[k]) < 1.0 for k in ("x", "y", "width", "height"))


def test_each_filter_count_equals_the_cards_data(tab, site):
    _, data, cfg = site
    import json

    metrics = json.loads((Path(cfg.workdir) / "eval" / "metrics.json").read_text())
    cards, splits = data["cards"], data["splits"]
    total = len(cards)
    assert _count(tab)[:2] == (total, total)
    checked = 0
    for si, split in enumerate(splits):
        tab.select_option("#f-split", str(si))
        n_split = sum(c["p"] == si for c in cards)
        assert _count(tab)[0] == n_split == metrics["det"][split]["n_expressions"]
        for j, m in enumerate(data["methods"]):
            options = tab.eval_on_selector(f"#f-m{j}", "s => Array.from(s.options).map(o => o.value)")
            assert options == (["", "h1", "h0", "g1", "g0"] if m["second_stage"] else ["", "h1", "h0"])
            for v in options[1:]:
                tab.select_option(f"#f-m{j}", v)
                field, want = (1, int(v[1])) if v[0] == "h" else (3, int(v[1]))
                n = sum(c["p"] == si and c["m"][j][field] == want for c in cards)
                assert _count(tab)[0] == n, (split, m["name"], v)
                if v == "h1" and "@" not in m["name"]:  # the helper copied its M@X row's numbers
                    mm = metrics[m["name"]][split]
                    assert n == round(mm["hit_rate"] * mm["n_expressions"])
                shown = len(tab.query_selector_all(".card"))
                assert shown == min(PAGE_SIZE, n)
                checked += 1
            tab.select_option(f"#f-m{j}", "")
    tab.select_option("#f-split", "")
    word = cards[1]["t"].split()[-1].lower()
    tab.fill("#f-text", word)
    assert _count(tab)[0] == sum(word in c["t"].lower() for c in cards)
    assert checked >= 3 * 7


def test_pager_resets_the_scroll_disables_its_ends_and_keeps_the_page_in_the_url(tab, site, browser):
    n = len(site[1]["cards"])
    pages = -(-n // PAGE_SIZE)
    assert pages >= 3
    assert tab.is_disabled("#prev") and not tab.is_disabled("#next")
    tab.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert tab.evaluate("window.scrollY") > 200
    tab.click("#next")
    assert _count(tab)[2:] == (2, pages) and tab.evaluate("location.hash") == "#page=2"
    first = tab.query_selector(".card").bounding_box()
    bar = tab.query_selector("#bar").bounding_box()
    assert bar["height"] - 1 <= first["y"] <= bar["height"] + 40  # the first card, just under the sticky bar
    tab.click("#prev")
    assert _count(tab)[2] == 1 and tab.is_disabled("#prev")
    # a shared view opens on its page; the last page has next disabled
    other = browser.new_page()
    other.goto(site[0].as_uri() + f"#page={pages}")
    other.wait_for_selector("body[data-ready='1']")
    assert _count(other)[2] == pages and other.is_disabled("#next") and not other.is_disabled("#prev")
    other.close()


def test_an_expression_holding_html_is_shown_not_run(tab, site):
    from _gallery import XSS

    tab.fill("#f-text", "onerror")
    assert _count(tab)[0] == 1
    tab.wait_for_timeout(300)
    assert tab.inner_text(".card .text") == XSS
    assert tab.query_selector(".card .text img") is None
    assert tab.dialogs == []


def test_box_details_on_hover_and_click_and_method_toggles(tab, site):
    _, data, _ = site
    j = [m["name"] for m in data["methods"]].index("sepnms")
    card = tab.query_selector(".card")
    c = next(c for c in data["cards"] if c["s"] == int(card.get_attribute("data-sent-id")))
    title = card.eval_on_selector(f"svg g.m{j} g.box title", "t => t.textContent")
    k = c["m"][j][0]
    ranking = c["r"][data["methods"][j]["base"]]
    top = ranking[1] / data["scale"]
    category = data["categories"][data["images"][c["i"]][3][5 * ranking[0] + 4]]
    # boxes are drawn lowest rank first: the last <g.box> is the top-1
    last = card.query_selector_all(f"svg g.m{j} g.box")[-1]
    line = last.eval_on_selector("title", "t => t.textContent")
    assert line.startswith(f"sepnms - {category} - score {top:.3f} - rank 1 of {k}") and title
    last.dispatch_event("click")
    assert card.eval_on_selector(".info", "e => e.textContent") == line
    # the toggle hides and shows the method's boxes
    sel = f".card[data-sent-id='{c['s']}'] svg g.m{j} rect.fg"
    assert len(tab.query_selector_all(sel)) == k
    tab.uncheck(f"#t-m{j}")
    assert len(tab.query_selector_all(sel)) == 0
    tab.check(f"#t-m{j}")
    assert len(tab.query_selector_all(sel)) == k and all(r.is_visible() for r in tab.query_selector_all(sel))


def test_figure_links_and_narrow_screen(browser, site):
    page_path, data, cfg = site
    linked = [c for c in data["cards"] if "f" in c]
    assert len(linked) == 2
    page = browser.new_page(viewport={"width": 420, "height": 800})
    page.goto(page_path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.eval_on_selector("meta[name=viewport]", "m => m.content").startswith("width=device-width")
    # the page itself does not scroll sideways; the metrics table does, inside its wrapper
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    assert page.eval_on_selector(".tablewrap", "w => w.scrollWidth > w.clientWidth")
    assert page.query_selector(".card").bounding_box()["width"] <= 420
    href = page.eval_on_selector(".card a", "a => a.href")
    assert href.endswith(f"/show/val/{linked[0]['s']}.png") and Path(href[len("file://"):]).is_file()
    page.close()
