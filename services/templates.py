"""Message templates: checked when saved and rendered per lead in a Jinja2 sandbox, with the
lead's and the sender's variables only. The sandbox and its limits are services/sandbox.py's."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from typing import Any

from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateError, TemplateSyntaxError, nodes

from services import sandbox
from services.errors import DomainError

# What a template may use. `fields` holds the lead's custom CSV columns.
VARIABLES = frozenset(
    {
        "email", "first_name", "last_name", "company", "fields",
        "sender_name", "sender_email", "unsubscribe_url",
    }
)  # fmt: skip
NAME_MAX_LENGTH = 200  # of a template's or a campaign's name


def blank_as_none(body: str | None) -> str | None:
    """A body of only whitespace is no body."""
    return body if body is not None and body.strip() else None


# The lead a template is test-rendered for when it is saved, so a template that fails or goes
# past the sandbox's limits is refused then, not at send. A custom column it lacks renders as
# "", as for a real lead without that column.
SAMPLE_LEAD: Mapping[str, Any] = {
    "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
    "company": "Analytical Engines", "fields": {"industry": "Computing", "city": "London"},
    "sender_name": "Grace Hopper", "sender_email": "grace@example.net",
    "unsubscribe_url": "https://example.net/u/sample",
}  # fmt: skip

# HTML bodies escape what they print (a lead's company cannot inject markup); subjects and
# text bodies are plain text.
_HTML = sandbox.BoundedEnvironment(autoescape=True)
_PLAIN = sandbox.BoundedEnvironment()
# No loader: these could never render, so they are refused when the template is saved.
_UNSUPPORTED = {
    nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import",
    nodes.FromImport: "from … import",
}  # fmt: skip
# Constructs whose bound names (loop targets, macro arguments, with-targets) exist inside them.
_SCOPES = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.With)


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    html: str | None
    text: str | None


class LeadFields:
    """A lead's custom columns as templates see them: `fields.industry` or `fields["Job title"]`.

    A column the lead does not have (or has empty) renders as "", so one sparse CSV column does
    not fail the send; `{% if fields.industry %}` tests for it. Not a dict, so a column named
    like a dict method (`items`, `keys`) still reads the column."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> Any:
        value = self._values.get(name)
        return "" if value is None else value

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)


# --- checking --------------------------------------------------------------------------------


def validate(
    subject: str, html: str | None, text: str | None, deadline: float | None = None
) -> list[str]:
    """The variables the template uses, sorted. Raises, with `field` naming the part
    ("subject", "html", "text"), TEMPLATE_SYNTAX, TEMPLATE_TOO_LARGE or
    TEMPLATE_UNDEFINED_VARIABLE, or TEMPLATE_RENDER when it fails for SAMPLE_LEAD (a bomb like
    `{{ 9**(10**7) }}` stops at the sandbox's limits, by `deadline` at the latest)."""
    used: set[str] = set()
    for part, source in (("subject", subject), ("html", html), ("text", text)):
        if source is not None:
            used |= _check(part, source)
            if deadline is not None and time.monotonic() > deadline:  # compiling counts too
                raise _too_slow(part)
    render(subject, html, text, SAMPLE_LEAD, deadline)
    return sorted(used & VARIABLES)


# Saving checks a template by compiling and rendering it: CPU work of up to a render's time
# limit. It runs in processes of its own: on a thread it would still hold the API's
# interpreter lock for long stretches (a regex over a long text does not let go), and a
# template's memory stays out of the API process.
CHECK_PROCESSES = 2
_checks: ProcessPoolExecutor | None = None


def _pool() -> ProcessPoolExecutor:
    global _checks
    if _checks is None:
        _checks = ProcessPoolExecutor(
            max_workers=CHECK_PROCESSES,
            mp_context=get_context("spawn"),
            initializer=_start_checking_process,
        )
    return _checks


