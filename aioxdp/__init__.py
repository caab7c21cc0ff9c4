"""asyncio on a kernel-bypass TCP stack (AF_XDP + a userspace TCP core), with Linux kept in charge.

Entry points follow uvloop's: ``aioxdp.run(main())``, ``aioxdp.install()``,
``aioxdp.new_event_loop()``, ``aioxdp.EventLoopPolicy``. Configure with
keyword arguments (``interface="eth1"``) or ``AIOXDP_*`` environment variables.

The names are imported lazily, so that ``aioxdp.tcp`` (the pure-Python,
sans-IO core) imports without the native extension or pyroute2.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EventLoopPolicy", "Settings", "install", "new_event_loop", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'aioxdp' has no attribute {name!r}")
