"""Every Python sample of the guide (docs/*.md) runs, page by page, against the test services.

Each page's ```python blocks run in order as one script, in a fresh folder holding the iris
example's files (iris.csv, dataprep_src/, train_src/, compare_src/), so a sample that drifts from
the code fails here. Shell blocks are shown, not run (the commands they show are tested elsewhere).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
WITHOUT_CODE = {"index.md", "concepts.md", "architecture.md"}


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_the_guide_is_whole():
    index = (DOCS / "index.md").read_text()
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    assert linked == set(PAGES) - {"index.md"}, "every page is linked from the index, and every link is a page"
    for page in PAGES:
        for target in re.findall(r"\]\(([\w-]+\.md)\)", (DOCS / page).read_text()):
            assert (DOCS / target).exists(), f"{page} links to a missing page {target}"
        if page not in WITHOUT_CODE:
            assert python_blocks(page), f"{page} has no Python sample"


@pytest.mark.parametrize("page", [p for p in PAGES if p not in WITHOUT_CODE])
def test_every_python_sample_of_the_page_runs(page, ws, request, tmp_path):
    work = tmp_path / page.removesuffix(".md")
    work.mkdir()
    example = ROOT / "examples" / "iris"
    shutil.copy(example / "iris.csv", work / "iris.csv")
    for src in ("dataprep_src", "train_src", "compare_src"):
        shutil.copytree(example / src, work / src)
    env = dict(os.environ, PREFECT_AML_WORKER_WAIT_SECONDS="20")
    if page == "datastores.md":
        env["S3_ENDPOINT_URL"] = request.getfixturevalue("moto")
        env["AZURE_STORAGE_CONNECTION_STRING"] = request.getfixturevalue("azurite")
    script = "\n\n".join(python_blocks(page))
    (work / "page.py").write_text(script)
    out = subprocess.run([sys.executable, "page.py"], cwd=work, env=env, capture_output=True, text=True, timeout=500)
    assert out.returncode == 0, f"{page}:\n{(out.stdout + out.stderr)[-5000:]}"
