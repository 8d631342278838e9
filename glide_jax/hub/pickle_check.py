"""A dry run of a pickle's opcodes that refuses what would crash or flood CPython's unpickler.

The unpickler trusts three things a hostile pickle controls, before any callable
the caller allows has run:

- memo indices: its memo table grows to twice the largest index stored, so
  ``LONG_BINPUT 2**27`` in an 8-byte pickle costs 2 GB. An honest pickler numbers
  entries consecutively, so an index stays below the number of opcodes seen.
- nesting: hashing a dict key of deeply nested tuples recurses in C without a
  limit and overflows the stack (a 1 MB pickle segfaults the interpreter). A
  state dict nests a few levels deep.
- object count: one byte of ``EMPTY_SET`` makes a 216-byte set, so every opcode
  is charged ``OPCODE_BYTES`` plus its argument against the file's byte budget.

The dry run models the unpickler's stack with one number per object, its
nesting depth; it never builds an object.
"""

from __future__ import annotations

import io
import pickletools
from typing import Dict, List, Tuple

from glide_jax.hub.checkpoint_zip import CheckpointZip, clip, describe, format_bytes

MAX_PICKLE_DEPTH = 100
OPCODE_BYTES = 256  # at least what any one opcode can make the unpickler allocate, besides its argument
_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")
_GETS = ("GET", "BINGET", "LONG_BINGET")
# Opcodes that add to the container below their arguments (and leave it on the stack) rather than build a new one.
_IN_PLACE = ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD")


def _argument_bytes(argument) -> int:
    if isinstance(argument, (str, bytes, bytearray)):
        return len(argument)
    return argument.bit_length() // 8 if isinstance(argument, int) else 0


class _Refusal(Exception):
    """A problem at the current opcode; ``check_pickle`` adds the file, opcode and position."""


def _pop_arguments(opcode, stack: List[int], marks: List[int]) -> Tuple[List[int], List[int]]:
    """Pop what ``opcode`` consumes: (the container it adds to, if any; the other arguments)."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        if not marks:
            raise _Refusal("has no mark to pop")
        mark, below = marks.pop(), before.index(pickletools.markobject)
        if mark - below < (marks[-1] if marks else 0) or mark > len(stack):
            raise _Refusal("underflows the stack")
        containers, items = stack[mark - below:mark], stack[mark:]
        del stack[mark - below:]
        return containers, items
    start = len(stack) - len(before)
    if start < (marks[-1] if marks else 0):
        raise _Refusal("underflows the stack")
    popped = stack[start:]
    del stack[start:]
    return (popped[:1], popped[1:]) if opcode.name in _IN_PLACE else ([], popped)


def _step(opcode, argument, count: int, stack: List[int], marks: List[int], memo: Dict[int, int]) -> None:
    name, floor = opcode.name, marks[-1] if marks else 0
    if name in _PUTS or name == "MEMOIZE":
        index = len(memo) if name == "MEMOIZE" else argument
        if not (isinstance(index, int) and 0 <= index < count):
            raise _Refusal(f"stores memo index {describe(index)} after only {count} opcodes")
        if len(stack) <= floor:
            raise _Refusal("memoizes from an empty stack")
        memo[index] = stack[-1]
    elif name in _GETS:
        stack.append(memo.get(argument, 0))
    elif name == "MARK":
        marks.append(len(stack))
    elif name == "DUP" and len(stack) > floor:
        stack.append(stack[-1])
    elif name == "POP" and len(stack) == floor and marks:
        marks.pop()  # as in CPython, POP right after MARK discards the mark
    else:
        containers, items = _pop_arguments(opcode, stack, marks)
        if not opcode.stack_after:
            return
        if name in _IN_PLACE:
            depth = max(containers[0], 1 + max(items, default=0))
        else:
            depth = 1 + max(containers + items, default=0)
        if depth > MAX_PICKLE_DEPTH:
            raise _Refusal(f"nests objects more than {MAX_PICKLE_DEPTH} deep")
        stack.extend([depth] * len(opcode.stack_after))


def check_pickle(data: bytes, archive: CheckpointZip) -> None:
    """Refuse ``data`` (the archive's pickle) if unpickling it could crash, or allocate beyond the budget."""
    stack: List[int] = []  # the nesting depth of each object on the unpickler's stack
    marks: List[int] = []
    memo: Dict[int, int] = {}
    opcodes = pickletools.genops(io.BytesIO(data))
    count = cost = 0
    while True:
        try:
            opcode, argument, position = next(opcodes)
        except StopIteration:
            return
        except Exception as e:  # genops reports every malformation as some exception
            raise archive.error(f"the pickle is malformed ({type(e).__name__}: {clip(str(e))})") from e
        count += 1
        cost += OPCODE_BYTES + _argument_bytes(argument)
        if cost > archive.budget:
            raise archive.error(f"the pickle's {count} opcodes could build {format_bytes(cost)} of objects, over "
                                f"the {format_bytes(archive.budget)} budget (max_total_bytes, or "
                                "max_compression_ratio times the file size)")
        try:
            _step(opcode, argument, count, stack, marks, memo)
        except _Refusal as refusal:
            raise archive.error(f"the pickle {refusal} ({opcode.name} at byte {position})") from None

