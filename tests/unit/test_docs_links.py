"""README.md and docs/*.md stand on their own in a fresh clone: no link or path leads out of the
repository, no http(s) link points at the web (a URL in code, such as a command's or a
setting's, is text to type, not a link), every relative link resolves to a file that exists,
every Markdown page they name exists, and the README still opens with the two set-up commands
and links the lifecycle page."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", ".venv", "node_modules", ".mppo", "third_party", "mppo.egg-info"}

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
UP_PATH = re.compile(r"(?<![\w.])((?:\.\./)+[\w.<>*/-]*)")
MARKDOWN_NAME = re.compile(r"(?<![\w./-])([\w./<>-]*[\w-]\.md)\b")
MACHINE_PATHS = re.compile(r"(?<![\w.])(/work/|/home/|/root/|~/)")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s)>`]*")
#: fenced code blocks and inline code spans: what they hold is typed, never followed
CODE_BLOCK = re.compile(r"^ {0,3}(```+|~~~+).*?^ {0,3}\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
WEB_LINK = re.compile(r"https?://[^\s)>\]]*", re.I)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@cache
def markdown_files() -> frozenset[str]:
    """Every Markdown file of the repository, as a path from its root."""
    found = set()
    for path in REPO.rglob("*.md"):
        parts = path.relative_to(REPO).parts
        if not SKIPPED_DIRS.intersection(parts):
            found.add("/".join(parts))
    return frozenset(found)


def inside(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO)


def problems(page: Path, text: str) -> list[str]:
    """What in ``text`` (the content of ``page``) points outside the repository or nowhere."""
    found: list[str] = []
    here = page.parent
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        file_part = target.split("#", 1)[0]
        if file_part.startswith("/"):
            found.append(f"absolute link {target}")
            continue
        resolved = here / file_part
        if not inside(resolved):
            found.append(f"link out of the repository: {target}")
        elif not resolved.exists():
            found.append(f"broken link: {target}")
    text = URL.sub("", text)  # what a URL names is on the web, not in a checkout
    for up in UP_PATH.findall(text):
        if not inside(here / up):
            found.append(f"path out of the repository: {up}")
        elif not any(c in up for c in "<*") and not (here / up).exists():
            found.append(f"path to nothing: {up}")
    for where in MACHINE_PATHS.findall(text):
        found.append(f"a path on some machine: {where}")
    for name in MARKDOWN_NAME.findall(text):
        if "<" in name:
            continue  # a pattern such as docs/<topic>.md
        candidates = {(here / name).resolve(), (REPO / name).resolve()}
        exists = any(inside(c) and c.exists() for c in candidates)
        if not exists and not any(f.endswith("/" + name) for f in markdown_files()):
            found.append(f"names a page the repository does not have: {name}")
    return found


def web_links(text: str) -> list[str]:
    """Every http(s) link of a Markdown text: inline (`[x](https://...)`), reference
    (`[x]: https://...`), autolinks (`<https://...>`) and bare URLs a renderer would link;
    those inside code are left out."""
    return WEB_LINK.findall(CODE_SPAN.sub("", CODE_BLOCK.sub("", text)))


def test_readme_and_docs_link_to_nothing_on_the_web() -> None:
    found = {str(page.relative_to(REPO)): web_links(page.read_text()) for page in pages()}
    assert {page: links for page, links in found.items() if links} == {}
    assert len(found) >= 8, found


def test_the_web_link_check_catches_every_form_and_leaves_code_alone() -> None:
    assert web_links("with the [Stripe CLI](https://docs.stripe.com/stripe-cli) logged in") == [
        "https://docs.stripe.com/stripe-cli"
    ]
    assert web_links("see <http://example.com/a>.") == ["http://example.com/a"]
    assert web_links("[cli]: https://docs.stripe.com/stripe-cli") == [
        "https://docs.stripe.com/stripe-cli"
    ]
    assert web_links("read HTTPS://Example.com/x first") == ["HTTPS://Example.com/x"]
    fenced = "```sh\nexport MPPO_PAYMENT_RETURN_URL=http://127.0.0.1:8080/\n```\n"
    assert web_links(fenced) == []
    assert web_links("their page, `http://127.0.0.1:8080/g/<group id>`, and the Stripe CLI") == []
    assert web_links("`stripe listen --forward-to localhost:8080/payments/webhook/stripe`") == []
    assert web_links("OTLP over `http/protobuf`; see docs/payment.md") == []


def test_readme_and_docs_point_only_inside_the_repository() -> None:
    found = {str(page.relative_to(REPO)): problems(page, page.read_text()) for page in pages()}
    assert {page: issues for page, issues in found.items() if issues} == {}
    assert len(found) >= 8, found  # the README and the docs pages were all read


def test_the_check_catches_what_a_fresh_clone_would_miss() -> None:
    readme = REPO / "README.md"
    doc = REPO / "docs" / "design.md"
    assert problems(readme, "Design: the seed document in `../shared/`.") == [
        "path out of the repository: ../shared/"
    ]
    assert problems(readme, "See ARCHITECTURE.md §3.") == [
        "names a page the repository does not have: ARCHITECTURE.md"
    ]
    assert problems(readme, "[design](docs/nothing-here.md)") == [
        "broken link: docs/nothing-here.md",
        "names a page the repository does not have: docs/nothing-here.md",
    ]
    assert (
        problems(doc, "[up](../../outside.md)")[0] == "link out of the repository: ../../outside.md"
    )
    assert problems(doc, "read /work/shared/notes") == ["a path on some machine: /work/"]
    assert problems(doc, "in `../shared/`") == ["path to nothing: ../shared/"]
    assert problems(doc, "[lifecycle](lifecycle.md#group), [readme](../README.md)") == []
    assert problems(readme, "[ok](docs/lifecycle.md) and https://docs.stripe.com/x.md") == []


def test_the_readme_opens_with_the_two_commands_and_links_the_lifecycle_page() -> None:
    text = (REPO / "README.md").read_text()
    assert text.splitlines()[:6] == [
        "# MPPO — Multi-Party Payment Orchestrator",
        "",
        "```sh",
        "make run    # install what is needed, then run the whole system in the foreground "
        "(Ctrl-C stops it)",
        "make test   # install what is needed, then run every check and every test",
        "```",
    ]
    assert "](docs/lifecycle.md)" in text
    assert "](docs/design.md)" in text
