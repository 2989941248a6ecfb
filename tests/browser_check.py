"""Open the pages of a built book in headless Chromium and report what a reader would see
broken: images that do not load, figures without an image, formulas MathJax did not
render or could not parse, Markdown tables shown as text, Python tracebacks, and text, code
or tables cut at the column edge (scrolling sideways) in a 1280 px window.

The site is served on 127.0.0.1 by a thread; one Chromium process loads a check page
that opens every page in an iframe (same origin), waits for its images and writes one
JSON report into its DOM, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

CHECK_PAGE = "__browser_check__.html"
# An image shown at less than this fraction of its natural width has type too small to read
# (a 1,300 px figure squeezed into the ~690 px column: 5 px legends)
NARROW = 0.6

_SCRIPT = """<!doctype html><html><body><pre id="result">pending</pre>
<script>
const pages = %s;
const NARROW = %s;
const out = {};
const frame = document.createElement("iframe");
frame.style.width = "1280px"; frame.style.height = "900px";
document.body.appendChild(frame);
function loaded(im) {
  im.loading = "eager";
  if (im.complete) return Promise.resolve();
  return new Promise(r => { im.addEventListener("load", r); im.addEventListener("error", r); setTimeout(r, 5000); });
}
async function check(page) {
  await new Promise(r => { frame.onload = r; frame.src = page; });
  const d = frame.contentDocument, w = frame.contentWindow;
  if (d.querySelector(".math")) {          // wait for MathJax to typeset the page
    for (let k = 0; k < 100 && !(w.MathJax && w.MathJax.startup && w.MathJax.startup.promise); k++)
      await new Promise(r => setTimeout(r, 100));
    if (w.MathJax && w.MathJax.startup && w.MathJax.startup.promise) await w.MathJax.startup.promise;
  }
  const imgs = Array.from(d.images);
  await Promise.all(imgs.map(loaded));
  const text = d.body ? d.body.innerText : "";
  return {
    title: d.title,
    images: imgs.filter(im => im.naturalWidth > 0).length,
    broken: imgs.filter(im => !(im.complete && im.naturalWidth > 0)).map(im => im.getAttribute("src")),
    math: d.querySelectorAll(".math").length,
    unrendered_math: Array.from(d.querySelectorAll(".math")).filter(m => !m.querySelector("mjx-container")).length,
    math_errors: Array.from(d.querySelectorAll(".math")).filter(m => m.querySelector("mjx-merror, merror, [data-mjx-error]")
                 || m.innerText.includes("Math input error")).length,
    narrow: imgs.filter(im => im.naturalWidth > 0 && im.offsetParent !== null
                 && im.getBoundingClientRect().width < NARROW * im.naturalWidth)
                 .map(im => `${im.getAttribute("src")}: ${Math.round(im.getBoundingClientRect().width)} of ${im.naturalWidth} px`),
    figures_without_image: Array.from(d.querySelectorAll("figure")).filter(f => !f.querySelector("img")).length,
    overflow: Array.from(d.querySelectorAll("pre, table, .cell_output"))
                 .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 2)
                 .map(e => `${e.tagName.toLowerCase()} ${e.scrollWidth - e.clientWidth} px wider: `
                           + e.innerText.trim().split("\\n")[0].slice(0, 60)),
    raw_tables: text.includes("|---|") ? 1 : 0,
    tracebacks: d.querySelectorAll(".traceback, .output.error").length
                + (text.includes("Traceback (most recent call last)") ? 1 : 0),
  };
}
(async () => {
  for (const p of pages) {
    try { out[p] = await check(p); } catch (e) { out[p] = {error: String(e)}; }
  }
  document.getElementById("result").textContent = JSON.stringify(out);
})();
</script></body></html>
"""


def chromium() -> str | None:
    """The Chromium executable (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def check_site(root: Path, pages: list[str], timeout: float = 300) -> dict[str, dict]:
    """``{page: {title, images, broken, figures_without_image, tracebacks}}`` for the
    ``pages`` (paths relative to ``root``) as headless Chromium renders them."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("Chromium is not installed; `make browser` (or apt-get install chromium) installs it")
    root = Path(root)
    (root / CHECK_PAGE).write_text(_SCRIPT % (json.dumps(["/" + p for p in pages]), NARROW))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{CHECK_PAGE}"
        proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--virtual-time-budget=120000", "--dump-dom", url],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        server.shutdown()
        (root / CHECK_PAGE).unlink()
    m = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    if m is None or m.group(1) == "pending":
        raise RuntimeError(f"the check page did not finish (exit {proc.returncode}): {proc.stderr[-2000:]}")
    import html
    return json.loads(html.unescape(m.group(1)))


def problems(report: dict[str, dict], expected_images: dict[str, int]) -> list[str]:
    """What is broken, one line per problem (empty: the site is fine)."""
    out = []
    for page, r in report.items():
        if "error" in r:
            out.append(f"{page}: could not be checked ({r['error']})")
            continue
        if r["broken"]:
            out.append(f"{page}: broken images {r['broken']}")
        for n in r.get("narrow", []):
            out.append(f"{page}: image shown too narrow to read ({n}; below {NARROW:.0%} of its width)")
        for o in r.get("overflow", []):
            out.append(f"{page}: cut at the column edge at 1280 px ({o})")
        if r["figures_without_image"]:
            out.append(f"{page}: {r['figures_without_image']} figure(s) without an image")
        if r["unrendered_math"]:
            out.append(f"{page}: {r['unrendered_math']} of {r['math']} formulas not rendered by MathJax")
        if r.get("math_errors"):
            out.append(f"{page}: {r['math_errors']} formula(s) MathJax could not parse (Math input error)")
        if r["raw_tables"]:
            out.append(f"{page}: shows a Markdown table as text")
        if r["tracebacks"]:
            out.append(f"{page}: shows a Python traceback")
        want = expected_images.get(page.lstrip("/"), 0)
        if r["images"] < want:
            out.append(f"{page}: {r['images']} images shown, the notebook has {want} figures")
    return out
