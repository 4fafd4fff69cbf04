"""The README and the docs home as a new user meets them: the example runs, links work off the repository, the
docs load their math renderer from the site itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


needs_docs = pytest.mark.skipif(
    not (ROOT / "mkdocs.yml").is_file(), reason="the docs sources are not in this tree (an sdist ships none)"
)


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_opens_with_install_then_example() -> None:
    text = README.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings[:2] == ["Install", "Example"]
    assert "pip install arcloss" in _section(text, "Install")


def test_readme_example_runs(tmp_path: Path) -> None:
    example = _python_blocks(_section(README.read_text(), "Example"))[0]
    assert len(example.strip().splitlines()) <= 20
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"loss \d+\.\d{3}; logits \(32, 10\)\n", out.stdout), out.stdout


def test_readme_recipe_snippet_runs() -> None:
    recipe = _python_blocks(_section(README.read_text(), "Example"))[1]
    from arcloss import ArcFaceLoss

    scope = {"ArcFaceLoss": ArcFaceLoss, "num_classes": 300, "embedding_size": 8}
    exec(recipe, scope)
    loss_fn = scope["loss_fn"]
    assert loss_fn.scale == pytest.approx(8.06, abs=0.01)
    assert loss_fn.W.norm(dim=0).mean().item() == pytest.approx(1.0, abs=0.3)


def test_readme_links_work_off_the_repository() -> None:
    """On the package index only absolute links resolve: no relative links or images."""
    targets = re.findall(r"\]\(([^)]+)\)", README.read_text())
    relative = [t for t in targets if not re.match(r"(https?|mailto):", t)]
    assert relative == []


@needs_docs
def test_docs_home_is_install_and_the_readme_example() -> None:
    home = (DOCS / "index.md").read_text()
    assert "pip install arcloss" in _section(home, "Install")
    readme_example = _python_blocks(_section(README.read_text(), "Example"))[0]
    assert _python_blocks(_section(home, "Example"))[0] == readme_example


@needs_docs
def test_docs_math_renderer_is_served_from_the_site() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    assets = re.findall(r"^\s+- (\S+\.(?:js|css))$", config, flags=re.MULTILINE)
    assert any("katex.min.js" in a for a in assets) and any("katex.min.css" in a for a in assets)
    for asset in assets:
        assert not asset.startswith(("http:", "https:", "//")), asset
        assert (DOCS / asset).is_file(), asset
    css = (DOCS / "assets" / "katex" / "katex.min.css").read_text()
    for font in re.findall(r"url\((fonts/[^)]+)\)", css):
        assert (DOCS / "assets" / "katex" / font).is_file(), font
