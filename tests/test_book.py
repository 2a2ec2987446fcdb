"""The book builds strictly, and its pages render in a real browser without the network.

The build is the one CI runs (``jupyter-book build book --all -W --keep-going -n``), into a
temporary folder. Every page is then opened in headless Chromium (Debian's ``chromium`` and
``chromium-driver`` packages, which ``.ci/run`` installs) from ``file://`` URLs, and the rendered
page is checked, not the HTML: MathJax typeset every formula and left no TeX in the page text,
tables and figures are there, and no request left the machine or failed. A screenshot of the
results page is kept in ``test-output/`` (``SPARSE_SURVEY_TEST_OUTPUT`` to move it) for review.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from awaiting import awaiting

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("SPARSE_SURVEY_TEST_OUTPUT", ROOT / "test-output"))
TEX_LEFTOVERS = ("$$", "\\(", "\\[", "\\frac", "\\odot", "\\operatorname", "\\mathcal", "\\sum")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    done = subprocess.run([str(jupyter_book), "build", "book", "--all", "-W", "--keep-going",
                           "-n", "--path-output", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "WARNING" not in done.stdout + done.stderr
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, (
        "the book test needs Debian's chromium and chromium-driver packages "
        "(apt-get install chromium chromium-driver; .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--allow-file-access-from-files"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def load(browser, page: Path) -> None:
    """Open a page and wait until its document is complete and has a body, so that a script run
    next never meets a document still being replaced."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(
        "return document.readyState === 'complete' && document.body !== null"))


def open_page(browser, page: Path) -> dict:
    """Load a page, wait for MathJax to finish, and return what the browser rendered."""
    browser.get_log("performance")  # drop the previous page's events
    load(browser, page)
    browser.set_script_timeout(60)
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise.then(() => done(true)) : done(false);
        if (document.readyState === "complete") wait(); else window.addEventListener("load", wait);
    """)
    rendered = browser.execute_script("""
        const main = document.querySelector("main") || document.body;
        return {text: main.innerText,
                math: document.querySelectorAll("mjx-container").length,
                mathErrors: document.querySelectorAll("mjx-merror, .MathJax_Error").length,
                tables: main.querySelectorAll("table").length,
                images: [...main.querySelectorAll("img")].map(
                    i => ({src: i.src, ok: i.complete && i.naturalWidth > 0}))};
    """)
    requests, failures = [], []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.loadingFailed":
            failures.append(message["params"].get("errorText", "?"))
    rendered.update(requests=requests, failures=failures)
    return rendered


REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=[^"]+"', re.IGNORECASE)


def is_redirect(page: Path) -> bool:
    """A page that only sends the reader on (the book's ``index.html``, to its root chapter): it
    navigates away as soon as it loads, so it has no content of its own to check."""
    return bool(REDIRECT.search(page.read_text(encoding="utf-8", errors="replace")))


def pages(site: Path) -> list[Path]:
    """The book's pages a reader reads: not the index, search or redirect pages."""
    return sorted(p for p in site.rglob("*.html")
                  if p.name not in ("genindex.html", "search.html") and "_static" not in p.parts
                  and not is_redirect(p))


def test_the_front_page_sends_the_reader_to_the_introduction(site, browser):
    front = site / "index.html"
    assert is_redirect(front), "index.html should send the reader to the root chapter"
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(front.as_uri())  # times out, failing, unless the browser lands on intro.html
    WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith("/intro.html"))


def test_every_page_renders_offline_with_its_formulas_typeset(site, browser):
    found = pages(site)
    assert len(found) >= 20, [p.name for p in found]
    typeset = 0
    for page in found:
        rendered = open_page(browser, page)
        name = page.relative_to(site)
        remote = [u for u in rendered["requests"] if not u.startswith(LOCAL_SCHEMES)]
        assert not remote, f"{name} asked the network for {remote}"
        assert not rendered["failures"], f"{name}: failed requests {rendered['failures']}"
        leftovers = [t for t in TEX_LEFTOVERS if t in rendered["text"]]
        assert not leftovers, f"{name}: raw TeX left in the page text: {leftovers}"
        assert rendered["mathErrors"] == 0, f"{name}: MathJax reported errors"
        broken = [i["src"] for i in rendered["images"] if not i["ok"]]
        assert not broken, f"{name}: images that did not load: {broken}"
        typeset += rendered["math"]
    assert typeset > 50  # the method chapters alone hold dozens of formulas


