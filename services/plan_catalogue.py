"""The plan catalogue: the plans file (penguinmails/plans.toml), read and checked, and applied to
app.plans and to a Stripe product and price per plan.

The file is the truth, and applying it twice changes nothing the second time: a plan is found by
its code (in Stripe, by its current price's lookup key), and only what differs is written.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import stripe
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import Plan

INT4_MAX = 2**31 - 1  # the plan's integer columns
LOOKUP_KEYS_PER_LIST = 10  # Stripe's limit on lookup_keys in one price list

# Two syncs at once (two `up`s, a sync during a deploy) would both add a new plan, or both give
# a plan a new Stripe price.
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('plan_catalogue', 0))")


class CatalogueError(Exception):
    """The catalogue file cannot be used; the message is one line naming the file, the plan and
    the field."""


class CataloguePlan(BaseModel):
    """One plan as the file gives it. Strict: "4900" is not a price and `seat = 2` no field."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    name: str = Field(min_length=1, max_length=100)
    price_cents: int = Field(ge=0, le=INT4_MAX)
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    interval: Literal["month", "year"]
    emails_per_month: int = Field(ge=0)
    domains: int = Field(ge=0, le=INT4_MAX)
    ips: int = Field(ge=0, le=INT4_MAX)
    email_accounts: int = Field(ge=0, le=INT4_MAX)
    seats: int = Field(ge=1, le=INT4_MAX)
    public: bool = True

    @field_validator("currency")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        return value.lower()  # as Stripe writes currencies

    def columns(self) -> dict[str, Any]:
        """The app.plans columns this plan sets; a plan in the catalogue is active."""
        return {
            "name": self.name,
            "price_cents": self.price_cents,
            "currency": self.currency,
            "interval": self.interval,
            "emails_per_month": self.emails_per_month,
            "max_domains": self.domains,
            "max_ips": self.ips,
            "max_email_accounts": self.email_accounts,
            "max_seats": self.seats,
            "public": self.public,
            "active": True,
        }


@dataclass(frozen=True)
class Change:
    """One thing applying the catalogue changed, as the operator reads it."""

    plan: str  # its code
    what: str

    def __str__(self) -> str:
        return f"{self.plan}: {self.what}"


def load(path: Path) -> list[CataloguePlan]:
    """The plans of the file at `path`, in its order, or a CatalogueError on the first problem."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as e:
        raise CatalogueError(f"{path}: cannot read the plan catalogue: {e.strerror}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CatalogueError(f"{path}: not a TOML file: {e}") from e
    unknown = sorted(set(document) - {"plans"})
    if unknown:
        raise CatalogueError(f"{path}: unknown key {unknown[0]!r}; plans are [plans.CODE] tables")
    plans = document.get("plans")
    if not isinstance(plans, dict) or not plans:
        raise CatalogueError(f"{path}: no plans; write each one as a [plans.CODE] table")
    return [_plan(path, code, fields) for code, fields in plans.items()]


def _plan(path: Path, code: str, fields: object) -> CataloguePlan:
    where = f"{path}: plan {code!r}"
    if not isinstance(fields, dict):
        raise CatalogueError(f"{where}: expected a [plans.{code}] table")
    if "code" in fields:
        raise CatalogueError(f"{where}: code: the plan's code is the name of its table")
    try:
        return CataloguePlan.model_validate({**fields, "code": code})
    except ValidationError as e:
        # A misspelt field first: it is why the field meant is missing.
        first, *more = sorted(e.errors(), key=lambda error: error["type"] != "extra_forbidden")
        field = ".".join(str(part) for part in first["loc"])
        got = f" (got {first['input']!r})" if first["type"] != "missing" else ""
        further = f" (and {len(more)} more problem{'s' * (len(more) > 1)})" if more else ""
        raise CatalogueError(f"{where}: {field}: {first['msg']}{got}{further}") from None


async def sync(
    session: AsyncSession, catalogue: list[CataloguePlan], client: stripe.StripeClient | None
) -> list[Change]:
    """Apply the catalogue to app.plans, then (given a Stripe client) to Stripe."""
    changes = await apply(session, catalogue)
    if client is not None:
        changes += await sync_stripe(session, client)
    return changes


async def apply(session: AsyncSession, catalogue: list[CataloguePlan]) -> list[Change]:
    """Make app.plans say what the catalogue says. A plan no longer in it is retired (inactive),
    never deleted: tenants and subscriptions refer to it. Writes only what differs, so the
    plans' updated_at (which the billing pipeline watches) moves only on a real change."""
    await session.execute(_LOCK)
    existing = {plan.code: plan for plan in await session.scalars(select(Plan))}
    changes = []
    for entry in catalogue:
        wanted = entry.columns()
        plan = existing.pop(entry.code, None)
        if plan is None:
            session.add(Plan(code=entry.code, **wanted))
            changes.append(Change(entry.code, "added"))
            continue
        differing = {
            column: (getattr(plan, column), value)
            for column, value in wanted.items()
            if getattr(plan, column) != value
        }
        for column, (_, value) in differing.items():
            setattr(plan, column, value)
        if differing:
            said = ", ".join(
                f"{column} {old!r} → {new!r}" for column, (old, new) in differing.items()
            )
            changes.append(Change(entry.code, f"updated {said}"))
    for plan in existing.values():
        if plan.active:
            plan.active = False
            changes.append(Change(plan.code, "retired (no longer in the catalogue)"))
    await session.flush()
    return changes


