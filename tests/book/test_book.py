"""The book's contract: chapters run with their `ci` profile, profiles are complete,
the book builds without warnings from the committed notebooks, and its pages, opened in
headless Chromium, show every figure and no traceback."""

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mplp import paths
from mplp.book.runner import run, run_chapter
from mplp.chapters.profiles import ProfileError, check_parameters, load_profile, notebook_parameters

import browser_check

CHAPTERS = paths.available_chapters()
ROOT = paths.repo_root()


def test_there_are_chapters():
    assert "sgd" in CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_starts_with_parameters_and_profiles_are_complete(chapter):
    cells = json.loads(paths.notebook(chapter).read_text())["cells"]
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    names = set(notebook_parameters(chapter))
    for profile in paths.PROFILES:
        assert set(load_profile(chapter, profile)) == names      # every parameter, nothing else
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{chapter}: committed notebook has error outputs"


def glue_references(cells) -> set[str]:
    """Names the Markdown cells show through glue roles and directives."""
    import re

    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return set(re.findall(r"\{glue(?::\w+)?\}`([^`]+)`", text)) | set(re.findall(r"```\{glue(?::\w+)?\}\s+(\S+)", text))


def glued_names(cells) -> set[str]:
    return {o["metadata"]["scrapbook"]["name"] for c in cells for o in c.get("outputs", [])
            if "scrapbook" in o.get("metadata", {})}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_with_ci_profile_without_cache(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLP_CACHE", "off")       # compute, do not read or write results/
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = run_chapter(chapter, "ci", output=tmp_path / f"{chapter}.ipynb", progress=False)
    cells = json.loads(out.read_text())["cells"]
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and cells.index(injected[0]) == 1   # right after `parameters`
    assert any(o.get("output_type") == "display_data" for c in cells for o in c.get("outputs", []))
    # the prose stays consistent with this execution: every glued name it shows was glued by it
    missing = glue_references(cells) - glued_names(cells)
    assert not missing, f"{chapter}: the text refers to {sorted(missing)}, which the ci execution did not glue"


def test_runner_refuses_bad_input(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown profile 'gpu'; valid profiles: ci, cpu, paper"):
        run(["sgd"], "gpu")
    with pytest.raises(ValueError, match="unknown chapter 'cifar'"):
        run(["cifar"], "ci")
    # a copy of the repository layout with a broken profile
    monkeypatch.setenv("MPLP_ROOT", str(tmp_path))
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "00_sgd.ipynb", tmp_path / "book")
    (tmp_path / "params" / "sgd").mkdir(parents=True)
    with pytest.raises(ProfileError, match="params/sgd/ci.yaml is missing"):
        load_profile("sgd", "ci")
    good = (ROOT / "params" / "sgd" / "ci.yaml").read_text()
    (tmp_path / "params" / "sgd" / "ci.yaml").write_text(good + "learning_rate: 3\n")
    with pytest.raises(ProfileError, match=r"sets unknown parameter\(s\) \['learning_rate'\]"):
        load_profile("sgd", "ci")
    (tmp_path / "params" / "sgd" / "ci.yaml").write_text("seed: 1\n")
    with pytest.raises(ProfileError, match="misses parameter"):
        load_profile("sgd", "ci")
    with pytest.raises(ValueError, match="unknown chapter 'mnist'; valid chapters: sgd"):   # a chapter is its notebook
        notebook_parameters("mnist")


def test_a_notebook_checks_its_parameters_before_computing(tmp_path):
    ns = {"seed": "3", "steps": 200.0, "device": "cpu"}
    check_parameters("sgd", ns)                          # text that stands for a number becomes one
    assert ns["seed"] == 3 and ns["steps"] == 200 and isinstance(ns["steps"], int)
    with pytest.raises(ProfileError, match=r"parameter 'seed' of chapter 'sgd'.*expected a number, got 'abc'"):
        check_parameters("sgd", {"seed": "abc"})
    with pytest.raises(ProfileError, match="expected an integer, got 1.5"):
        run_chapter("sgd", "ci", output=tmp_path / "x.ipynb", overrides={"seed": 1.5}, progress=False)
    import papermill                                     # the papermill route, past the runner's checks

    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(paths.notebook("sgd")), str(tmp_path / "x.ipynb"), parameters={"seed": "abc"},
                                   kernel_name="python3", progress_bar=False, cwd=str(paths.notebook("sgd").parent))
    assert e.value.ename == "ProfileError" and len(e.value.traceback) == 1 and "'seed'" in e.value.traceback[0]
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """The book built from the committed notebooks with warnings as errors: its html dir."""
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "_build" / "html"


