"""The ``calculate`` tool: integer arithmetic from an allowlist of syntax, never ``eval``.

The expression is parsed with :func:`ast.parse` (``mode="eval"``) and walked node by node. Only
these nodes are accepted; anything else (names, attribute access, subscripts, comprehensions,
strings, floats, calls to other functions) is refused before a single operation runs:

- integer literals (``True``/``False`` are refused although Python counts them as ints);
- binary ``+ - * // % **``; unary ``-`` and ``+``; parentheses (they leave no node);
- calls to ``abs(x)``, ``min(a, b, ...)`` and ``max(a, b, ...)`` with positional arguments.

Size caps keep every call fast whatever the input: the text is at most ``MAX_CHARS`` characters
(which also bounds nesting), every operand and intermediate value has at most ``MAX_DIGITS``
decimal digits, an exponent is at most ``MAX_EXPONENT``, and a power whose result would
exceed the digit cap is refused *before* it is computed (from the base's bit length), so
``2**100000`` costs a comparison, not a bignum. ``//`` and ``%`` follow Python (floor
division, result with the divisor's sign); division by zero is an error.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_CHARS = 500
"""Longest accepted expression; Python's parser also caps nesting, this keeps parsing trivial."""
MAX_DIGITS = 100
"""Largest magnitude of any operand or intermediate value, in decimal digits."""
MAX_EXPONENT = 1024
"""Largest exponent of ``**`` (the digit cap usually binds first)."""

_LIMIT = 10**MAX_DIGITS
_LIMIT_BITS = _LIMIT.bit_length()
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS = {"abs": (abs, 1, 1), "min": (min, 1, None), "max": (max, 1, None)}
_SYMBOLS = {"Div": "/", "MatMult": "@", "BitAnd": "&", "BitOr": "|", "BitXor": "^", "LShift": "<<",
            "RShift": ">>", "Invert": "~", "Not": "not"}
ALLOWED = "integer literals, + - * // % **, unary -, parentheses and the functions abs, min, max"


class CalculatorError(ValueError):
    """An expression outside the allowlist or the size caps; the message says which rule."""


def calculate(expression: str) -> int:
    """The integer value of ``expression``; :class:`CalculatorError` when it is not allowed.

    >>> calculate("50*60 % 97")
    90
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"expected the expression as a string, got {type(expression).__name__}")
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"expression has {len(expression)} characters; the cap is {MAX_CHARS}")
    if not expression.strip():
        raise CalculatorError("empty expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: an integer literal past Python's digit limit
        raise CalculatorError(f"not a valid expression ({exc.msg if isinstance(exc, SyntaxError) else exc})") from None
    return _value(tree.body)


def format_result(value: int) -> str:
    """The tool's text for a value: plain decimal, as the task answers are written."""
    return str(value)


def _value(node: ast.AST) -> int:
    if isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise CalculatorError(f"only integer literals are allowed, got {node.value!r}")
        return _capped(node.value, "literal")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        elif isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculatorError("division by zero")
        return _capped(_BINARY[type(node.op)](left, right), "result")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.Call):
        return _call(node)
    raise CalculatorError(f"{_describe(node)} is not allowed; allowed: {ALLOWED}")


def _call(node: ast.Call) -> int:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in _FUNCTIONS:
        shown = name if name is not None else _describe(node.func)
        raise CalculatorError(f"calling {shown!r} is not allowed; allowed functions: {', '.join(_FUNCTIONS)}")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise CalculatorError(f"{name}() takes positional arguments only")
    fn, least, most = _FUNCTIONS[name]
    if len(node.args) < least or (most is not None and len(node.args) > most):
        expected = f"{least}" if least == most else f"at least {least}"
        raise CalculatorError(f"{name}() takes {expected} argument(s), got {len(node.args)}")
    args = [_value(arg) for arg in node.args]
    return fn(*args) if name == "abs" else fn(args)


def _check_power(base: int, exponent: int) -> None:
    if exponent < 0:
        raise CalculatorError(f"negative exponent {exponent}: the result would not be an integer")
    if exponent > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent} exceeds the cap of {MAX_EXPONENT}")
    # |base| ** exponent < 2 ** (bits * exponent): refuse before computing when that can pass the cap.
    if abs(base) > 1 and (abs(base).bit_length() - 1) * exponent >= _LIMIT_BITS:
        raise CalculatorError(f"{base}**{exponent} would exceed {MAX_DIGITS} digits")


def _capped(value: int, what: str) -> int:
    if abs(value) >= _LIMIT:
        digits = math.floor(math.log10(abs(value))) + 1
        raise CalculatorError(f"{what} has {digits} digits; the cap is {MAX_DIGITS}")
    return value


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Attribute):
        return f"attribute access ('.{node.attr}')"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        op = type(node.op).__name__
        return f"the operator {_SYMBOLS.get(op, op)!r}"
    return f"{type(node).__name__} syntax"
