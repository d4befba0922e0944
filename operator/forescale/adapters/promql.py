"""Scope a PromQL query to one tenant, as prom-label-proxy does: every vector selector gets
the label matcher ``<label>="<value>"`` (``http_requests_total{job="web"}`` becomes
``http_requests_total{namespace="shop",job="web"}``).

The query is tokenised (strings, numbers and durations, identifiers, operators) and walked
with just enough of PromQL's grammar to tell a vector selector from a function, an
aggregation, a keyword, a label list (``by (...)``, ``on (...)``, ``group_left(...)``) or a
range/subquery (``[5m]``, ``[1h:1m]``): a regular expression over the text could be fooled
by a string or a label list. ``offset``, ``by``, ``without``, ``and``, ``or`` and ``unless``
are metric names where PromQL expects an operand (``rate(offset[5m])``), and scoped there.
A selector that already matches the label with another value or operator is refused: the
tenant asked for someone else's series.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forescale.core.errors import InvalidInputError

#: Longest query accepted (the CRD's limit too).
MAX_QUERY_LENGTH = 4096

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right",
                       "offset", "bool", "and", "or", "unless", "atan2"})
#: Keywords followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_NUMBER_WORDS = frozenset({"inf", "nan"})
#: Keywords PromQL also takes as metric names where an operand is expected: ``rate(offset[5m])``
#: and ``sum(by)`` select the series named ``offset`` and ``by``, which must be scoped too.
_NAME_KEYWORDS = frozenset({"by", "without", "and", "or", "unless", "offset"})
#: Tokens after which an operand (a selector) is expected, not an operator or a modifier.
_OPERAND_AFTER = frozenset({"(", ",", "+", "-", "*", "/", "%", "^", "==", "!=", "<", ">",
                            "<=", ">=", "and", "or", "unless", "atan2", "bool",
                            "group_left", "group_right"})

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[a-zA-Z]+\d*)*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
""", re.VERBOSE)


class PromQLError(InvalidInputError):
    """The query cannot be scoped (not PromQL we understand, or it names another tenant)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str

    @property
    def word(self) -> str:
        """The text as PromQL's lexer looks keywords up: lower-cased (``BY`` is ``by``)."""
        return self.text.lower() if self.kind == "ident" else self.text


def _tokens(query: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None:
            raise PromQLError(f"unexpected character {query[pos]!r} at position {pos}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            out.append(_Token(kind, match.group()))
        pos = match.end()
    return out


def scope_query(query: str, label: str, value: str) -> str:
    """``query`` with ``label="value"`` enforced on every vector selector."""
    if len(query) > MAX_QUERY_LENGTH:
        raise PromQLError(f"query longer than {MAX_QUERY_LENGTH} characters")
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
        raise PromQLError(f"{label!r} is not a label name")
    matcher = f'{label}="{_escape(value)}"'
    tokens = _tokens(query)
    out: list[str] = []
    i, depth, selectors = 0, 0, 0
    #: Indices of keyword-named tokens taken as metric names, and of the ")" that closes a
    #: binary operator's label list (``on (job)``): an operand follows the latter.
    names: set[int] = set()
    modifier_ends: set[int] = set()
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        named = tok.word in _NAME_KEYWORDS and _operand_expected(tokens, i, names,
                                                                 modifier_ends)
        if named:
            names.add(i)
        if tok.kind == "ident" and tok.word in _LABEL_LISTS and nxt is not None \
                and nxt.text == "(" and not named:
            end = _closing(tokens, i + 1, "(", ")")
            if tok.word not in ("by", "without"):
                modifier_ends.add(end)
            out.extend(t.text for t in tokens[i:end + 1])
            i = end + 1
            continue
        if tok.text == "[":  # a range or subquery: durations, never selectors
            end = _closing(tokens, i, "[", "]")
            out.extend(t.text for t in tokens[i:end + 1])
            i = end + 1
            continue
        called = nxt is not None and (nxt.text == "(" or (
            # An aggregation with its modifier first: sum by (job) (...).
            nxt.word in ("by", "without") and i + 2 < len(tokens)
            and tokens[i + 2].text == "("))
        if tok.kind == "ident" and tok.word not in _NUMBER_WORDS \
                and (tok.word not in _KEYWORDS or named) and not called:
            if out and out[-1] == "@":  # "@ start()" is a function; "@ 123" a number
                raise PromQLError(f"unexpected {tok.text!r} after @")
            # A metric name: its matchers follow in braces, or none do.
            if nxt is not None and nxt.text == "{":
                end = _closing(tokens, i + 1, "{", "}")
                out.append(tok.text + _matchers(tokens[i + 2:end], label, value, matcher))
                i = end + 1
            else:
                out.append(f"{tok.text}{{{matcher}}}")
                i += 1
            selectors += 1
            continue
        if tok.text == "{":  # a selector with matchers only: {job="web"}
            end = _closing(tokens, i, "{", "}")
            out.append(_matchers(tokens[i + 1:end], label, value, matcher))
            i = end + 1
            selectors += 1
            continue
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
            if depth < 0:
                raise PromQLError("unbalanced parentheses")
        out.append(tok.text)
        i += 1
    if depth != 0:
        raise PromQLError("unbalanced parentheses")
    if selectors == 0:
        raise PromQLError("the query selects no series")
    return _join(out)


def _operand_expected(tokens: list[_Token], i: int, names: set[int],
                      modifier_ends: set[int]) -> bool:
    """Whether the token at ``i`` stands where PromQL expects an operand: at the start, or
    after an opening bracket, a comma, a binary operator (a keyword one that was not itself
    taken as a metric name), ``bool``, or a binary operator's label list."""
    if i == 0 or (i - 1) in modifier_ends:
        return True
    prev = tokens[i - 1]
    return prev.word in _OPERAND_AFTER and (i - 1) not in names and prev.kind != "string"


def _closing(tokens: list[_Token], start: int, open_: str, close: str) -> int:
    """Index of the token closing the bracket at ``start``."""
    depth = 0
    for j in range(start, len(tokens)):
        if tokens[j].text == open_:
            depth += 1
        elif tokens[j].text == close:
            depth -= 1
            if depth == 0:
                return j
    raise PromQLError(f"unclosed {open_!r}")


def _matchers(inner: list[_Token], label: str, value: str, matcher: str) -> str:
    """``{<matcher>,<the others>}``, refusing a different matcher on ``label``."""
    kept: list[str] = []
    k = 0
    while k < len(inner):
        if inner[k].text == ",":
            k += 1
            continue
        if k + 2 >= len(inner) or inner[k].kind not in ("ident",) or \
                inner[k + 1].text not in ("=", "!=", "=~", "!~") or \
                inner[k + 2].kind != "string":
            raise PromQLError("a label matcher must be name, operator, string")
        name, op, text = inner[k].text, inner[k + 1].text, inner[k + 2].text
        if name == label:
            if op != "=" or _unquote(text) != value:
                raise PromQLError(f"the query may only select {matcher}, not {name}{op}{text}")
        else:
            kept.append(f"{name}{op}{text}")
        k += 3
    return "{" + ",".join([matcher, *kept]) + "}"


def _unquote(text: str) -> str:
    body = text[1:-1]
    if text[0] == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _join(parts: list[str]) -> str:
    """Tokens back into text, one space between them (PromQL ignores whitespace between
    tokens; a selector's name and braces, and strings, are single parts)."""
    return " ".join(parts)
