"""What the VM objects of one node share: its memory and its frame account.

Set once per node process by the VM's node start-up (`install`), before any
VM object can miss on that node; reps read it in their constructors.
"""

from __future__ import annotations

import attrs

from tornado_dsm.kernel import DSMInternalError


@attrs.define
class NodeState:
    """The node's NodeMemory and FrameAccount."""

    memory: object
    frames: object


_state: NodeState | None = None


def install(state: NodeState) -> None:
    """Make ``state`` this process's node state."""
    global _state
    _state = state


def clear() -> None:
    """Forget the node state (the node's memory is closed)."""
    global _state
    _state = None


def current() -> NodeState:
    """This node's state; DSMInternalError if the VM is not started here."""
    if _state is None:
        raise DSMInternalError("nodestate.current", "the VM has not been started on this node")
    return _state
