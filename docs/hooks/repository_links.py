"""mkdocs hook: a link from a page to a file of the repository outside docs/ (a config, a
template, bench/README.md) becomes that file's path in code, since the site does not hold it;
tests/test_docs.py checks that each such file exists. Links between pages stay links, so
`mkdocs build --strict` still fails on a broken one or a missing anchor."""

from __future__ import annotations

import posixpath
import re

LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(\s*([^)\s]+)\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def on_page_markdown(markdown, page, config, files):
    here = posixpath.dirname(page.file.src_uri)

    def outside(match):
        text, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:", target, re.I) or target.startswith("#"):
            return match.group(0)
        path = posixpath.normpath(posixpath.join(here, target.split("#", 1)[0]))
        if not path.startswith(".."):
            return match.group(0)
        shown = path[3:]
        return text if text.strip("`") == shown else f"{text} (`{shown}`)"

    parts, last = [], 0
    for fence in FENCE.finditer(markdown):  # code blocks are left as they are
        parts.append(LINK.sub(outside, markdown[last:fence.start()]))
        parts.append(fence.group(0))
        last = fence.end()
    parts.append(LINK.sub(outside, markdown[last:]))
    return "".join(parts)
