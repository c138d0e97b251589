"""The Jinja2 sandbox templates render in, and the limits of one render: what a template may
call, how much it may loop, call, nest and produce, and for how long.

A template is untrusted code run on the send path, so no single step of it may be unbounded:
operators that can make huge numbers or strings are checked before they run, filters and
string methods are a list whose output grows with their input (not with a number argument),
and loop iterations, calls, and what is printed or built count against one render's Budget,
which also holds the deadline. Nothing is evaluated when a template is compiled (Jinja folds
constant expressions then: `{{ 9**(10**7) }}` would be computed when it is saved)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, ValuesView
from contextvars import ContextVar
from functools import wraps
from types import BuiltinMethodType, MethodType
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_environment, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2 import tests as jinja_tests
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import FilterArgumentError, TemplateRuntimeError, TemplateSyntaxError
from jinja2.lexer import Token, TokenStream
from jinja2.meta import TrackingCodeGenerator
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, Macro, Namespace, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

# The limits of one render. A message renders its parts (subject, HTML, text) within one
# RENDER_SECONDS; each part has its own budget of characters, loop iterations and calls.
RENDER_SECONDS = 1.0
# What compiles at all: compiling takes about 30 µs a token, so a template is refused before
# compiling becomes slow; a template of a few thousand tags is far inside both. The characters
# are the API's 512 KB body limit: a body it takes is never too long here.
MAX_SOURCE_CHARACTERS = 512 * 1024
MAX_TOKENS = 10_000
MAX_CHARACTERS = 1_000_000  # printed (also in loops, macros, {% set %} blocks) and built
MAX_ITERATIONS = 10_000  # of all {% for %} loops together
MAX_CALLS = 10_000  # macros, methods, range(), loop() …
MAX_DEPTH = 50  # calls inside calls: a macro calling itself stops here, not at RecursionError
MAX_RANGE = 1_000  # numbers one range() gives
MAX_INT_BITS = 4_096  # of a number made by *, ** or |int (about 1,200 digits)
MAX_FORMAT_WIDTH = 100  # of a field in "%10.2f" % x or |format, and digits of |round
MAX_NESTING = 100  # of lists in lists (tuples, dicts)
MAX_STRIP_CHARACTERS = 100  # that strip(chars) or |trim(chars) take off: each end character
# is looked for among them


class LimitExceeded(TemplateRuntimeError):
    """A render went past one of the limits above."""


class TemplateTooLarge(TemplateSyntaxError):
    """A template longer than MAX_SOURCE_CHARACTERS or MAX_TOKENS: not compiled."""


class Budget:
    """What one part's render has used so far; the deadline is the message's."""

    __slots__ = ("calls", "characters", "deadline", "depth", "iterations", "weights")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.characters = self.iterations = self.calls = self.depth = 0
        self.weights: dict[int, tuple[Any, int, int]] = {}

    def weight(self, value: Any) -> int:
        """About how many characters a value takes written out, which is also how much work
        str(), == or hash() does on it: a list holding one list twice counts it twice. (So a
        list doubled in a loop, `[a, a]`, is as heavy as it is when printed.) Refuses lists
        nested more than MAX_NESTING deep: hash() has no recursion guard, and a million-deep
        tuple crashes the interpreter."""
        return self._measure(value)[0]

    def _measure(self, value: Any) -> tuple[int, int]:
        """(weight, depth). A container's are remembered, so one held many times is walked
        once; the sandbox's lists and dicts are immutable, a namespace opaque (_Namespace)."""
        if isinstance(value, str):
            return len(value), 0
        if isinstance(value, int):
            return value.bit_length() // 3 + 2, 0
        if not isinstance(value, _CONTAINERS):
            return 8, 0  # a float, None, or an object whose str() is short (a macro, a loop)
        known = self.weights.get(id(value))
        if known is not None and known[0] is value:
            return known[1], known[2]
        items = (i for pair in value.items() for i in pair) if isinstance(value, dict) else value
        total, depth = 2, 0
        for item in items:
            weight, nesting = self._measure(item)
            total, depth = total + weight + 2, max(depth, nesting)
        if depth >= MAX_NESTING:
            raise LimitExceeded(f"lists nest more than {MAX_NESTING} deep.")
        self.weights[id(value)] = (value, total, depth + 1)  # held: its id is not reused
        return total, depth + 1

    def check(self, characters: int) -> None:
        """Refuses, before it is built, a value that would take the part over its characters."""
        if self.characters + characters > MAX_CHARACTERS:
            raise LimitExceeded(f"it produces more than {MAX_CHARACTERS:,} characters.")

    def charge(self, characters: int = 0) -> None:
        """Counts what a step of the render (a filter, an operator, printed text) produced, and
        checks the deadline: a template without loops or calls is still a list of steps."""
        self.characters += characters
        if self.characters > MAX_CHARACTERS:
            raise LimitExceeded(f"it produces more than {MAX_CHARACTERS:,} characters.")
        self.on_time()

    def iteration(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise LimitExceeded(f"its loops run more than {MAX_ITERATIONS:,} times.")
        self.on_time()

    def enter_call(self) -> None:
        self.calls += 1
        self.depth += 1
        if self.calls > MAX_CALLS:
            raise LimitExceeded(f"it makes more than {MAX_CALLS:,} calls.")
        if self.depth > MAX_DEPTH:
            raise LimitExceeded(
                f"calls nest more than {MAX_DEPTH} deep (does a macro call itself without end?)."
            )
        self.on_time()

    def on_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"it takes longer than {RENDER_SECONDS:g} s to render.")


