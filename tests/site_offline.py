"""The built docs site works offline: no page loads anything from another host, and a page with a mermaid diagram
loads mermaid from the site itself.

    python tests/site_offline.py .site      # what `nox -s docs` runs after the build; exit 1 naming each problem

Links (``<a href>``) to other sites are fine: only what a browser fetches to render the page counts (scripts,
stylesheets, fonts, images, preconnects). Material for MkDocs fetches mermaid from a CDN only when the page has not
loaded one itself, so a diagram page must load a mermaid script that is part of the site. Standard library only, so
that it runs in the docs session's environment.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_FETCHED = re.compile(r"<(script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", re.I)
_CDNS = re.compile(r"unpkg\.com|jsdelivr\.net|cdnjs\.|googleapis\.com|gstatic\.com|cloudflare\.com", re.I)


def problems(site: Path) -> list[str]:
    found = []
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no pages (build the site first: nox -s docs)"]
    for page in pages:
        rel = page.relative_to(site)
        text = page.read_text(errors="replace")
        local_scripts = []
        for tag, url in _FETCHED.findall(text):
            if re.match(r"^(https?:)?//", url):
                found.append(f"{rel}: <{tag}> fetches {url} from another host")
            elif tag.lower() == "script":
                local_scripts.append((page.parent / url.split("?")[0]).resolve())
        for cdn in sorted(set(_CDNS.findall(text))):
            found.append(f"{rel}: names the CDN {cdn}")
        if 'class="mermaid"' in text and not any(
            "mermaid" in s.name and s.is_file() and s.is_relative_to(site.resolve()) for s in local_scripts
        ):
            found.append(f"{rel}: has a mermaid diagram but loads no mermaid of its own (Material would fetch a CDN's)")
    return found


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else ".site")
    found = problems(site)
    for p in found:
        print(p, file=sys.stderr)
    if not found:
        print(f"{site}: {len(list(site.rglob('*.html')))} pages, none fetches from another host")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
