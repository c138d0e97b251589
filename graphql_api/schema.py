"""Assembles Query (and, as domains land, Mutation and Subscription) from each domain."""

from __future__ import annotations

import strawberry
from strawberry.tools import merge_types

from graphql_api.billing.queries import BillingQuery

Query = merge_types("Query", (BillingQuery,))

schema = strawberry.Schema(query=Query)