def test_the_method_chapters_show_their_equations(site, browser):
    for chapter in ("lottery", "magnitude", "snip", "grasp", "synflow", "random"):
        rendered = open_page(browser, site / "methods" / f"{chapter}.html")
        assert rendered["math"] >= 2, chapter
        assert "Algorithm" in rendered["text"] and "failure modes" in rendered["text"], chapter


def test_the_results_pages_hold_the_tables_and_figures(site, browser):
    compare = open_page(browser, site / "executed" / "compare.html")
    assert compare["tables"] >= 10  # the six tables, their comparisons and the claim tables
    # its accuracy and layer-density figures are the chapter's, shown there once
    assert compare["text"].count("is shown in this notebook") >= 2
    results = open_page(browser, site / "results.html")
    assert results["tables"] >= 6 and sum(i["ok"] for i in results["images"]) >= 2
    assert "CIFAR-10 (JPEG q75)" in results["text"]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(max(height, 1000), 12000))
    browser.save_screenshot(str(OUTPUT / "results.png"))
    browser.set_window_size(1280, 1000)
    assert (OUTPUT / "results.png").stat().st_size > 50_000
    print(f"screenshot of the results page: {OUTPUT / 'results.png'}")


PROGRESS_BAR = re.compile(r"\d+%\|.*\|")  # tqdm: "sweep: 100%|██████████| 6/6"
NOISE = (re.compile(r"\b\w*Warning\b:"), re.compile(r"/tmp/ipykernel_"), PROGRESS_BAR)
# a markdown table's rule row left as text ("---" may have become a dash: |—|—|)
RAW_TABLE = re.compile(r"\|\s*(?:[-:]{3,}|:?[—–]:?)\s*\|")
PAGE_WIDTH = 800  # px: what a page's tables must fit in (a laptop or a printed page)


def reading_noise(browser, page: Path) -> dict:
    """What gets in a reader's way on a rendered page: the files its images show, the text of
    its cell outputs (and whether any is a stderr stream), its prose and table text outside code
    blocks, and the width of every table against the page's text column."""
    load(browser, page)
    return browser.execute_script("""
        const main = document.querySelector("main") || document.body;
        const article = main.querySelector("article") || main;
        const prose = main.cloneNode(true);
        prose.querySelectorAll("pre, code, .cell_input").forEach(e => e.remove());
        return {images: [...main.querySelectorAll("img")].map(i => i.src),
                outputs: [...main.querySelectorAll(".cell_output")].map(o => o.innerText),
                stderr: main.querySelectorAll(".cell_output .stderr").length,
                prose: prose.innerText,
                column: article.clientWidth,
                tables: [...main.querySelectorAll("table")].map(t => ({
                    width: Math.ceil(t.getBoundingClientRect().width),
                    head: (t.querySelector("tr") || t).innerText.slice(0, 80)}))};
    """)


def test_pages_read_cleanly_without_noise_and_with_tables_that_fit(site, browser):
    """Each figure once per page, and once in a chapter and the notebook pages under it; no
    progress bar, warning or stderr output; no markdown table left as raw text; every table
    within the page's text column and within 800 px."""
    problems, figures = [], {}
    for page in pages(site):
        name, seen = page.relative_to(site), reading_noise(browser, page)
        files = [Path(urllib.parse.urlparse(src).path) for src in seen["images"]
                 if src.startswith("file:")]
        digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()]
        figures[name.with_suffix("").as_posix()] = set(digests)
        if len(digests) != len(set(digests)):
            problems.append(f"{name}: a figure is shown twice")
        if seen["stderr"]:
            problems.append(f"{name}: {seen['stderr']} stderr outputs")
        for text in seen["outputs"]:
            for pattern in NOISE:
                if pattern.search(text):
                    problems.append(f"{name}: output noise {pattern.search(text).group(0)!r}")
        raw = RAW_TABLE.search(seen["prose"])
        if raw:
            problems.append(f"{name}: markdown table syntax left as text: {raw.group(0)!r}")
        limit = min(PAGE_WIDTH, seen["column"])
        for t in seen["tables"]:
            if t["width"] > limit:
                problems.append(f"{name}: a table {t['width']} px wide (page: {limit} px): "
                                f"{t['head']!r}")
    waiting = {f"executed/{name}" for name in awaiting(ROOT / "results")}
    for chapter, sections in page_pairs().items():
        for section in sections:
            if section in waiting:  # executed before its runs were stored (tests/awaiting.py)
                continue
            if figures.get(chapter, set()) & figures.get(section, set()):
                problems.append(f"{chapter} and {section}: a figure is shown on both")
    assert not problems, "\n".join(problems)