_budget: ContextVar[Budget] = ContextVar("template_budget")


def render(template: Any, values: dict[str, Any], deadline: float) -> str:
    """One part rendered within its own budget and the message's deadline."""
    token = _budget.set(Budget(deadline))
    try:
        return template.render(values)
    finally:
        _budget.reset(token)


# --- operators -------------------------------------------------------------------------------

_SEQUENCES = (str, list, tuple)
# What str(), == and hash() walk item by item: a template can build these (literals, *, +,
# filters, methods), and Jinja builds a macro's varargs and kwargs.
_CONTAINERS = (list, tuple, dict, set, frozenset, KeysView, ValuesView, ItemsView)
_BUILT = (str, list, tuple, dict)  # new values a filter or method may return


def _check_bits(bits: float) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded(f"a number would have more than {MAX_INT_BITS:,} bits.")


def _power(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        _check_bits(right if right > MAX_INT_BITS else right * math.log2(abs(left)))


def _product(left: Any, right: Any) -> None:
    if isinstance(right, _SEQUENCES):  # 3 * "ab" is "ab" * 3
        left, right = right, left
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length())
    elif isinstance(left, _SEQUENCES) and isinstance(right, int):
        budget = _budget.get()
        budget.check(budget.weight(left) * max(right, 0))


def _sum(left: Any, right: Any) -> None:
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        budget = _budget.get()
        budget.check(budget.weight(left) + budget.weight(right))


def _modulo(left: Any, right: Any) -> None:
    if isinstance(left, str):
        _check_format(left, right)


_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "**": _power,
    "*": _product,
    "+": _sum,
    "%": _modulo,
}


# After "%", an optional "(key)" (parentheses nest, as CPython parses it) and flags: the width
# and precision, then a length modifier and the conversion character.
_FORMAT_FIELD = re.compile(r"(\*|[0-9]*)(?:\.(\*|[0-9]*))?[hlL]?.?", re.DOTALL)


def _check_format(template: str, args: Any) -> None:
    """printf-style formatting of text and numbers only, each field at most MAX_FORMAT_WIDTH
    wide; refuses, before formatting, what would take the part over its characters."""
    if isinstance(args, dict):
        values = list(args.values())
    else:
        values = list(args) if isinstance(args, tuple) else [args]
    sizes = [_formatted_size(value) for value in values]
    fields, at = 0, 0
    while (at := template.find("%", at) + 1) > 0:
        if template.startswith("(", at):
            depth = 0
            while at < len(template):
                depth += {"(": 1, ")": -1}.get(template[at], 0)
                at += 1
                if depth == 0:
                    break
        while at < len(template) and template[at] in "-+ #0":
            at += 1
        field = _FORMAT_FIELD.match(template, at)
        assert field is not None  # every part of the pattern is optional
        for size in field.groups(default=""):
            if size == "*" or (size and int(size) > MAX_FORMAT_WIDTH):
                raise LimitExceeded(f"a % format field is wider than {MAX_FORMAT_WIDTH}.")
        at, fields = field.end(), fields + 1
    # Each field takes the next value, or by key any value as often as it likes.
    values_size = fields * max(sizes, default=0) if isinstance(args, dict) else sum(sizes)
    _budget.get().check(len(template) + values_size + fields * MAX_FORMAT_WIDTH)


