"""Virtual meter formulas: parsed and checked once, evaluated over whole arrays.

A formula is arithmetic over other meters' 15-minute energy, e.g. `main - (chiller + ahu)`.
It is checked when the site is saved, so a typo or a loop fails there with the meter's
name instead of deep inside a job, and the job evaluates it vectorised with numpy.

How a formula names a meter:
  * a bare identifier when the meter name is one (letters, digits, underscore, not
    starting with a digit): `main`, `AHU_1`;
  * [square brackets] around any other name: `[AHU-1 supply]`, `[Main.L1]`;
  * or "double" / 'single' quotes: `"Chiller 2"` (for a name holding a `]`).
A bare `min`, `max` or `abs` directly followed by `(` is a function; a meter with such a
name is written in brackets.

Allowed: numbers, + - * /, unary minus, parentheses, min(a, b, ...), max(a, b, ...),
abs(x). Division only by a non-zero constant: dividing by a meter risks division by zero
in any interval where that meter reads 0, so it is rejected at save time.
"""

from __future__ import annotations

import ast
import graphlib
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import sympy

FUNCTIONS: dict[str, Callable[..., sympy.Expr]] = {
    "min": sympy.Min,
    "max": sympy.Max,
    "abs": sympy.Abs,
}
_ARITY = {"min": (1, None), "max": (1, None), "abs": (1, 1)}


class FormulaError(ValueError):
    """A formula that cannot be used; the message says what is wrong and where."""


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | \[(?P<bracket>[^\]]*)\]
  | "(?P<dquote>[^"]*)"
  | '(?P<squote>[^']*)'
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|//|[-+*/(),%^])
    """,
    re.VERBOSE,
)


def _tokenize(text: str) -> tuple[str, list[str]]:
    """Python-expression source with every meter name replaced by a placeholder, and the
    names in placeholder order."""
    out: list[str] = []
    names: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            ch = text[pos]
            if ch == "[":
                raise FormulaError(f"unclosed '[' at position {pos + 1}")
            if ch in "\"'":
                raise FormulaError(f"unclosed quote {ch} at position {pos + 1}")
            raise FormulaError(f"unexpected character {ch!r} at position {pos + 1}")
        kind = m.lastgroup
        value = m.group(kind)
        end = m.end()
        called = text[end:].lstrip().startswith("(")
        if kind == "ident" and called and value in FUNCTIONS:
            out.append(value)
        elif kind == "ident" and called:
            raise FormulaError(
                f"unsupported function {value}(): allowed are {', '.join(sorted(FUNCTIONS))}"
            )
        elif kind in ("bracket", "dquote", "squote", "ident"):
            name = value.strip()
            if not name:
                raise FormulaError(f"empty meter name at position {pos + 1}")
            if name not in names:
                names.append(name)
            out.append(f"_m{names.index(name)}")
        elif kind == "op":
            if value in ("**", "^"):
                raise FormulaError("unsupported operator '^'/'**': only + - * / are allowed")
            if value in ("//", "%"):
                raise FormulaError(f"unsupported operator {value!r}: only + - * / are allowed")
            out.append(value)
        elif kind == "number":
            out.append(value)
        else:
            out.append(" ")
        pos = end
    return " ".join(out), names


@dataclass(frozen=True)
class Formula:
    """A parsed formula: the meter names it reads and a vectorised evaluator."""

    text: str
    expr: sympy.Expr
    names: tuple[str, ...]
    _symbols: tuple[sympy.Symbol, ...] = field(repr=False)
    _fn: Callable[..., np.ndarray] = field(repr=False, compare=False)

    def evaluate(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Energy per interval from the inputs' aligned arrays (NaN = missing input).

        Any missing input makes that interval NaN, whatever the formula (even where the
        algebra would cancel the input out): a missing input is never a silent zero.
        """
        missing = [n for n in self.names if n not in values]
        if missing:
            raise KeyError(f"no values for meter(s) {', '.join(map(repr, missing))}")
        arrays = [np.asarray(values[n], dtype=float) for n in self.names]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        result = np.broadcast_to(np.asarray(self._fn(*arrays), dtype=float), shape).copy()
        gaps = np.zeros(shape, dtype=bool)
        for a in arrays:
            gaps |= np.isnan(a)
        result[gaps] = np.nan
        return result


