"""Declaring API operations: one decorator gives the Starlette route, body and query validation
with pydantic, the role check, and the operation's entry in the OpenAPI document."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from server.apikeys.scopes import require_scope, scope_for
from server.auth.principal import Principal, authenticate, require_role
from server.errors import Problem, validation_errors
from server.inputs import Query as Query
from server.inputs import Schema as Schema
from server.jsonlimits import TooDeep, loads_bounded
from server.pagination import page_context
from server.state import services_of

if TYPE_CHECKING:
    from server.db import Database
    from server.services import Services

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


# JSON nested deeper than this is refused before validation (400): no request body of ours nests
# more than a few levels, and every walk over a document stays shallow.
MAX_JSON_DEPTH = 32


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if isinstance(data, BaseModel):
        payload = data.model_dump(mode="json")
    else:
        payload = data
    return Response(
        orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@dataclass
class Ctx(Generic[T]):
    """What a handler gets: the request, who is calling, and the validated input. `T` is the
    operation's body model (`Ctx[ContactIn]`; `Ctx[None]` for an operation without a body), so
    mypy checks what a handler reads from `ctx.body`."""

    request: Request
    principal: Principal
    body: T
    query: Any = None

    @property
    def services(self) -> Services:
        return services_of(self.request.app)

    @property
    def db(self) -> Database:
        return self.services.db

    @property
    def reads(self) -> Database:
        """The read replica when one is configured (reports, exports), else `db`."""
        return self.services.reads

    @property
    def workspace_id(self) -> int:
        return self.principal.workspace_id

    def path_int(self, name: str) -> int:
        raw = self.request.path_params[name]
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise Problem(404, f"No such {name.removesuffix('_id')}.") from None
        if value < 1 or value > 2**62:
            raise Problem(404, f"No such {name.removesuffix('_id')}.")
        return value


Handler = Callable[[Ctx[Any]], Awaitable[Any]]


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[Schema] | None = None
    query: type[Query | Schema] | None = None  # both refuse what the database cannot store
    response: Any = None
    status: int = 200
    role: str | None = "viewer"  # None: public
    tag: str = ""
    extra_responses: dict[int, str] = field(default_factory=dict)
    scope: str | None = None  # the API-key scope; None: by the rule in server/apikeys/scopes.py
    media_types: tuple[str, ...] = ("application/json",)  # what a success answer may be sent as


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise Problem(400, "The request body is empty; a JSON object was expected.")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise Problem(415, "Send the body as application/json.")
    try:
        return loads_bounded(raw, max_depth=MAX_JSON_DEPTH)
    except TooDeep:
        raise Problem(400, f"The body nests deeper than {MAX_JSON_DEPTH} levels.") from None
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"The body is not valid JSON: {exc}") from None


def parse_model(
    model: type[M], data: Any, *, where: str = "body", context: dict[str, Any] | None = None
) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        prefix: tuple[str, ...] = () if where == "body" else (where,)
        raise Problem(
            422, "The request is not valid.", errors=validation_errors(exc, prefix=prefix)
        ) from None


class Router:
    """A domain's operations; the app mounts `routes()` and merges `operations` into OpenAPI."""

    def __init__(self, prefix: str = "/api/v1", tag: str = "") -> None:
        self.prefix = prefix
        self.tag = tag
        self.operations: list[Operation] = []

    def op(
        self,
        method: str,
        path: str,
        *,
        body: type[Schema] | None = None,
        query: type[Query | Schema] | None = None,
        response: Any = None,
        status: int = 200,
        role: str | None = "viewer",
        summary: str = "",
        responses: dict[int, str] | None = None,
        scope: str | None = None,
        media_types: tuple[str, ...] = ("application/json",),
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method=method.upper(),
                    path=self.prefix + path,
                    handler=fn,
                    summary=summary or (inspect.getdoc(fn) or fn.__name__).splitlines()[0],
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    role=role,
                    tag=self.tag,
                    extra_responses=responses or {},
                    scope=scope,
                    media_types=media_types,
                )
            )
            return fn

        return register

    def routes(self) -> list[BaseRoute]:
        by_path: dict[str, dict[str, Operation]] = {}
        for o in self.operations:
            by_path.setdefault(o.path, {})[o.method] = o
        return [Route(path, _endpoint(ops), methods=list(ops)) for path, ops in by_path.items()]


def _endpoint(ops: dict[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        o = ops[request.method if request.method in ops else "GET"]
        principal = await authenticate(request) if o.role is not None else Principal.anonymous()
        if o.role is not None:
            if principal.api_key_id is not None:
                require_scope(principal.scopes, o.scope or scope_for(o.method, o.path, o.role))
            require_role(principal, o.role)
        query: BaseModel | None = None
        if o.query is not None:
            context = page_context(services_of(request.app).settings)  # `?limit=` bounds (server.pagination)
            query = parse_model(o.query, dict(request.query_params), where="query", context=context)
        body = None if o.body is None else parse_model(o.body, await read_json(request))
        result = await o.handler(Ctx(request=request, principal=principal, body=body, query=query))
        if isinstance(result, Response):
            return result
        return json_response(result, o.status)

    return endpoint


def all_operations(routers: Sequence[Router]) -> list[Operation]:
    return [o for r in routers for o in r.operations]