def _start_checking_process() -> None:
    """A checking process stops a check at its timer (_validate_within), and ends when the
    API's process does, even killed (an idle one would wait on its queue for ever)."""
    signal.signal(signal.SIGALRM, _stop)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def start_checks() -> None:
    """Starts the checking processes now (the API at start-up), not at the first save."""
    for _ in range(CHECK_PROCESSES):
        _pool().submit(time.monotonic)


# A check runs past its time limit only inside one long step of the sandbox (it checks the time
# between steps); this timer, started in the checking process, stops it there too.
_HARD_STOP_MARGIN = 0.5
# Saves waiting for a check at once, per API process; more are told to try again, so a burst
# of slow saves cannot hold the database connections of their transactions for long.
MAX_WAITING_CHECKS = 8
_waiting = 0


class _HardStop(BaseException):  # past the sandbox's own `except Exception`
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _HardStop


def _validate_within(
    subject: str, html: str | None, text: str | None, seconds: float
) -> tuple[list[str], float]:
    """In a checking process: validate() within `seconds`, compiling included; the variables
    and the seconds it took."""
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds + _HARD_STOP_MARGIN)
    try:
        variables = validate(subject, html, text, started + seconds)
    except _HardStop:
        raise _too_slow("subject") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # A template checked is not rendered here again: the compile cache would only grow.
        _compiled.cache_clear()
    return variables, time.monotonic() - started


def _too_slow(part: str) -> DomainError:
    return DomainError(
        "TEMPLATE_RENDER",
        f"The {part} takes longer than {sandbox.RENDER_SECONDS:g} s to check.",
        part,
    )


class Checks:
    """One save's template checks, in the checking processes. They share one render time
    limit (a campaign of ten slow steps is refused within about one, not ten), counted as the
    checks spend it, not while they wait for a process."""

    def __init__(self) -> None:
        self.seconds_left = sandbox.RENDER_SECONDS

    async def validated(self, subject: str, html: str | None, text: str | None) -> list[str]:
        global _checks, _waiting
        if self.seconds_left <= 0:
            raise _too_slow("subject")
        if _waiting >= MAX_WAITING_CHECKS:
            raise DomainError(
                "TEMPLATE_CHECK_BUSY", "Templates are being checked for other saves; try again."
            )
        _waiting += 1
        try:
            variables, used = await asyncio.get_running_loop().run_in_executor(
                _pool(), _validate_within, subject, html, text, self.seconds_left
            )
        except BrokenProcessPool:
            _checks = None  # the next save starts fresh processes
            raise DomainError(
                "TEMPLATE_RENDER", "The template could not be checked: its check crashed."
            ) from None
        finally:
            _waiting -= 1
        self.seconds_left -= used
        return variables


def _check(part: str, source: str) -> set[str]:
    try:
        ast = _PLAIN.parse(source)
        _compiled(source, part == "html")  # also finds unknown filters and tests
    except sandbox.TemplateTooLarge as e:
        raise DomainError(
            "TEMPLATE_TOO_LARGE", f"The {part} is too large: {e.message}", part
        ) from None
    except TemplateSyntaxError as e:
        raise DomainError(
            "TEMPLATE_SYNTAX", f"Syntax error on line {e.lineno}: {e.message}", part
        ) from None
    except (RecursionError, SyntaxError, MemoryError):  # Python's compiler gave up
        raise DomainError(
            "TEMPLATE_SYNTAX", f"The {part} nests too deeply to be compiled.", part
        ) from None
    for node_type, tag in _UNSUPPORTED.items():
        for node in ast.find_all(node_type):
            raise DomainError(
                "TEMPLATE_SYNTAX", f"{{% {tag} %}} on line {node.lineno} is not supported.", part
            )
    # Jinja's own analysis decides which names are free (it knows the scoping rules); the walk
    # below only finds where the first one is used.
    free = sandbox.undeclared_variables(ast)  # the sandbox's globals (range, …) are not free
    unknown = free - VARIABLES
    if unknown:
        use = next((n for n in _free_uses(ast, frozenset()) if n.name in unknown), None)
        name, line = (use.name, use.lineno) if use else (min(unknown), 1)
        raise DomainError(
            "TEMPLATE_UNDEFINED_VARIABLE",
            f"Unknown variable '{name}' on line {line}. Available: {', '.join(sorted(VARIABLES))}.",
            part,
        )
    return free


