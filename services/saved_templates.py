"""A tenant's saved templates: named subject and bodies, checked (services/templates.py) before
they are stored."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models.campaigns import Template
from services.errors import DomainError
from services.templates import NAME_MAX_LENGTH, Checks, blank_as_none


async def create_template(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str,
    subject: str,
    html: str | None = None,
    text: str | None = None,
) -> Template:
    name = name.strip()
    if not name:
        raise DomainError("TEMPLATE_NAME_REQUIRED", "Name the template.", "name")
    if len(name) > NAME_MAX_LENGTH:
        raise DomainError(
            "TEMPLATE_NAME_TOO_LONG", f"Use at most {NAME_MAX_LENGTH} characters.", "name"
        )
    if not subject.strip():
        raise DomainError("TEMPLATE_SUBJECT_REQUIRED", "Give the template a subject.", "subject")
    html, text = blank_as_none(html), blank_as_none(text)
    if html is None and text is None:
        raise DomainError("TEMPLATE_EMPTY", "Give the template an HTML or a text body.", "html")
    variables = await Checks().validated(subject, html, text)

    exists = await session.scalar(
        select(Template.id).where(Template.tenant_id == tenant_id, Template.name == name)
    )
    if exists:
        raise _exists(name)
    template = Template(
        tenant_id=tenant_id, name=name, subject=subject, html=html, text=text, variables=variables
    )
    try:
        # A concurrent request may take the name between the check and the insert; the
        # savepoint keeps the caller's transaction usable after the unique violation.
        async with session.begin_nested():
            session.add(template)
            await session.flush()
    except IntegrityError as e:
        if getattr(e.orig, "sqlstate", None) == "23505":
            raise _exists(name) from None
        raise
    return template


def _exists(name: str) -> DomainError:
    return DomainError("TEMPLATE_EXISTS", f"A template named '{name}' exists already.", "name")
