"""Where an intervention applies during generation, in absolute positions of the request's own sequence.

The prompt holds positions ``0 .. prompt_len - 1``; generated tokens follow. An intervention description is
resolved against that sequence, not against the padded batch, so a request edits the same tokens whether it is
served alone or in a batch, and whether its tokens are processed in the prompt pass or in a decode step:

- ``"all"``: every position, prompt and generated;
- ``"last"``: the prompt's last token and every generated token (each position the next token is read from);
- a slice: ``start`` / ``stop`` in absolute positions, negative values counting back from the end of the prompt;
  an open ``stop`` extends over the generated tokens;
- explicit indices: absolute positions (negative ones count back from the end of the prompt); positions beyond
  the prompt apply when that generated token is processed.
"""

from __future__ import annotations

from ..spec import Positions, PositionSlice


class PositionError(ValueError):
    pass


def _absolute(index: int, prompt_len: int) -> int:
    return index + prompt_len if index < 0 else index


def check(positions: Positions, prompt_len: int) -> None:
    """Reject explicit positions that fall before the start of the prompt."""
    if isinstance(positions, list):
        bad = [p for p in positions if _absolute(p, prompt_len) < 0]
        if bad:
            raise PositionError(f"positions {bad} are before the start of a prompt of {prompt_len} tokens")


def columns(positions: Positions, prompt_len: int, start: int, count: int) -> list[int]:
    """Offsets in ``range(count)`` of the tokens at absolute positions ``start .. start + count - 1`` to edit."""
    if positions == "all":
        return list(range(count))
    if positions == "last":
        first = prompt_len - 1
    elif isinstance(positions, PositionSlice):
        first = 0 if positions.start is None else max(_absolute(positions.start, prompt_len), 0)
        stop = None if positions.stop is None else _absolute(positions.stop, prompt_len)
        end = start + count if stop is None else min(stop, start + count)
        return list(range(max(first - start, 0), max(end - start, 0)))
    else:
        wanted = {_absolute(p, prompt_len) for p in positions}
        return [i for i in range(count) if start + i in wanted]
    return list(range(max(first - start, 0), count))
