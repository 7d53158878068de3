#!/usr/bin/env python3
"""Fails on a relative Markdown link (or #anchor) in docs/, README.md or e2e/README.md that
points nowhere. External links are not fetched. Usage: check-doc-links.py [FILE...]"""
import glob
import os
import re
import sys


def anchors(path):
    found = set()
    in_code = False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#+ (.*)", line)
        if m:
            title = m.group(1).strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def main(files):
    bad = []
    for f in files:
        text = re.sub(r"```.*?```", "", open(f, encoding="utf-8").read(), flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            link = m.group(1)
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
            if not os.path.exists(target):
                bad.append(f"{f}: {link}: no such file")
            elif anchor and target.endswith(".md") and anchor not in anchors(target):
                bad.append(f"{f}: {link}: no such heading")
    for line in bad:
        print(line)
    print(f"{len(files)} files, {len(bad)} broken links")
    return 1 if bad else 0


if __name__ == "__main__":
    args = sys.argv[1:] or sorted(
        glob.glob("docs/**/*.md", recursive=True) + ["README.md", "e2e/README.md"]
    )
    sys.exit(main(args))
