"""A progress bar fed by an object's status: tqdm's notebook widget in Jupyter, a terminal bar elsewhere.

The bar shows what the operator reports (tokens done of the total, its throughput and ETA, restarts, per-SAE
metrics), not a rate of its own: the status is the truth, and it arrives in steps. Without tqdm installed (it comes
with the workloads extra), a line is printed whenever the phase or the whole percent changes.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .status import progress_fields

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}"


def in_notebook() -> bool:
    """True in a Jupyter kernel (where a widget renders), False in a terminal IPython or plain Python."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()  # type: ignore[attr-defined]
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})


def _counts(status: Any) -> tuple[int, int, str]:
    """(done, total, unit) for the bar: tokens for jobs, ready replicas for a service."""
    progress = getattr(status, "progress", None)
    if progress is not None and progress.tokens_total:
        return progress.tokens_done, progress.tokens_total, "tok"
    if hasattr(status, "updated_replicas"):
        return status.ready_replicas, max(status.replicas, status.ready_replicas, 1), "ready"
    return 0, 0, "tok"


def _bar_class(notebook: bool) -> Any:
    """tqdm's widget bar in a notebook that can render it (ipywidgets installed), tqdm's text bar otherwise; None
    without tqdm."""
    try:
        import tqdm as text
    except ImportError:
        return None
    if notebook:
        from tqdm import notebook as widget

        if getattr(widget, "IProgress", None) is not None:
            return widget.tqdm
    return text.tqdm


def _is_widget(cls: Any) -> bool:
    return cls.__module__ == "tqdm.notebook"


class StatusBar:
    """Draws one object's status; call :meth:`update` with each new status and :meth:`close` at the end."""

    def __init__(self, label: str, *, stream: TextIO | None = None, notebook: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.notebook = in_notebook() if notebook is None else notebook
        self._bar: Any = None
        self._last_line: tuple[str, int] | None = None
        self._tqdm: Any = _bar_class(self.notebook)
        if self.notebook and self._tqdm is not None and not _is_widget(self._tqdm):
            self.notebook = False  # a kernel without ipywidgets: the text bar, in the cell's output

    def update(self, status: Any) -> None:
        if status is None:
            return
        done, total, unit = _counts(status)
        fields = progress_fields(status)
        if self._tqdm is None:
            self._print_line(status, done, total, fields)
            return
        if self._bar is None:
            kwargs: dict[str, Any] = {"desc": self.label, "unit": unit, "unit_scale": unit == "tok",
                                      "bar_format": BAR_FORMAT, "total": total or None}
            if not self.notebook:
                kwargs |= {"file": self.stream, "dynamic_ncols": True}
            self._bar = self._tqdm(**kwargs)
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.set_postfix_str("  ".join(f"{k}={v}" for k, v in fields.items()), refresh=False)
        self._bar.refresh()

    def _print_line(self, status: Any, done: int, total: int, fields: dict[str, str]) -> None:
        percent = int(100 * done / total) if total else 0
        key = (status.phase, percent)
        if key == self._last_line:
            return
        self._last_line = key
        details = "  ".join(f"{k}={v}" for k, v in fields.items() if k != "phase")
        print(f"{self.label}: {status.phase} {percent}% {done}/{total or '?'} {details}".rstrip(), file=self.stream,
              flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
