"""Results show themselves in Jupyter (escaped HTML with thumbnails, rendered here in headless Chromium), and the
example notebook runs offline on the demo model, executed cell by cell so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest
import cliplens
from cliplens.inputs.demo_data import generate

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "demo.ipynb"


def test_results_render_as_html_in_a_browser(demo_model, demo_index, page, tmp_path):
    hostile = tmp_path / "<i>x.png"  # names are escaped, never markup
    next(generate(1, seed=2, size=128)).image.save(hostile)
    classification = cliplens.Classifier(["red circle", "<script>alert(1)</script>"], demo_model).classify(hostile)
    caption = cliplens.Captioner(demo_model).caption(hostile)
    ranking = cliplens.rank_images("a red circle", [hostile], demo_model)
    search = cliplens.PhotoIndex(demo_index).search("a photo of a red circle", top=3)
    html = "".join(r._repr_html_() for r in (classification, caption, ranking, search))
    assert "<script>" not in html and "&lt;i&gt;x.png" in html and "<i>x" not in html
    page.set_content(f"<html><body>{html}</body></html>")
    bars = page.locator(".cliplens-classification tr")
    assert bars.count() == 2 and "none of these" in page.locator(".cliplens-classification").inner_text()
    assert page.locator(".cliplens-caption span").count() >= 1 and page.locator(".cliplens-caption p").inner_text()
    thumbnails = page.locator(".cliplens-search img")
    assert thumbnails.count() == 3 and "match" in page.locator(".cliplens-search").inner_text()
    assert all(thumbnails.nth(i).evaluate("img => img.naturalWidth > 0") for i in range(3))  # real images
    assert page.locator(".cliplens-ranking img").count() == 1
    assert page.evaluate("() => window.alerted === undefined")


@pytest.mark.slow
def test_the_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    rich = [o for o in outputs if o.output_type == "execute_result"]
    htmls = [o["data"].get("text/html", "") for o in rich]
    for kind in ("cliplens-classification", "cliplens-caption", "cliplens-search", "cliplens-ranking"):
        assert any(kind in h for h in htmls), kind
    assert any("image/png" in o["data"] for o in rich)  # the dream