async def sync_stripe(session: AsyncSession, client: stripe.StripeClient) -> list[Change]:
    """Give every active plan a Stripe product of its name and a price of its amount, currency
    and interval, whose lookup key is the plan's code; archive a retired plan's price.

    Stripe prices cannot change: a new amount is a new price (the lookup key moves to it) and
    the old one is archived, which leaves the subscriptions on it as they are. The plan row
    keeps the ids checkout uses. Found by lookup key, the price a failed earlier run created is
    adopted, not made again."""
    await session.execute(_LOCK)
    plans = [
        plan
        for plan in await session.scalars(select(Plan).order_by(Plan.code))
        if plan.active or plan.stripe_price_id
    ]
    current = await _prices_by_lookup_key(client, [plan.code for plan in plans])
    changes = []
    for plan in plans:
        price = current.get(plan.code)
        if plan.active:
            changes += await _sync_plan(client, plan, price)
        elif price is not None and price.active:
            await client.v1.prices.update_async(price.id, {"active": False})
            changes.append(Change(plan.code, f"Stripe price {price.id} archived (plan retired)"))
    await session.flush()
    return changes


async def _prices_by_lookup_key(
    client: stripe.StripeClient, codes: list[str]
) -> dict[str, stripe.Price]:
    """Each code's price in Stripe, archived or not, with its product expanded."""
    found = {}
    for start in range(0, len(codes), LOOKUP_KEYS_PER_LIST):
        chunk = codes[start : start + LOOKUP_KEYS_PER_LIST]
        page = await client.v1.prices.list_async(
            {"lookup_keys": chunk, "expand": ["data.product"], "limit": LOOKUP_KEYS_PER_LIST}
        )
        found.update({price.lookup_key: price for price in page.data})
    return found


async def _sync_plan(
    client: stripe.StripeClient, plan: Plan, price: stripe.Price | None
) -> list[Change]:
    changes = []
    product = price.product if price is not None else None
    if product is None and plan.stripe_product_id:  # its price is gone from Stripe, or unkeyed
        product = await client.v1.products.retrieve_async(plan.stripe_product_id)
    if product is not None and (product.name != plan.name or not product.active):
        product = await client.v1.products.update_async(
            product.id, {"name": plan.name, "active": True}
        )
        changes.append(Change(plan.code, f"Stripe product {product.id} named {plan.name!r}"))
    replaced = None
    if price is None or not _same_terms(price, plan):
        new = await client.v1.prices.create_async(_price_params(plan, product))
        changes.append(Change(plan.code, f"Stripe price {new.id} created"))
        if price is not None and price.active:
            await client.v1.prices.update_async(price.id, {"active": False})
            changes.append(Change(plan.code, f"Stripe price {price.id} archived"))
        replaced, price = price, new
    elif not price.active:
        await client.v1.prices.update_async(price.id, {"active": True})
        changes.append(Change(plan.code, f"Stripe price {price.id} active again"))
    former = plan.stripe_price_id
    if former not in (None, price.id) and (replaced is None or former != replaced.id):
        # A price this plan had before another took its lookup key (a run that failed before
        # it committed, a change by hand in the dashboard): nobody may buy it any more.
        await client.v1.prices.update_async(former, {"active": False})
        changes.append(Change(plan.code, f"Stripe price {former} archived"))
    product_id = price.product if isinstance(price.product, str) else price.product.id
    if (plan.stripe_price_id, plan.stripe_product_id) != (price.id, product_id):
        plan.stripe_price_id, plan.stripe_product_id = price.id, product_id
    return changes


def _same_terms(price: stripe.Price, plan: Plan) -> bool:
    recurring = price.recurring
    return (
        price.unit_amount == plan.price_cents
        and price.currency == plan.currency
        and recurring is not None
        and recurring.interval == plan.interval
        and recurring.interval_count == 1
    )


def _price_params(plan: Plan, product: stripe.Product | None) -> dict[str, Any]:
    """A recurring price holding the plan's lookup key, on its product, or on a new product
    created with it (one request: a new plan never leaves a product without a price)."""
    params: dict[str, Any] = {
        "unit_amount": plan.price_cents,
        "currency": plan.currency,
        "recurring": {"interval": plan.interval},
        "lookup_key": plan.code,
        "transfer_lookup_key": True,
        "metadata": {"plan_code": plan.code},
    }
    if product is not None:
        params["product"] = product.id
    else:
        params["product_data"] = {"name": plan.name, "metadata": {"plan_code": plan.code}}
    return params
