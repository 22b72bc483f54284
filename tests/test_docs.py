"""The README and docs/ link only to files that exist, and the README stays a five-minute read."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def pages() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_resolves():
    broken = []
    for page in pages():
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_short_and_shows_three_screenshots():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, "the README is the newcomer's page: move detail to docs/"
    assert len(re.findall(r"!\[[^]]*\]\(docs/[^)]+\.png\)", text)) == 3

