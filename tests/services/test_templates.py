"""Templates: checked when saved, rendered per lead in the sandbox, stored once per name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import func, select

from models.campaigns import Template
from models.sessions import Database
from services import templates
from services.errors import DomainError
from services.saved_templates import create_template
from services.templates import LeadFields, render, validate
from tests.factories import create_tenant
from tests.template_bombs import BOMBS, SLOW


def _refusal(subject: str, html: str | None = None, text: str | None = None) -> DomainError:
    with pytest.raises(DomainError) as raised:
        validate(subject, html, text)
    return raised.value


# --- checking --------------------------------------------------------------------------------


def test_validate_returns_the_variables_used_in_any_part_sorted():
    variables = validate(
        "Hi {{ first_name }}",
        "<p>{{ company }} · {{ fields.industry }}</p><a href='{{ unsubscribe_url }}'>stop</a>",
        "{{ sender_name }}",
    )
    assert variables == ["company", "fields", "first_name", "sender_name", "unsubscribe_url"]


def test_a_syntax_error_names_the_part_and_the_line():
    error = _refusal("Hi", html="<p>\nHello {{ first_name }\n</p>")
    assert (error.code, error.field) == ("TEMPLATE_SYNTAX", "html")
    assert "line 2" in error.message and "unexpected '}'" in error.message


def test_an_unknown_filter_is_a_syntax_error_when_saved_not_when_sent():
    error = _refusal("Hi", text="Hello\n{{ first_name | shout }}")
    assert (error.code, error.field) == ("TEMPLATE_SYNTAX", "text")
    assert "line 2" in error.message and "shout" in error.message


def test_include_is_refused_since_a_template_has_nothing_to_include():
    error = _refusal("Hi", text='{% include "footer.txt" %}')
    assert (error.code, error.field) == ("TEMPLATE_SYNTAX", "text")


def test_an_unknown_variable_is_named_with_its_line():
    error = _refusal("Hi {{ first_name }}", text="Hello,\n\nhow is {{ compnay }} doing?")
    assert (error.code, error.field) == ("TEMPLATE_UNDEFINED_VARIABLE", "text")
    assert "'compnay'" in error.message and "line 3" in error.message


def test_names_bound_by_for_and_set_are_not_unknown_variables():
    html = (
        "{% set greeting = 'Hello ' ~ first_name %}{{ greeting }}\n"
        "{% for key in fields %}{{ loop.index }}. {{ key }}: {{ fields[key] }}{% endfor %}\n"
        "{% for n in range(2) %}{% set twice = n * 2 %}{{ twice }}{% endfor %}"
    )
    assert validate("{% set s = company %}{{ s }}", html, None) == [
        "company",
        "fields",
        "first_name",
    ]


def test_a_loop_variable_used_after_its_loop_is_unknown_on_that_line():
    error = _refusal("Hi", text="{% for item in fields %}\n{{ item }}\n{% endfor %}\n{{ item }}")
    assert error.code == "TEMPLATE_UNDEFINED_VARIABLE"
    assert "'item'" in error.message and "line 4" in error.message


# --- rendering -------------------------------------------------------------------------------


LEAD = {
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": None,
    "company": "Engines <& Sons>",
    "fields": {"industry": "Computing"},
    "sender_name": "Grace",
    "sender_email": "grace@example.net",
    "unsubscribe_url": "https://t.example/u/abc?x=1&y=2",
}


def test_html_escapes_lead_values_while_subject_and_text_keep_them_as_written():
    message = render(
        "{{ company }}",
        '<p>{{ company }}</p><a href="{{ unsubscribe_url }}">unsubscribe</a>',
        "{{ company }}\n",
        LEAD,
    )
    assert message.subject == "Engines <& Sons>"
    assert message.html == (
        '<p>Engines &lt;&amp; Sons&gt;</p><a href="https://t.example/u/abc?x=1&amp;y=2">'
        "unsubscribe</a>"
    )
    assert message.text == "Engines <& Sons>\n"


def test_a_missing_custom_field_or_empty_lead_value_renders_as_empty():
    message = render(
        "Hi {{ first_name }} {{ last_name }}",
        None,
        "[{{ fields.role }}][{{ fields['Job title'] }}][{{ fields.industry }}]"
        "{% if fields.role %}never{% endif %}",
        LEAD,
    )
    assert message.subject == "Hi Ada"
    assert message.text == "[][][Computing]"
    assert message.html is None


def test_a_field_named_like_a_dict_method_reads_the_field():
    message = render("{{ fields.items }}|{{ fields.keys }}", None, "x", {"fields": {"items": 3}})
    assert message.subject == "3|"


def test_a_lead_value_cannot_add_a_header_line_to_the_subject():
    message = render("Hi {{ first_name }}", None, "x", {"first_name": "Ada\r\nBcc: all@x.com"})
    assert message.subject == "Hi Ada Bcc: all@x.com"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ email.__class__ }}",
        "{{ fields._values }}",
        "{{ fields.__init__.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_unsafe_attribute_access_when_saved_and_when_sent(source: str):
    refused = _refusal("Hi", None, source)
    with pytest.raises(DomainError) as raised:
        render("Hi", None, source, LEAD)
    for error in (refused, raised.value):
        assert (error.code, error.field) == ("TEMPLATE_RENDER", "text")
        assert "unsafe" in error.message


# Templates as people write them: the bounded sandbox renders them as Jinja's own does.
EVERYDAY = [
    "Hi {{ first_name|default('there') }}, {{ company|upper }}!",
    "{% if fields.industry %}In {{ fields.industry|lower }}{% else %}Hello{% endif %}\n",
    "{% for key in fields %}{{ loop.index }}/{{ loop.length }} {{ key|title }}: {{ fields[key] }}"
    "\n{% endfor %}",
    "{% macro greet(name, end='!') %}Hello {{ name }}{{ end }}{% endmacro %}"
    "{{ greet(first_name) }} {{ greet(company, '?') }}",
    "{% set greeting = 'Hi ' ~ first_name ~ ' of ' ~ company %}{{ greeting }} {{ 1 ~ 2 }}",
    "{{ '%.2f'|format(3.14159) }} {{ '%-6s|' % first_name }} {{ '%(n)s' % {'n': company} }}"
    " {{ 42.567|round(1) }} {{ (2 ** 10) * 3 + 1 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ 7 % 3 }}",
    "{{ [company, first_name, email]|join(', ') }} {{ company|replace('<', '(') }}"
    " {{ company.replace('&', 'and') }} {{ 'ab' * 3 }} {{ [1] + [2] }}",
    "{% set ns = namespace(total=0) %}{% for n in range(5) %}{% set ns.total = ns.total + n %}"
    "{% endfor %}{{ ns.total }}",
    "{{ company|length }} {{ email.split('@')[1] }} {{ company|truncate(9) }}"
    " {{ unsubscribe_url|urlencode }} {{ company|e }} {{ company|striptags }}",
    "{% for item in [1, [2, [3]]] recursive %}{% if item is iterable %}{{ loop(item) }}"
    "{% else %}{{ item }}{% endif %}{% endfor %}",
    "{{ fields|list|sort|join(',') }} {{ [3, 1, 2]|sum }} {{ 7 is odd }} {{ 9 is divisibleby 3 }}"
    " {{ {'a': 1}|tojson }} {{ email[:3] }}",
    "{% macro greet() %}<{{ caller() }}>{% endmacro %}{% call greet() %}inner{% endcall %}",
    "{{ '  x '|trim }}|{{ '--x--'|trim('-') }}|{{ company.strip('E>') }}|{{ [[1, 'a'], (2,)] }}"
    "|{{ {'k': [company]} }}|{{ (company, email)|join(' ') }}",
]


@pytest.mark.parametrize("source", EVERYDAY)
def test_everyday_templates_render_as_jinja_renders_them(source: str):
    message = render("Hi", source, source, LEAD)
    assert (message.html, message.text) == (_jinja(source, html=True), _jinja(source, html=False))


def _jinja(source: str, html: bool) -> str:
    values = {name: "" if value is None else value for name, value in LEAD.items()}
    values["fields"] = LeadFields(LEAD["fields"])
    jinja = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=html, keep_trailing_newline=True
    )
    return jinja.from_string(source).render(values)


@pytest.mark.parametrize(("source", "code"), BOMBS)
def test_a_template_bomb_is_refused_when_saved_within_the_time_limit(source: str, code: str):
    started = time.monotonic()
    error = _refusal("Hi", html=source)
    assert (error.code, error.field) == (code, "html")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(("source", "code"), BOMBS)
def test_a_template_bomb_that_was_stored_fails_its_render_within_the_time_limit(
    source: str, code: str
):
    started = time.monotonic()
    with pytest.raises(DomainError) as raised:
        render("Hi", None, source, LEAD)
    assert (raised.value.code, raised.value.field) == ("TEMPLATE_RENDER", "text")
    assert raised.value.message.startswith("The text could not be rendered")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}",
         "its loops run more than 10,000 times."),
        ("{% for i in range(1000) %}" + "{{ 'x'.upper() }}" * 11 + "{% endfor %}",
         "it makes more than 10,000 calls."),
        ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "calls nest more than 50 deep"),
        ('{{ "x" * 999999 ~ "yy" }}', "it produces more than 1,000,000 characters."),
        ("{{ range(1001) }}", "range() gives at most 1,000 numbers."),
        ("{{ 2 ** 5000 }}", "a number would have more than 4,096 bits."),
        ('{{ "%101s" % "x" }}', "a % format field is wider than 100."),
        (SLOW, "it takes longer than 1 s to render."),
        ("Hello\n\n{{ 10 // 0 }}", "on line 3: it divides by zero."),
        ("{{ '%(b)s' % {'a': 1} }}", "there is no key 'b'."),
        ("{{ 2.0 ** 5000 }}", "a number is too large."),
    ],
)  # fmt: skip
def test_a_failed_render_says_why_in_a_sentence(source: str, says: str):
    with pytest.raises(DomainError) as raised:
        render("Hi", None, source, LEAD)
    assert says in raised.value.message


def test_a_template_is_tried_on_a_sample_lead_so_one_failing_without_a_column_is_refused():
    error = _refusal("Hi", None, "{{ 1000 // fields.employees|int }} staff")
    assert (error.code, error.field) == ("TEMPLATE_RENDER", "text")
    assert "divides by zero" in error.message
    guarded = "{% if fields.employees|int %}{{ 1000 // fields.employees|int }}{% endif %}"
    assert validate("Hi", None, guarded) == ["fields"]
    message = render("Hi", None, guarded, {"fields": {"employees": "8"}})
    assert message.text == "125"


def test_render_compiles_each_template_text_once():
    text = "Once per text {{ email }} 7b1c"
    before = templates._compiled.cache_info()
    for n in range(5):
        render("Hi", None, text, {"email": f"lead{n}@example.com"})
    after = templates._compiled.cache_info()
    assert after.misses - before.misses == 1


# --- storing ---------------------------------------------------------------------------------


async def test_create_template_stores_the_bodies_and_the_variables_used(db: Database):
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        created = await create_template(
            s, tenant, "  Intro  ", "Hi {{ first_name }}", "<p>{{ company }}</p>", "  "
        )
    async with db.tenant_session(tenant) as s:
        stored = await s.get(Template, created.id)
    assert stored is not None
    assert (stored.name, stored.html, stored.text) == ("Intro", "<p>{{ company }}</p>", None)
    assert stored.variables == ["company", "first_name"]


@pytest.mark.parametrize(
    ("name", "subject", "html", "text", "code", "field"),
    [
        ("  ", "Hi", None, "x", "TEMPLATE_NAME_REQUIRED", "name"),
        ("A", "Hi", None, None, "TEMPLATE_EMPTY", "html"),
        ("A", "Hi", " ", "\n", "TEMPLATE_EMPTY", "html"),
        ("A", " ", None, "x", "TEMPLATE_SUBJECT_REQUIRED", "subject"),
        ("A", "Hi {{ nobody }}", None, "x", "TEMPLATE_UNDEFINED_VARIABLE", "subject"),
        ("A", "Hi", "{% if %}", None, "TEMPLATE_SYNTAX", "html"),
        ("A", "Hi", None, "{{ 9**(10**7) }}", "TEMPLATE_RENDER", "text"),
        ("A", "{{ x }}" * 20000, None, "x", "TEMPLATE_TOO_LARGE", "subject"),
    ],
)
async def test_create_template_refuses_bad_input_and_writes_nothing(
    db: Database, name, subject, html, text, code, field
):
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as raised:
            await create_template(s, tenant, name, subject, html, text)
    assert (raised.value.code, raised.value.field) == (code, field)
    async with db.tenant_session(tenant) as s:
        assert await s.scalar(select(func.count()).select_from(Template)) == 0


async def test_a_duplicate_name_in_the_tenant_is_refused_but_another_tenant_may_use_it(
    db: Database,
):
    async with db.system_session() as s:
        tenant, other = await create_tenant(s), await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        await create_template(s, tenant, "Intro", "Hi", None, "Hello")
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as raised:
            await create_template(s, tenant, "Intro", "Hi again", None, "Hello")
    assert (raised.value.code, raised.value.field) == ("TEMPLATE_EXISTS", "name")
    async with db.tenant_session(other) as s:
        await create_template(s, other, "Intro", "Hi", None, "Hello")


async def test_a_concurrent_duplicate_is_refused_and_leaves_the_transaction_usable(db: Database):
    async with db.system_session() as s:
        tenant = await create_tenant(s)

    async def second_request() -> tuple[str, int]:
        async with db.tenant_session(tenant) as s:
            try:
                await create_template(s, tenant, "Race", "Hi", None, "Second")
            except DomainError as e:
                # The savepoint rolled back the insert only: the transaction still answers.
                return e.code, await s.scalar(select(func.count()).select_from(Template))
        return "created", 0

    async with db.tenant_session(tenant) as s:
        await create_template(s, tenant, "Race", "Hi", None, "First")
        # The second request passes the name check (this insert is not committed) and then
        # waits on the unique index until this transaction commits.
        second = asyncio.create_task(second_request())
        await asyncio.sleep(0.3)
        assert not second.done()
    assert await second == ("TEMPLATE_EXISTS", 1)
    async with db.tenant_session(tenant) as s:
        assert list(await s.scalars(select(Template.text))) == ["First"]


def test_the_checking_processes_end_when_the_api_process_is_killed() -> None:
    script = (
        "import multiprocessing, os, time\n"
        "from services import templates\n"
        "if __name__ == '__main__':\n"
        "    templates.start_checks()\n"
        "    time.sleep(2)\n"
        "    print(' '.join(str(p.pid) for p in multiprocessing.active_children()), flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    children = [int(pid) for pid in run.stdout.split()]
    assert children, run.stderr  # one or two: a pool starts a second only when the first is busy
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_compiling_counts_against_the_time_limit_of_a_check() -> None:
    with pytest.raises(DomainError) as refused:
        validate("Hi {{ first_name }}", None, "Hello", deadline=time.monotonic())
    assert refused.value.code == "TEMPLATE_RENDER" and "to check" in refused.value.message