def _formatted_size(value: Any) -> int:
    """At most how many characters a value formats to (a field's width aside)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2  # decimal digits and a sign
    if isinstance(value, float | type(None)):
        return 320  # 1.8e308 written out, or "None"
    raise LimitExceeded("% formats text and numbers only.")


# --- filters, tests, globals and methods -----------------------------------------------------


class _Namespace(Namespace):
    """namespace(): its attributes change after it is put in a list, so what it holds is left
    out of str() (and == and hash() are its identity's): the list's weight stays true."""

    def __repr__(self) -> str:
        return "<namespace>"


def _range(*args: int) -> range:
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:  # longer than the machine can count
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise LimitExceeded(f"range() gives at most {MAX_RANGE:,} numbers.")
    return numbers


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_replace(str(s), str(old), str(new), -1 if count is None else count)
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


def _trim(value: Any, chars: str | None = None) -> str:
    _check_strip("", chars)
    return jinja_filters.do_trim(value, chars)


def _check_strip(s: str, chars: Any = None) -> None:
    if isinstance(chars, str) and len(chars) > MAX_STRIP_CHARACTERS:
        raise LimitExceeded(f"strip() takes off at most {MAX_STRIP_CHARACTERS} characters.")


def _check_replace_call(s: str, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str) and isinstance(new, str) and isinstance(count, int):
        _check_replace(s, old, new, count)


_METHOD_CHECKS: dict[str, Callable[..., None]] = {
    "replace": _check_replace_call,
    "strip": _check_strip,
    "lstrip": _check_strip,
    "rstrip": _check_strip,
}


def _check_replace(s: str, old: str, new: str, count: int) -> None:
    found = s.count(old) if old else len(s) + 1
    if count >= 0:
        found = min(found, count)
    _budget.get().check(len(s) + found * max(len(new) - len(old), 0))


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    if attribute is not None:
        value = map(jinja_filters.make_attrgetter(eval_ctx.environment, attribute), value)
    items, size, budget = [], 0, _budget.get()
    for item in value:
        text = item if isinstance(item, str) else str(item)
        size += len(text) + len(d)
        budget.check(size)
        items.append(text)
    return jinja_filters.do_join(eval_ctx, items, d)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
    _check_format(jinja_filters.soft_str(value), kwargs or args)
    return jinja_filters.do_format(value, *args, **kwargs)


def _int(value: Any, default: int = 0, base: int = 10) -> int:
    # "ffff…"|int(base=16) would make a number as long as the text, and then |sum a slow one
    number = jinja_filters.do_int(value, default, base)
    if isinstance(number, int):
        _check_bits(number.bit_length())
    return number


def _round(value: float, precision: int = 0, method: str = "common") -> float:
    if not isinstance(precision, int) or abs(precision) > MAX_FORMAT_WIDTH:
        raise LimitExceeded(f"round() takes a precision of at most {MAX_FORMAT_WIDTH} digits.")
    return jinja_filters.do_round(value, precision, method)  # type: ignore[arg-type]


@pass_environment
def _sum_filter(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0):
    # Adding lists one to another copies the growing total each time: numbers only.
    if not isinstance(start, int | float):
        raise LimitExceeded("sum() adds numbers only.")
    return jinja_filters.do_sum(environment, iterable, attribute, start)


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any) -> Markup:
    return jinja_filters.do_tojson(eval_ctx, value)  # no indent: it repeats per nesting level


def _number(value: Any) -> int | float:
    # "%099999d" is odd would format: these tests take numbers only
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, not {type(value).__name__}")
    return value


# Filters whose output grows with their input, not with a number argument; the ones wrapped
# above check their output's size before they make it. Not offered: batch, center, indent,
# pprint, random, slice, urlize, wordwrap.
_FILTERS: dict[str, Callable[..., Any]] = {
    **{
        name: jinja_filters.FILTERS[name]
        for name in (
            "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape",
            "filesizeformat", "first", "float", "forceescape", "groupby", "items", "last",
            "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "reverse",
            "safe", "select", "selectattr", "sort", "string", "striptags", "title", "truncate",
            "unique", "upper", "urlencode", "wordcount", "xmlattr",
        )
    },
    "format": _format, "int": _int, "join": _join, "replace": _replace, "round": _round,
    "sum": _sum_filter, "tojson": _tojson, "trim": _trim,
}  # fmt: skip
_TESTS = {
    **jinja_tests.TESTS,
    # Jinja's, on numbers only: "%0999999d" is odd would format a huge text.
    "odd": lambda value: jinja_tests.test_odd(_number(value)),
    "even": lambda value: jinja_tests.test_even(_number(value)),
    "divisibleby": lambda value, num: jinja_tests.test_divisibleby(_number(value), _number(num)),
}

# Attributes of plain values a template may use: methods whose result is no larger than the
# value (so not center, ljust, zfill, expandtabs, format, join, encode). replace and strip are
# offered checked by wrap_str_format, not here: the attr filter would hand out the bare ones.
_STR_METHODS = frozenset(
    {
        "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha",
        "isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle",
        "isupper", "lower", "partition", "removeprefix", "removesuffix", "rfind", "rindex",
        "rpartition", "rsplit", "split", "splitlines", "startswith", "swapcase", "title",
        "upper", "striptags", "unescape",
    }
)  # fmt: skip
_NUMBER_ATTRIBUTES = frozenset({"real", "imag", "numerator", "denominator", "is_integer"})
_ATTRIBUTES: dict[type, frozenset[str]] = {
    str: _STR_METHODS,
    Markup: _STR_METHODS,
    int: _NUMBER_ATTRIBUTES,
    bool: _NUMBER_ATTRIBUTES,
    float: _NUMBER_ATTRIBUTES,
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    dict: frozenset({"get", "items", "keys", "values"}),
    range: frozenset({"start", "stop", "step", "count", "index"}),
}


def _charged(f: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, its text or list counted against the part's characters."""

    @wraps(f)  # keeps Jinja's pass_context/pass_eval_context marks
    def charged(*args: Any, **kwargs: Any) -> Any:
        result = f(*args, **kwargs)
        budget = _budget.get()
        budget.charge(budget.weight(result) if isinstance(result, _BUILT) else 0)
        return result

    return charged


def _counted(tokens: Iterable[Token]) -> Iterator[Token]:
    for count, token in enumerate(tokens, start=1):
        if count > MAX_TOKENS:
            raise TemplateTooLarge(
                f"it has more than {MAX_TOKENS:,} tokens (names, values, operators and the text"
                " between tags).",
                token.lineno, None, None,
            )  # fmt: skip
        yield token


# --- the environment -------------------------------------------------------------------------


# The filter each {% for %} loop's iterable goes through: not a name a template can write.
_LOOP_ITEMS = "loop items"


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's compiler, routing through the environment what the sandbox does not: each
    loop's items, `~`, and every piece of printed text. Folds no constants but template
    text: folding runs filters and operators while compiling, outside any Budget."""

    def __init__(
        self,
        environment: Any,
        name: str | None,
        filename: str | None,
        stream: Any = None,
        defer_init: bool = False,
        optimized: bool = True,
    ) -> None:
        super().__init__(environment, name, filename, stream, defer_init, optimized=False)

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in list(node.find_all(nodes.For)):
            loop.iter = nodes.Filter(
                loop.iter, _LOOP_ITEMS, [], [], None, None, lineno=loop.iter.lineno
            )
        super().visit_Template(node, frame)

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.built(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.built(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # {% set a, b = … %}, {% for k, v in … %}
            super().visit_Tuple(node, frame)
            return
        self.write("environment.built(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concatenated(context.eval_ctx, (")
        for item in node.nodes:
            self.visit(item, frame)
            self.write(", ")
        self.write("))")

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()  # evaluated when rendered, within the limits
        return super()._output_child_to_const(node, frame, finalize)

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.printed({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.printed(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")


class _Introspection(TrackingCodeGenerator, _BoundedCodeGenerator):
    """Jinja's meta.find_undeclared_variables, compiling as _BoundedCodeGenerator does."""


def undeclared_variables(ast: nodes.Template) -> set[str]:
    """The names a parsed template reads from its context (Jinja's scoping rules decide)."""
    introspection = _Introspection(ast.environment)
    introspection.visit(ast)
    return introspection.undeclared_identifiers


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """A sandbox whose templates run within a Budget (set by render())."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(_CHECKS)

    def __init__(self, **options: Any) -> None:
        # An unknown name fails rather than printing ""; a trailing newline is kept: it belongs
        # to a text body.
        super().__init__(undefined=StrictUndefined, keep_trailing_newline=True, **options)
        self.globals.clear()
        self.globals.update(range=_range, namespace=_Namespace)
        self.filters = {name: _charged(f) for name, f in _FILTERS.items()}
        self.filters[_LOOP_ITEMS] = self.iterated
        self.tests = dict(_TESTS)

    def _tokenize(
        self, source: str, name: str | None, filename: str | None = None, state: str | None = None
    ) -> TokenStream:
        """The tokens the parser reads, refused past MAX_SOURCE_CHARACTERS or MAX_TOKENS."""
        if len(source) > MAX_SOURCE_CHARACTERS:
            raise TemplateTooLarge(
                f"it has {len(source):,} characters; at most {MAX_SOURCE_CHARACTERS:,}.",
                1, name, filename,
            )  # fmt: skip
        return TokenStream(
            _counted(super()._tokenize(source, name, filename, state)), name, filename
        )

    # Hooks of the compiled code (see _BoundedCodeGenerator).

    def printed(self, text: str) -> str:
        # The hot path (every piece of every message): counted inline; the deadline is left to
        # the steps that can take long (filters, operators, calls, loop iterations).
        budget = _budget.get()
        budget.characters += len(text)
        if budget.characters > MAX_CHARACTERS:
            raise LimitExceeded(f"it produces more than {MAX_CHARACTERS:,} characters.")
        return text

    def built(self, value: Any) -> Any:
        """A list, tuple or dict written in the template, counted by its weight."""
        budget = _budget.get()
        budget.charge(budget.weight(value))
        return value

    def iterated(self, items: Iterable[Any]) -> Iterator[Any]:
        budget = _budget.get()
        for item in items:
            budget.iteration()
            yield item

    def concatenated(self, eval_ctx: EvalContext, items: tuple[Any, ...]) -> str:
        texts = [jinja_filters.soft_str(item) for item in items]
        budget = _budget.get()
        budget.check(sum(map(len, texts)))
        joined = markup_join(texts) if eval_ctx.autoescape else str_join(texts)
        budget.charge(len(joined))
        return joined

    # The sandbox's hooks.

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _CHECKS[operator](left, right)
        result = self.binop_table[operator](left, right)
        budget = _budget.get()
        budget.charge(budget.weight(result) if isinstance(result, _SEQUENCES) else 0)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget.get()
        budget.enter_call()
        try:
            if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
                args = (self.iterated(args[0]), *args[1:])
            elif isinstance(obj, Macro) and (obj.catch_varargs or obj.catch_kwargs):
                # Jinja builds varargs and kwargs: m(*varargs, *varargs) would double them.
                extra = {k: v for k, v in kwargs.items() if k not in obj.arguments}
                budget.charge(budget.weight(args[len(obj.arguments) :]) + budget.weight(extra))
            result = super().call(context, obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        # A macro's or a loop's text was counted as it was printed.
        if isinstance(result, _BUILT) and not isinstance(obj, Macro | LoopContext):
            budget.charge(budget.weight(result))
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = _budget.get()
        budget.on_time()  # map(attribute=…) looks items up one by one, inside one filter call
        value = super().getitem(obj, argument)
        if isinstance(argument, slice) and isinstance(value, _SEQUENCES):
            budget.charge(budget.weight(value))
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget.get().on_time()
        return super().getattr(obj, attribute)

    def call_test(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        """select, reject and their attr forms test item by item inside one filter call, and
        the filters they feed (max, join, …) run them all: each test counts as an iteration."""
        _budget.get().iteration()
        return super().call_test(name, value, *args, **kwargs)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        allowed = _ATTRIBUTES.get(type(obj))
        if allowed is not None:
            return attr in allowed
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's hook for str methods that need a wrapper, run as one is looked up. format
        and format_map are not offered (is_safe_attribute refuses them); replace and strip
        are, their arguments checked (_METHOD_CHECKS)."""
        if not isinstance(value, BuiltinMethodType | MethodType):
            return None
        check = _METHOD_CHECKS.get(value.__name__)
        s = getattr(value, "__self__", None)
        if check is None or not isinstance(s, str):
            return None

        def checked(*args: Any) -> str:
            check(s, *args)
            return value(*args)

        return checked