def test_book_builds_without_warnings(built_book):
    assert (built_book / "index.html").exists()
    page = (built_book / "book" / "00_sgd.html").read_text()
    assert page.count("<img") >= 3 and "Traceback" not in page


def _figures(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def test_published_book_in_a_browser(built_book):
    """Every page of the book, opened in headless Chromium: no broken image, no figure
    without its image, every notebook figure shown, every formula typeset by the bundled
    MathJax (no network), no Python traceback."""
    pages = sorted(str(p.relative_to(built_book)) for p in (built_book / "book").glob("*.html"))
    toc = [line.split("file:")[1].strip() for line in (ROOT / "_toc.yml").read_text().splitlines() if "file:" in line]
    assert len(pages) == len(toc) + 1                       # every TOC entry and the root page
    expected = {f"{nb.parent.name}/{nb.stem}.html": _figures(nb) for nb in (ROOT / "book").glob("*.ipynb")}
    report = browser_check.check_site(built_book, pages)
    assert set(report) == {"/" + p for p in pages}
    assert sum(r.get("images", 0) for r in report.values()) >= sum(expected.values()) > 0
    assert browser_check.problems(report, expected) == []


def test_browser_check_sees_what_is_broken(tmp_path, built_book):
    (tmp_path / "ok.png").write_bytes(base64.b64decode(PNG))
    (tmp_path / "good.html").write_text('<figure><img src="ok.png"></figure>')
    (tmp_path / "wide.png").write_bytes(_png(1000, 10))
    (tmp_path / "narrow.html").write_text('<figure><img src="wide.png" style="width:400px"></figure>')
    (tmp_path / "cut.html").write_text('<div style="width:600px"><pre>' + "x" * 400 + "</pre></div>")
    (tmp_path / "bad.html").write_text('<img src="missing.png"><figure><p>no image</p></figure>'
                                       "<pre>Traceback (most recent call last):\n  boom</pre>"
                                       '<span class="math notranslate">\\(x^2\\)</span><p>| a | b |\n|---|---|</p>')
    shutil.copytree(built_book / "_static" / "mathjax", tmp_path / "mathjax")     # the MathJax the book ships
    (tmp_path / "math.html").write_text(MATHJAX_PAGE)
    report = browser_check.check_site(tmp_path, ["good.html", "bad.html", "math.html", "narrow.html", "cut.html"])
    assert report["/good.html"]["images"] == 1
    found = browser_check.problems(report, {"good.html": 1, "bad.html": 2, "narrow.html": 1})
    assert found == ["/bad.html: broken images ['missing.png']", "/bad.html: 1 figure(s) without an image",
                     "/bad.html: 1 of 1 formulas not rendered by MathJax", "/bad.html: shows a Markdown table as text",
                     "/bad.html: shows a Python traceback",
                     "/bad.html: 0 images shown, the notebook has 2 figures",
                     "/math.html: 1 formula(s) MathJax could not parse (Math input error)",
                     "/narrow.html: image shown too narrow to read (wide.png: 400 of 1000 px; below 60% of its width)",
                     f"/cut.html: cut at the column edge at 1280 px (pre {report['/cut.html']['overflow'][0].split()[1]} "
                     f"px wider: {'x' * 60})"]


# a page with one good formula and one broken as chapter 4's was ("\frac" written in a
# non-raw Python string: a form feed and "rac"), typeset by the MathJax that the book ships
MATHJAX_PAGE = """<html><head>
<script>window.MathJax = {"options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}};</script>
<script defer src="mathjax/tex-chtml.js"></script></head><body>
<span class="math notranslate">\\(x^2\\)</span> <span class="math notranslate">\\(\x0crac{1}{2}\\)</span></body></html>"""


# a 1x1 PNG
def _png(width: int, height: int) -> bytes:
    """A blank PNG of the given size (matplotlib writes it)."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def test_failed_run_leaves_the_notebook_as_it_was(tmp_path):
    target = tmp_path / "00_sgd.ipynb"
    target.write_text("previous contents")
    with pytest.raises(Exception, match="batch_size"):
        run_chapter("sgd", "ci", output=target, overrides={"batch_size": -1}, progress=False)
    assert target.read_text() == "previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["00_sgd.ipynb"]      # no scratch file left behind


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_committed_notebooks_glue_every_name_their_text_shows(chapter):
    cells = json.loads(paths.notebook(chapter).read_text())["cells"]
    missing = glue_references(cells) - glued_names(cells)
    assert not missing, f"{chapter}: {sorted(missing)} are shown but not glued; execute the chapter again"


def test_pages_glue_from_other_notebooks_only_names_those_glue():
    """A Markdown page's ``{glue:text}`NOTEBOOK::name:fmt``` must name a notebook of the book that
    glues ``name`` (intro.md's bottom line reads the report's tally this way)."""
    import re

    refs = [(page.name, doc, key) for page in (ROOT / "book").glob("*.md")
            for doc, key in re.findall(r"\{glue(?::\w+)?\}`([\w/.-]+)::([\w]+)(?::[^`]*)?`", page.read_text())]
    assert any(page == "intro.md" for page, _, _ in refs)
    for page, doc, key in refs:
        nb = ROOT / "book" / f"{doc.removesuffix('.ipynb')}.ipynb"
        assert nb.exists(), f"{page}: glue from {doc}, which is not a notebook of the book"
        names = glued_names(json.loads(nb.read_text())["cells"])
        assert key in names, f"{page}: {doc} glues no {key!r}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_sources_hold_no_control_characters(chapter):
    """A "\\frac" or "\\theta" typed into a non-raw Python string becomes a form feed or a tab in
    the notebook (chapter 4 once showed "Math input error" and "dheta"): none may be left."""
    import re

    for i, c in enumerate(json.loads(paths.notebook(chapter).read_text())["cells"]):
        src = "".join(c["source"])
        bad = re.findall(r"[\x00-\x08\x0b-\x1f]", src) + (re.findall(r"\t", src) if c["cell_type"] == "markdown" else [])
        assert not bad, f"{chapter} cell {i}: control characters {bad!r}"


# -- numbers in the prose come from the data ----------------------------------------
import re  # noqa: E402

_ROLE = re.compile(r"\{(glue:text|glue:md|glue|cite:p|cite:t|cite|doc|ref|numref|eq|download)\}`[^`]*`")
_STRIP = [re.compile(r"```.*?```", re.S),               # fenced blocks (admonitions' options, code)
          re.compile(r"\$\$.*?\$\$", re.S), _ROLE, re.compile(r"`[^`]*`"),
          re.compile(r"\$[^$]*\$"),                     # math: symbols and settings (checked below)
          re.compile(r"\]\([^)]*\)"), re.compile(r"https?://\S+"),
          # references to the papers' numbered parts: §5.1, §2.3–2.4, Fig. 3a, Figs. 9–11, Table 2, Eq. 6 ...
          re.compile(r"§\s?\d+(\.\d+)*([–-]\d+(\.\d+)*)?"),
          re.compile(r"\b(Figs?\.|Figures?|Tables?|Eqs?\.|Equations?|Appendix|App\.|Algorithms?|Sections?)\s*"
                     r"[A-Z]?\d+[a-z]?([–-]\d+[a-z]?)?((,| and)\s*\d+[a-z]?)*"),
          re.compile(r"\b(19|20)\d\d\b")]               # years of the cited papers
# A figure-like number: grouped thousands, a decimal, a percentage, or three digits or more.
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(,\d{3})+|\d+\.\d+|\d+\s?%|\d{3,})(?![\w])")
# Numbers that are not results: thesis and paper settings, dataset facts and the book's own rule
# definitions, each with where it comes from.  Anything else typed into the prose is a defect.
ALLOWED = {
    "*": {"90 %": "the plateau rule (analysis.plateau_end)", "10 %": "the plateau rule",
          "95 %": "the calibration quantile", "784": "MNIST's input size",
          "1,000": "Metz et al. Fig. 4's 1,000-step horizon (a setting)",
          "300,000": "Table 3's S", "120,000": "§5.2's S", "150,000": "Table 5's S (and the longer runs' S)",
          "100": "the plan's first seed (100-104)", "104": "the plan's last seed",
          "2 %": "the plan's plateau window", "6,000": "idem, for Table 3's S"},
    "intro": {"100,000": "the script-setting run's S (a setting)"},
    "00_sgd": {"100": "the steps at which outer.code_step_ratio is evaluated", "1000": "idem"},
    "01_sinewave": {"0.001": "Table 3's fixed lr", "100,000": "the thesis' checkpoint window (§5.1)",
                    "130,000": "idem", "50,000": "§5.1: 'flat until around 50000 steps'"},
    "06_learned_optimizers": {"200": "the chapter's first seed", "202": "its last seed",
                              "1.25": "question 1's 'partly' threshold", "128": "L2L's quadratics per batch (a setting)",
                              "100": "Randazzo's test tasks and L2L's steps (settings)", "0.1": "Randazzo's amplitude range",
                              "0.5": "idem", "0.01": "Randazzo's Adam lr", "40,000": "Randazzo's outer steps",
                              "0.05": "Randazzo's initialisation std", "999": "the pilot's seed",
                              "500": "the pilot's outer steps"},
    "04_truncation": {"128": "the MLP's batch (Metz et al.)", "10,000": "Metz et al.'s inner steps",
                      "0.01": "discussion_values' agreement threshold", "100": "its 'exploded' threshold"},
    "deviations": {"100,000": "the script-setting run's S (a setting)", "0.99": "thesis Tables 3-5", "0.9": "the released script's default", "0.1307": "MNIST mean",
                   "0.3081": "MNIST std", "60,000": "MNIST's training set", "255": "byte range",
                   "256": "the released code's divisor"},
}


def _prose(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]
    return [path.read_text()]


def hand_typed_numbers(path: Path) -> list[str]:
    """Figure-like numbers in a page's Markdown that are neither glued nor allowed."""
    allowed = {**ALLOWED["*"], **ALLOWED.get(path.stem, {})}
    found = []
    for text in _prose(path):
        for rx in _STRIP:
            text = rx.sub(" ", text)
        found += [m.group(0) for m in _NUMBER.finditer(text) if m.group(0) not in allowed]
    return found


def test_the_number_rule_flags_results_and_passes_settings(tmp_path):
    p = tmp_path / "x.md"
    p.write_text("The loss fell from 254.8 to 234.0 (12 %) over 2,000 steps in 2019 (§5.2, Figs. 9–11, "
                 "$1.2 \\cdot 10^5$, {glue:text}`x` and `S = 3600`); 90 % is the rule.")
    assert hand_typed_numbers(p) == ["254.8", "234.0", "12 %", "2,000"]


# Pages whose numbers are not results: the plan (settings, thresholds and seeds fixed before the runs)
# and the claims appendix (the papers' own words, quoted, and counts of its own rows).
NOT_RESULTS = {"preregistration": "the plan, written before the runs", "claims": "quotes and the table's counts"}


@pytest.mark.parametrize("page", sorted(p.stem for p in (ROOT / "book").iterdir()
                                        if p.suffix in (".ipynb", ".md") and p.stem not in NOT_RESULTS))
def test_no_page_holds_a_hand_typed_result_number(page):
    path = next(p for p in (ROOT / "book").iterdir() if p.stem == page and p.suffix in (".ipynb", ".md"))
    assert hand_typed_numbers(path) == [], f"{path.name}: glue these numbers from the data (or allow a setting)"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_figure_is_captioned_and_referenced_from_the_text(chapter):
    """Each figure is a named MyST figure whose caption names what it reproduces
    ("Thesis Fig. ...", "Metz et al. ...", or "No thesis counterpart"), and the text refers to it."""
    cells = json.loads(paths.notebook(chapter).read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for c in cells:
        if c["cell_type"] != "code" or not any("image/png" in o.get("data", {}) for o in c.get("outputs", [])):
            continue
        fig = c["metadata"].get("mystnb", {}).get("figure")
        assert fig and fig.get("name") and fig.get("caption"), f"{chapter}: a figure without caption or name"
        assert re.match(r"(Thesis Figs?\.|(Metz|Andrychowicz|Randazzo) et al\.|No thesis counterpart)",
                        fig["caption"]), fig["caption"][:60]
        assert re.search(r"\{ref\}`[^`<]+<" + re.escape(fig["name"]) + ">`", text), \
            f"{chapter}: {fig['name']} is never referenced by name"
    assert "{numref}" not in text, f"{chapter}: one numbering: refer to the book's figures by name ({{ref}})"


def test_the_claims_appendix_counts_its_own_rows_and_names_real_plan_rows():
    text = (ROOT / "book" / "claims.md").read_text()
    ids = re.findall(r"^\| ((?:T|M)-[\w.]+-?\d*) \|", text, re.M)
    assert len(ids) == len(set(ids)) > 100
    total = re.search(r"^\| \*\*all\*\* \| \*\*(\d+)\*\*", text, re.M)
    assert total and int(total.group(1)) == len(ids)
    plan = (ROOT / "book" / "preregistration.md").read_text()
    planned = set(re.findall(r"^\| (P[\dM]\.\d+) \|", plan, re.M))
    cited = set(re.findall(r"\bP[\dM]\.\d+\b", text))
    assert len(planned) == 34 and cited <= planned, sorted(cited - planned)
