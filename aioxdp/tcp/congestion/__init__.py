"""Congestion controllers behind one interface (``base.CongestionControl``)."""

from __future__ import annotations

from .base import CongestionControl
from .cubic import Cubic
from .newreno import NewReno

_ALGORITHMS: dict[str, type[CongestionControl]] = {cls.name: cls for cls in (NewReno, Cubic)}


def make_congestion(name: str, *, mss: int, initial_window_segments: int = 10) -> CongestionControl:
    """A new controller by name: "newreno" or "cubic"."""
    try:
        cls = _ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; "
                         f"choose from {sorted(_ALGORITHMS)}") from None
    return cls(mss=mss, initial_window_segments=initial_window_segments)


__all__ = ["CongestionControl", "Cubic", "NewReno", "make_congestion"]
