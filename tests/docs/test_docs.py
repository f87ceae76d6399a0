"""The documentation stays inside the repository: every relative link in a Markdown file
resolves to a file or folder of the repository, and nothing (docs, module docs, tests,
scripts) points at the workspace folder beside it (`../shared`), which a fresh checkout does
not have. docs/DESIGN.md is the design's home."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", "target", "node_modules", "__pycache__", ".pytest_cache", "corpus", "artifacts"}
TEXT_SUFFIXES = {".md", ".rs", ".py", ".sh", ".toml", ".yaml", ".yml", ".tpl", ".txt", ".json"}
# [text](target) and [text]: target, not images of remote URLs.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def repo_files(suffixes: set[str]) -> list[Path]:
    out = []
    stack = [REPO]
    while stack:
        d = stack.pop()
        for p in d.iterdir():
            if p.is_dir():
                if p.name not in SKIP_DIRS and not (p / ".git").exists():
                    stack.append(p)
            elif p.suffix in suffixes or p.name in {"run", "test", "bench", "fuzz"}:
                out.append(p)
    return sorted(out)


def test_design_is_in_the_repository():
    design = REPO / "docs" / "DESIGN.md"
    assert design.is_file()
    text = design.read_text()
    for section in ("## Data flow", "## Decisions", "## Kafka health", "## The broker mesh",
                    "## Racks: the planner", "## Racks: the executor",
                    "## Racks: self-healing in the cluster"):
        assert section in text, f"docs/DESIGN.md lacks {section!r}"


def test_nothing_points_outside_the_repository():
    offenders = []
    for path in repo_files(TEXT_SUFFIXES):
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if "../shared" in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "links or reads outside the repository:\n" + "\n".join(offenders)


def test_relative_markdown_links_resolve_inside_the_repository():
    broken = []
    for path in repo_files({".md"}):
        text = path.read_text()
        # Code blocks hold commands and examples, not links.
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same file
            file_part = target.split("#", 1)[0]
            resolved = (path.parent / file_part).resolve()
            rel = path.relative_to(REPO)
            if not resolved.is_relative_to(REPO):
                broken.append(f"{rel}: {target} leaves the repository")
            elif not resolved.exists():
                broken.append(f"{rel}: {target} does not exist")
    assert not broken, "broken relative links:\n" + "\n".join(broken)
