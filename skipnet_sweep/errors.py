"""Errors of bad input that more than one layer raises.

``SpaceError`` lives here rather than in ``sweep.space`` because the methods raise it too
(their plan and validation hooks read the space), and the space reads the method registry:
a module below both keeps the import direction one way.
"""

from __future__ import annotations


class SpaceError(ValueError):
    """A search space that cannot run; the message is one line."""
