"""Templates: checked when saved, rendered per lead in the sandbox, stored once per name."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from models.campaigns import Template
from models.sessions import Database
from services import templates
from services.errors import DomainError
from services.templates import create_template, render, validate
from tests.factories import create_tenant


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
def test_the_sandbox_refuses_unsafe_attribute_access_at_render(source: str):
    assert validate("Hi", None, source) in ([], ["email"], ["fields"])
    with pytest.raises(DomainError) as raised:
        render("Hi", None, source, LEAD)
    assert (raised.value.code, raised.value.field) == ("TEMPLATE_RENDER", "text")
    assert "unsafe" in raised.value.message


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