def page_pairs() -> dict[str, list[str]]:
    """Each chapter of the table of contents and the pages under it (its notebooks)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return {chapter["file"]: [section["file"] for section in chapter.get("sections", [])]
            for part in toc["parts"] for chapter in part["chapters"]}


def test_stderr_in_the_executed_notebooks_is_progress_bars_only():
    """The book hides stderr outputs (``nb_output_stderr: remove``: tqdm's bars); this keeps
    that from hiding anything else, such as a warning: a notebook must catch its warnings and
    say in prose what they mean."""
    for path in sorted((ROOT / "book" / "executed").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                if output.get("name") != "stderr":
                    continue
                for line in "".join(output["text"]).replace("\r", "\n").splitlines():
                    assert not line.strip() or PROGRESS_BAR.search(line), (
                        f"{path.name}: stderr that is not a progress bar: {line[:200]!r}")


def test_every_table_in_the_executed_notebooks_has_a_title():
    """A table an executed notebook shows (markdown output, :func:`tutorial.show`) opens with a
    bold title line or a heading, so a reader who lands on it knows what it measures."""
    untitled = []
    for path in sorted((ROOT / "book" / "executed").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                text = "".join(output.get("data", {}).get("text/markdown", ""))
                titled = text.startswith(("**", "#"))
                if re.search(r"^\|.*\|\s*$", text, re.MULTILINE) and not titled:
                    untitled.append(f"{path.name}: {text.splitlines()[0][:80]!r}")
    assert not untitled, "tables without a title:\n" + "\n".join(untitled)


def test_the_references_are_labelled_as_the_text_cites_them_with_links(site):
    """Author-year labels in the bibliography (as the text cites: "Tanaka et al. 2020"), never
    "n.d." for the two undated survey documents (a poster and a proposal), and a link or DOI for
    every published work."""
    text = (site / "references.html").read_text()
    for label in ("Frankle and Carbin 2019", "Tanaka et al. 2020", "Zhao, poster"):
        assert label in text, label
    assert "n.d." not in text and "[FC19]" not in text
    cited = "".join((site / page).read_text() for page in ("intro.html", "results.html"))
    assert "n.d." not in cited
    assert text.count("arxiv.org/abs/") >= 8 and "doi.org/10.1038/s41467-018-04316-3" in text


def test_no_code_scrolls_sideways_at_800_or_1280_px(site, browser):
    """Every code block and printed output fits the page's column at a laptop's 1280 px and at
    800 px: notebook code keeps to 79 columns, included source and printed lines wrap."""
    problems = []
    waiting = {Path("executed") / f"{name}.html" for name in awaiting(ROOT / "results")}
    try:
        for width in (800, 1280):
            browser.set_window_size(width, 1000)
            for page in pages(site):
                if page.relative_to(site) in waiting:  # tests/awaiting.py
                    continue
                load(browser, page)
                wide = browser.execute_script("""
                    const main = document.querySelector("main") || document.body;
                    return [...main.querySelectorAll("pre")]
                        .filter(p => p.scrollWidth > p.clientWidth + 1)
                        .map(p => p.innerText.split("\\n")
                             .reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 90));
                """)
                problems += [f"{page.relative_to(site)} at {width} px: {line!r}" for line in wide]
    finally:
        browser.set_window_size(1280, 1000)
    assert not problems, "code that scrolls sideways:\n" + "\n".join(problems)
