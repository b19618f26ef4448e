"""Cutting a text body into blocks of whole lines, to work on a few MB at a time."""

from __future__ import annotations


def line_blocks(data: bytes, size: int) -> list[tuple[int, int]]:
    """(first, end) byte spans of about `size` bytes, each ending just after a newline
    (or at the end of `data`): their lines, in order, are the body's lines."""
    spans = []
    first, total = 0, len(data)
    while first < total:
        end = first + size
        if end >= total:
            end = total
        else:
            cut = data.rfind(b"\n", first, end)
            if cut < 0:  # one line longer than a block
                cut = data.find(b"\n", end)
            end = total if cut < 0 else cut + 1
        spans.append((first, end))
        first = end
    return spans
