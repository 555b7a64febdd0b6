"""Write a benchmark's markdown table into its own marked section of docs/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"


def write_section(name: str, markdown: str, path: Path = RESULTS_MD) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(out: Path, result: dict, section: str, markdown: str) -> None:
    """Write a benchmark's results JSON to ``out`` and its markdown into its section of docs/RESULTS.md."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_section(section, markdown)
