from __future__ import annotations

from server.api import Router

router = Router(tag="contacts")
