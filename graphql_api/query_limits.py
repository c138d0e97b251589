"""Bounds on what a GraphQL document may cost: its size, read from its tokens before it is
parsed, then its shape (depth, aliases, fields) with every fragment measured once.

Strawberry's depth and alias limiters walk each fragment spread again, so a document of nested
fragments doubling at each level costs 2^levels; here a fragment's measure is computed once and
multiplied. The checks, the parse and graphql-core's validation run once per distinct document
(cached), and off the event loop when the document is large."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, TypeVar

from graphql import GraphQLError, GraphQLSchema
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    Lexer,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    TokenKind,
    parse,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document
from strawberry.types.execution import ExecutionContext
from strawberry.types.graphql import OperationType

from penguinmails.settings import Settings

TOO_LARGE = "QUERY_TOO_LARGE"
TOO_COMPLEX = "QUERY_TOO_COMPLEX"

# Documents longer than this are parsed and validated on a thread of their own, so the event
# loop keeps answering other requests meanwhile; two threads at most, whatever arrives.
OFF_LOOP_CHARS = 2048
_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="graphql-prepare")
_CACHED = 256  # distinct documents kept parsed and validated

_OPENING = frozenset({TokenKind.BRACE_L, TokenKind.PAREN_L, TokenKind.BRACKET_L})
_CLOSING = frozenset({TokenKind.BRACE_R, TokenKind.PAREN_R, TokenKind.BRACKET_R})


@dataclass(frozen=True)
class QueryLimits:
    query_chars: int
    tokens: int
    definitions: int
    operations: int
    fragment_spreads: int
    directives: int
    nesting: int
    depth: int
    aliases: int
    fields: int
    same_name_fields: int

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        """Each limit from its setting, `graphql_max_<name>`."""
        return cls(**{f.name: getattr(settings, f"graphql_max_{f.name}") for f in fields(cls)})


def refusal(code: str, message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


# --- size, from the tokens -------------------------------------------------------------------


def check_size(query: str, limits: QueryLimits) -> None:
    """One pass of the lexer: refuses a document too long, with too many tokens, definitions,
    operations, fragment spreads or directives, or nested too deeply to walk."""
    if len(query) > limits.query_chars:
        raise refusal(TOO_LARGE, f"The document is over {limits.query_chars} characters.")
    lexer = Lexer(Source(query))
    tokens = definitions = fragments = spreads = directives = nesting = 0
    previous = TokenKind.SOF
    while (token := lexer.advance()).kind != TokenKind.EOF:
        tokens += 1
        if tokens > limits.tokens:
            raise refusal(TOO_LARGE, f"The document has over {limits.tokens} tokens.")
        kind = token.kind
        if kind in _OPENING:
            # Each definition has exactly one selection set at the top level.
            definitions += kind == TokenKind.BRACE_L and nesting == 0
            nesting += 1
            if nesting > limits.nesting:
                raise refusal(TOO_COMPLEX, f"The document nests over {limits.nesting} levels.")
        elif kind in _CLOSING:
            nesting -= 1
        elif kind == TokenKind.SPREAD:
            spreads += 1
        elif kind == TokenKind.AT:
            directives += 1
        elif kind == TokenKind.NAME and nesting == 0 and token.value == "fragment":
            fragments += previous in (TokenKind.SOF, TokenKind.BRACE_R)
        previous = kind
    counted = (
        (definitions, limits.definitions, "definitions"),
        (definitions - fragments, limits.operations, "operations"),
        (spreads, limits.fragment_spreads, "fragment spreads"),
        (directives, limits.directives, "directives"),
    )
    for count, limit, what in counted:
        if count > limit:
            raise refusal(TOO_LARGE, f"The document has {count} {what}; at most {limit}.")


# --- shape, fragments measured once ----------------------------------------------------------


@dataclass
class _Measure:
    """What a selection set costs once expanded: its depth (fields with selections on the
    deepest path), the fields and aliases it resolves, and how many fields answer at each
    response path below it (`("vps", "ips")`): fields of one name merge, so graphql-core
    compares every pair of fields at one path, and that count bounds its work."""

    depth: int = 0
    fields: int = 0
    aliases: int = 0
    paths: Counter[tuple[str, ...]] = field(default_factory=Counter)

    def add(self, other: _Measure) -> None:
        self.depth = max(self.depth, other.depth)
        self.fields += other.fields
        self.aliases += other.aliases
        self.paths.update(other.paths)


class _Shape:
    def __init__(self, document: DocumentNode, limits: QueryLimits) -> None:
        self.limits = limits
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.measured: dict[str, _Measure] = {}
        self.measuring: set[str] = set()

    def selections(self, selection_set: SelectionSetNode) -> _Measure:
        measure = _Measure()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = (selection.alias or selection.name).value
                measure.fields += 1
                measure.aliases += selection.alias is not None
                measure.paths[(name,)] += 1
                if selection.selection_set is not None:
                    inner = self.selections(selection.selection_set)
                    measure.depth = max(measure.depth, inner.depth + 1)
                    measure.fields += inner.fields
                    measure.aliases += inner.aliases
                    for path, count in inner.paths.items():
                        measure.paths[(name, *path)] += count
            elif isinstance(selection, InlineFragmentNode):
                measure.add(self.selections(selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                measure.add(self.fragment(selection.name.value))
        self.check(measure)
        return measure

    def fragment(self, name: str) -> _Measure:
        if name in self.measured:
            return self.measured[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.measuring:
            # Unknown fragments and cycles are graphql-core's to report, by name.
            return _Measure()
        self.measuring.add(name)
        self.measured[name] = measure = self.selections(definition.selection_set)
        self.measuring.discard(name)
        return measure

    def check(self, measure: _Measure) -> None:
        limits = self.limits
        if measure.depth > limits.depth:
            raise refusal(TOO_COMPLEX, f"The query is over {limits.depth} levels deep.")
        if measure.aliases > limits.aliases:
            raise refusal(TOO_COMPLEX, f"The query uses over {limits.aliases} aliases.")
        if measure.fields > limits.fields:
            raise refusal(TOO_COMPLEX, f"The query asks for over {limits.fields} fields.")
        if measure.paths:
            path, count = measure.paths.most_common(1)[0]
            if count > limits.same_name_fields:
                raise refusal(
                    TOO_COMPLEX,
                    f"The query selects '{'.'.join(path)}' {count} times; "
                    f"at most {limits.same_name_fields}.",
                )


def check_shape(document: DocumentNode, limits: QueryLimits) -> None:
    shape = _Shape(document, limits)
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            shape.selections(definition.selection_set)
        elif isinstance(definition, FragmentDefinitionNode):
            shape.fragment(definition.name.value)


# --- once per document -----------------------------------------------------------------------


@lru_cache(maxsize=_CACHED)
def _prepared(query: str, limits: QueryLimits) -> DocumentNode | GraphQLError:
    """The parsed document, or why it is refused (cached either way)."""
    try:
        check_size(query, limits)
        document = parse(query, max_tokens=limits.tokens)
        check_shape(document, limits)
    except GraphQLError as error:
        return error
    return document


@lru_cache(maxsize=_CACHED)
def _validated(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[Any, ...]
) -> list[GraphQLError]:
    return validate_document(schema, document, rules)


T = TypeVar("T")


async def _run(query: str, work: Callable[..., T], *args: Any) -> T:
    if len(query) <= OFF_LOOP_CHARS:
        return work(*args)
    return await asyncio.get_running_loop().run_in_executor(_THREADS, work, *args)


# Stand-ins for a refused document: Strawberry reads an operation type from the document before
# it looks at the errors, and the refusal must reach the client as errors over HTTP and over the
# WebSocket alike (an exception from a hook is lost on the WebSocket).
_STAND_INS = {
    operation: parse(f"{operation.value} {{ __typename }}")
    for operation in (OperationType.QUERY, OperationType.MUTATION, OperationType.SUBSCRIPTION)
}


def _refuse(context: ExecutionContext, error: GraphQLError) -> None:
    allowed = set(context.allowed_operations)
    operation = next(o for o in _STAND_INS if o in allowed)
    context.graphql_document = _STAND_INS[operation]
    context._provided_operation_name = None  # the stand-in has no named operation
    context.pre_execution_errors = [error]


class QueryLimiter(SchemaExtension):
    """Parses and validates each document within the limits; refusals are GraphQL errors with
    `extensions.code` QUERY_TOO_LARGE or QUERY_TOO_COMPLEX."""

    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            prepared = await _run(context.query, _prepared, context.query, self.limits)
            if isinstance(prepared, GraphQLError):
                _refuse(context, prepared)
            else:
                context.graphql_document = prepared
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None and context.graphql_document is not None:
            context.pre_execution_errors = await _run(
                context.query or "",
                _validated,
                context.schema._schema,
                context.graphql_document,
                tuple(context.validation_rules),
            )
        yield
