"""Tenant isolation through the API, generated from the schema: every query and mutation that
takes an ID is called from tenant A's session with each of tenant B's IDs, and must answer
not-found (or nothing), never B's data, and change nothing of B's. A field added later is
covered without touching this file."""

from __future__ import annotations

import json

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    get_named_type,
)
from sqlalchemy import func, select

from graphql_api.ids import parse_id
from graphql_api.schema import build_schema
from models.campaigns import Campaign, Lead
from models.infrastructure import Domain
from models.queue import Job
from models.sessions import Database
from models.tenancy import Invitation, TenantUser
from penguinmails.settings import get_settings
from tests.graphql_api.conftest import Api, sign_up
from tests.graphql_api.flows import build_estate

SCHEMA = build_schema(get_settings())._schema
SCALAR_VALUES = {
    "String": "x",
    "Int": 1,
    "Float": 1.0,
    "Boolean": True,
    "Date": "2026-01-01",
    "DateTime": "2026-01-01T00:00:00+00:00",
    "JSON": {},
}
ARGUMENT_VALUES = {
    "csv": "email\nsomeone@example.com\n",
    "email": "new@example.com",
    "timezone": "UTC",
    "days": [1],
    "startHour": 9,
    "endHour": 17,
}


def _takes_an_id(arg_type) -> bool:
    named = get_named_type(arg_type)
    if isinstance(named, GraphQLScalarType):
        return named.name == "ID"
    if isinstance(named, GraphQLInputObjectType):
        return any(_takes_an_id(f.type) for f in named.fields.values())
    return False


def _id_fields() -> list[tuple[str, str]]:
    found = []
    for operation, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type)):
        for name, field in root.fields.items():
            if any(_takes_an_id(arg.type) for arg in field.args.values()):
                found.append((operation, name))
    return found


def _value(arg_name: str, arg_type, foreign_id: str):
    nullable = not isinstance(arg_type, GraphQLNonNull)
    inner = arg_type.of_type if not nullable else arg_type
    if isinstance(inner, GraphQLList):
        return [_value(arg_name, inner.of_type, foreign_id)]
    if isinstance(inner, GraphQLScalarType) and inner.name == "ID":
        return foreign_id
    if isinstance(inner, GraphQLInputObjectType):
        return {
            n: _value(n, f.type, foreign_id)
            for n, f in inner.fields.items()
            if isinstance(f.type, GraphQLNonNull) or _takes_an_id(f.type)
        }
    if isinstance(inner, GraphQLEnumType):
        return next(iter(inner.values))
    if arg_name in ARGUMENT_VALUES:
        return ARGUMENT_VALUES[arg_name]
    return SCALAR_VALUES[inner.name]


def _selection(field_type) -> str:
    named = get_named_type(field_type)
    if not isinstance(named, GraphQLObjectType):
        return "" if not hasattr(named, "fields") else "{ __typename ... on Node { id } }"
    if "errors" in named.fields:
        parts = ["errors { code }"]
        parts += [
            f"{n} {{ __typename ... on Node {{ id }} }}"
            for n, f in named.fields.items()
            if n != "errors" and isinstance(get_named_type(f.type), GraphQLObjectType)
        ]
        return "{ " + " ".join(parts) + " }"
    scalars = [
        n
        for n, f in named.fields.items()
        if isinstance(get_named_type(f.type), GraphQLScalarType) and not f.args
    ]
    return "{ __typename " + " ".join(scalars) + " }"


def _operation(operation: str, name: str, foreign_id: str) -> tuple[str, dict]:
    root = SCHEMA.query_type if operation == "query" else SCHEMA.mutation_type
    field = root.fields[name]
    args = {
        n: a
        for n, a in field.args.items()
        if isinstance(a.type, GraphQLNonNull) or _takes_an_id(a.type)
    }
    definitions = ", ".join(f"${n}: {a.type}" for n, a in args.items())
    call_args = ", ".join(f"{n}: ${n}" for n in args)
    text = f"{operation}({definitions}) {{ {name}({call_args}) {_selection(field.type)} }}"
    return text, {n: _value(n, a.type, foreign_id) for n, a in args.items()}


ID_FIELDS = _id_fields()


def test_the_generated_cases_cover_the_contract_fields_that_take_ids() -> None:
    names = {name for _, name in ID_FIELDS}
    assert {
        "node",
        "dailyStats",
        "verifyDomain",
        "acquireIp",
        "createEmailAccount",
        "setWarmup",
        "createCampaign",
        "importLeads",
        "launchCampaign",
        "pauseCampaign",
        "resumeCampaign",
        "updateMemberRole",
        "removeMember",
        "startCheckout",
        "acceptInvitation",
        "declineInvitation",
        "revokeInvitation",
    } <= names


async def _snapshot(db: Database, tenant_id) -> dict:
    async with db.tenant_session(tenant_id) as s:
        return {
            "campaigns": sorted(
                (c.name, c.status.value) for c in await s.scalars(select(Campaign))
            ),
            "leads": await s.scalar(select(func.count()).select_from(Lead)),
            "domains": sorted((d.name, d.status.value) for d in await s.scalars(select(Domain))),
            "jobs": await s.scalar(select(func.count()).select_from(Job)),
            "members": await s.scalar(select(func.count()).select_from(TenantUser)),
            "invitations": sorted(
                (i.email, i.status.value, i.expires_at) for i in await s.scalars(select(Invitation))
            ),
        }


@pytest.mark.parametrize(("operation", "name"), ID_FIELDS)
async def test_another_tenants_ids_give_not_found_never_data(
    api: Api, db: Database, operation: str, name: str
) -> None:
    a, b = await sign_up(api, "Alpha"), await sign_up(api, "Bravo")
    await build_estate(api, db, a, f"a{name.lower()}")
    foreign = await build_estate(api, db, b, f"b{name.lower()}")
    b_tenant = parse_id(b.tenant)[1]
    foreign_ids = [*foreign.ids(), b.user, b.tenant]
    before = await _snapshot(db, b_tenant)
    for foreign_id in foreign_ids:
        query, variables = _operation(operation, name, foreign_id)
        body = await api.gql(query, variables, token=a.token)
        text = json.dumps(body.get("data"))
        for secret in foreign_ids:
            assert secret not in text, f"{name} leaked {secret}: {text}"
        result = (body.get("data") or {}).get(name)
        if isinstance(result, dict) and "errors" in result:
            codes = {e["code"] for e in result["errors"]}
            assert codes and codes <= {"NOT_FOUND", "FORBIDDEN"}, (name, foreign_id, result)
    assert await _snapshot(db, b_tenant) == before
