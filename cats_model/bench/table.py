"""The benchmarks' tables: Markdown, so that a result pastes into the README as it is printed."""


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        f"| {' | '.join(header)} |",
        "|" + "---|" * len(header),
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
