"""Every dashboard route, and `/static`: mounted by `server.app.create_app`. Apart from
`ui.pages` (the `page` decorator the page modules use), so no page module imports its importer."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from ui import admin, board, campaigns, contacts, identity, inbox, reports, session, suppressions, unsubscribe

STATIC = Path(__file__).resolve().parent.parent / "static"


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for module in (
        session,
        board,
        inbox,
        contacts,
        campaigns,
        admin,
        reports,
        suppressions,
        unsubscribe,
        identity,
    ):
        out.extend(module.routes)
    out.append(Mount("/static", app=StaticFiles(directory=STATIC), name="static"))
    return out