def _to_sympy(node: ast.AST, symbols: list[sympy.Symbol], names: list[str]) -> sympy.Expr:
    if isinstance(node, ast.Expression):
        return _to_sympy(node.body, symbols, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return sympy.Float(node.value) if isinstance(node.value, float) else sympy.Integer(node.value)
    if isinstance(node, ast.Name) and node.id.startswith("_m"):
        return symbols[int(node.id[2:])]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _to_sympy(node.operand, symbols, names)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        left = _to_sympy(node.left, symbols, names)
        right = _to_sympy(node.right, symbols, names)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            if right.free_symbols:
                used = sorted(names[symbols.index(s)] for s in right.free_symbols)
                raise FormulaError(
                    f"division by meter {', '.join(map(repr, used))} risks division by zero: "
                    "divide only by a non-zero constant"
                )
            if right == 0:
                raise FormulaError("division by zero")
            return left / right
        raise FormulaError(f"unsupported operator {type(node.op).__name__}: only + - * / are allowed")
    if isinstance(node, ast.Call):
        fname = node.func.id if isinstance(node.func, ast.Name) else None
        if fname and fname.startswith("_m"):
            raise FormulaError(f"meter {names[int(fname[2:])]!r} is followed by '(': a meter is not a function")
        if fname not in FUNCTIONS:
            raise FormulaError(
                f"unsupported function {fname or '?'}(): allowed are {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords:
            raise FormulaError(f"{fname}() takes no keyword arguments")
        lo, hi = _ARITY[fname]
        if len(node.args) < lo or (hi is not None and len(node.args) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}"
            raise FormulaError(f"{fname}() takes {want} argument(s), got {len(node.args)}")
        return FUNCTIONS[fname](*(_to_sympy(a, symbols, names) for a in node.args))
    if isinstance(node, ast.Name):
        raise FormulaError(f"unsupported function or name {node.id!r}")
    raise FormulaError(f"unsupported syntax: {type(node).__name__}")


def parse_formula(text: str) -> Formula:
    """Parse and check a formula; raises FormulaError with a clear message."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("formula is empty")
    source, names = _tokenize(text)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise FormulaError(f"not a valid expression: {text.strip()!r}") from None
    symbols = [sympy.Symbol(f"_m{i}") for i in range(len(names))]
    expr = _to_sympy(tree, symbols, names)
    if not names:
        raise FormulaError("formula refers to no meter")
    fn = sympy.lambdify(symbols, expr, modules="numpy")
    return Formula(text=text, expr=expr, names=tuple(names), _symbols=tuple(symbols), _fn=fn)


def dependency_order(formulas: Mapping[str, Formula]) -> list[str]:
    """Virtual meter names so that each comes after the virtual meters it reads.

    Raises FormulaError naming the cycle when there is one."""
    graph = {name: [n for n in f.names if n in formulas] for name, f in formulas.items()}
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise FormulaError("cycle " + " -> ".join(reversed(cycle))) from None


def validate_formulas(formulas: dict[str, str], known_meters: set[str]) -> list[str]:
    """Every problem in a site's virtual meter formulas, as `meters[NAME].formula: ...`.

    `formulas` maps virtual meter name to formula text; `known_meters` are all other
    meter names (virtual ones may be included or not). Empty list: all good.
    """
    errors: list[str] = []
    parsed: dict[str, Formula] = {}
    known = set(known_meters) | set(formulas)
    for name, text in formulas.items():
        where = f"meters[{name}].formula"
        try:
            f = parse_formula(text)
        except FormulaError as exc:
            errors.append(f"{where}: {exc}")
            continue
        bad = False
        for ref in f.names:
            if ref == name:
                errors.append(f"{where}: refers to itself")
                bad = True
            elif ref not in known:
                errors.append(f"{where}: unknown meter {ref!r}")
                bad = True
        if not bad:
            parsed[name] = f
    # Cycles through other virtual meters: report each cycle once, on its first member.
    graph = {n: [r for r in f.names if r in parsed] for n, f in parsed.items()}
    reported: set[frozenset[str]] = set()
    for start in sorted(graph):
        cycle = _find_cycle(graph, start)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            errors.append(f"meters[{cycle[0]}].formula: cycle {' -> '.join(cycle + [cycle[0]])}")
    return errors


def _find_cycle(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """A cycle through `start`, as the list of its members, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None
