"""Small builders shared by the protocol session tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation, OpType
from kora.protocol import Action, SendFrame

NODE = "01a21c24-c3bc-7dba-ac3b-d804f2178f89"


def ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"{prefix}-{next(counter)}"


def make_op(seq: int, node: str = NODE) -> Operation:
    return Operation(
        id=f"{seq:064x}",
        node_id=node,
        type=OpType.INSERT,
        collection="todos",
        record_id=f"rec-{seq}",
        data={"title": f"todo {seq}"},
        previous_data=None,
        timestamp=HLCTimestamp(1_700_000_000_000 + seq, 0, node),
        sequence_number=seq,
    )


def frames(actions: Iterable[Action]) -> list[Any]:
    return [action.frame for action in actions if isinstance(action, SendFrame)]


def sent(actions: Iterable[Action]) -> list[Any]:
    return [action.message for action in actions if isinstance(action, SendFrame)]


def others(actions: Iterable[Action]) -> list[Action]:
    return [action for action in actions if not isinstance(action, SendFrame)]
