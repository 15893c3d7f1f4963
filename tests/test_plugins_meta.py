"""Every hookspec is documented in docs/plugins.md with its exact signature, and tested."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from headend.plugins import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
HEADING = re.compile(r"^#{2,4} (\w+)\s*$", re.M)


def signature_text(fn) -> str:
    """`name(arg: Type, ...) -> Return` as written in hookspecs.py (annotations are strings)."""
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{fn.__name__}({params}) -> {sig.return_annotation}"


def documented() -> dict[str, str]:
    """Hook name -> the first code span after its heading in the docs."""
    text = DOCS.read_text()
    found = {}
    for match in HEADING.finditer(text):
        span = re.search(r"`([^`\n]+)`", text[match.end():])
        if span:
            found[match.group(1)] = span.group(1)
    return found


def test_every_hookspec_is_documented_with_its_exact_signature():
    docs = documented()
    specs = hookspecs.spec_names()
    assert len(specs) >= 13
    for name in specs:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and fn.__doc__.strip(), f"hookspec {name} has no docstring"
        assert name in docs, f"docs/plugins.md has no section for hook {name}"
        assert docs[name] == signature_text(fn), f"docs/plugins.md: wrong signature of {name}"


def test_docs_describe_no_hook_that_does_not_exist():
    hook_like = {n for n in documented() if n.startswith("register_") or n.endswith("ed")}
    assert hook_like <= set(hookspecs.spec_names())


def test_every_hookspec_is_exercised_by_a_test():
    here = Path(__file__).resolve()
    sources = "\n".join(
        p.read_text() for p in here.parent.rglob("test_*.py") if p != here
    )
    missing = [n for n in hookspecs.spec_names() if not re.search(rf"\b{n}\b", sources)]
    assert not missing, f"hooks without a test: {missing}"
