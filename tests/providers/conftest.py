from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from tests.providers.fakes import (
    FakeMailgun,
    FakeProvider,
    FakeSendGrid,
    FakeSlack,
    FakeTwilio,
    FakeWhatsApp,
    LocalServer,
    Recorder,
)

FAKES: dict[str, type[FakeProvider]] = {
    "sendgrid": FakeSendGrid,
    "mailgun": FakeMailgun,
    "twilio": FakeTwilio,
    "slack": FakeSlack,
    "whatsapp": FakeWhatsApp,
}


@pytest.fixture(scope="session")
def provider_servers() -> Iterator[dict[str, tuple[FakeProvider, str]]]:
    """One local server per provider for the whole session: kind -> (fake, origin)."""
    servers: dict[str, tuple[FakeProvider, str]] = {}
    started: list[LocalServer] = []
    try:
        for kind, cls in FAKES.items():
            fake = cls()
            server = LocalServer(fake.app).__enter__()
            started.append(server)
            servers[kind] = (fake, server.origin)
        yield servers
    finally:
        for server in started:
            server.__exit__(None, None, None)


@pytest.fixture
def provider_server(
    provider_servers: dict[str, tuple[FakeProvider, str]],
) -> Callable[[str], tuple[FakeProvider, str]]:
    """`provider_server(kind)` -> (fake reset to normal, origin)."""

    def get(kind: str) -> tuple[FakeProvider, str]:
        fake, origin = provider_servers[kind]
        fake.reset()
        return fake, origin

    return get


@pytest.fixture(scope="session")
def recorder_server() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder()
    with LocalServer(recorder.app) as server:
        yield recorder, server.origin


@pytest.fixture
def recorder(recorder_server: tuple[Recorder, str]) -> tuple[Recorder, str]:
    recorder_server[0].reset()
    return recorder_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # Generous: a loaded CI machine can take a while to answer; the timeout test brings its own client.
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
        yield client