def _free_uses(node: nodes.Node, bound: frozenset[str]) -> Iterator[nodes.Name]:
    """Variable reads in document order, leaving out names bound around them by {% for %},
    {% macro %}, {% with %} or an earlier {% set %}."""
    if isinstance(node, nodes.Name):
        if node.ctx == "load" and node.name not in bound:
            yield node
        return
    if isinstance(node, _SCOPES):
        bound = bound | _stored_names(node) | {"loop", "caller", "varargs", "kwargs"}
    for child in node.iter_child_nodes():
        yield from _free_uses(child, bound)
        if isinstance(child, nodes.Assign | nodes.AssignBlock):
            bound = bound | _stored_names(child.target)


def _stored_names(node: nodes.Node) -> set[str]:
    names = [node, *node.find_all(nodes.Name)]
    return {n.name for n in names if isinstance(n, nodes.Name) and n.ctx in ("store", "param")}


# --- rendering -------------------------------------------------------------------------------


def render(
    subject: str,
    html: str | None,
    text: str | None,
    context: Mapping[str, Any],
    deadline: float | None = None,
) -> RenderedMessage:
    """One lead's message. `context` holds the VARIABLES; a missing or None value renders as
    "", and `fields` may be a plain dict. Raises TEMPLATE_RENDER (field: the part) when the
    template fails in any way, e.g. on the sandbox refusing `''.__class__`, on `{{ 1/0 }}` or
    on going past a limit of the sandbox (all parts within sandbox.RENDER_SECONDS)."""
    values = _render_context(context)
    deadline = deadline or time.monotonic() + sandbox.RENDER_SECONDS
    rendered_subject = _render("subject", subject, values, deadline)
    return RenderedMessage(
        # A header is one line: a newline from a lead value must not start another header.
        subject=" ".join(rendered_subject.split()),
        html=_render("html", html, values, deadline) if html is not None else None,
        text=_render("text", text, values, deadline) if text is not None else None,
    )


def _render_context(context: Mapping[str, Any]) -> dict[str, Any]:
    values = {name: context.get(name) for name in VARIABLES - {"fields"}}
    values = {name: "" if value is None else value for name, value in values.items()}
    fields = context.get("fields")
    values["fields"] = fields if isinstance(fields, LeadFields) else LeadFields(fields)
    return values


def _render(part: str, source: str, values: dict[str, Any], deadline: float) -> str:
    # A template is untrusted code: whatever it raises fails this message, never the caller.
    try:
        return sandbox.render(_compiled(source, part == "html"), values, deadline)
    except Exception as e:
        line = _template_line(e)
        where = f" on line {line}" if line else ""
        raise DomainError(
            "TEMPLATE_RENDER", f"The {part} could not be rendered{where}: {_explained(e)}", part
        ) from e


# What Python's own errors mean in a template, in place of their terse or empty messages.
_MEANINGS: dict[type[Exception], str] = {
    ZeroDivisionError: "it divides by zero.",
    OverflowError: "a number is too large.",
    RecursionError: "it nests too deeply.",
    MemoryError: "it needs too much memory.",
}


def _explained(error: Exception) -> str:
    if isinstance(error, TemplateError):
        return error.message or type(error).__name__
    for kind, meaning in _MEANINGS.items():
        if isinstance(error, kind):
            return meaning
    if isinstance(error, KeyError) and error.args:
        return f"there is no key {error.args[0]!r}."
    return str(error) or type(error).__name__


def _template_line(error: BaseException) -> int | None:
    """The template's line the error was raised on (Jinja rewrites tracebacks to name it)."""
    line, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@lru_cache(maxsize=2048)
def _compiled(source: str, html: bool) -> JinjaTemplate:
    """Compiled once per template text: the sending engine renders the same text per lead."""
    return (_HTML if html else _PLAIN).from_string(source)
