"""Seeding: `createuser` and the `demo` workspace."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from server.audit import service as audit
from server.auth import service as auth_service
from server.auth.models import Role
from server.auth.passwords import hash_password
from server.contacts.service import create_contact
from server.db import Database, utcnow
from server.messages.service import create_message
from server.providers.models import Provider
from server.settings import Settings
from server.templates.models import Template

DEMO_WORKSPACE = "Demo"
DEMO_EMAIL = "admin@demo.switchboard.test"
DEMO_PASSWORD = "switchboard-demo"
DEMO_NUMBER = "+15005550006"  # the demo's own number (Twilio's test number): customers write to it
CUSTOMER_REPLY_RATE = 0.35  # about one SMS/WhatsApp send in three gets an answer

_PEOPLE = [
    (
        "Ada Lovelace",
        "ada@example.test",
        "+442079460958",
        ["vip", "beta"],
        {"plan": "enterprise", "city": "London"},
    ),
    ("Grace Hopper", "grace@example.test", "+12025550173", ["vip"], {"plan": "pro", "city": "Arlington"}),
    ("Alan Turing", "alan@example.test", "+441619460123", ["beta"], {"plan": "free", "city": "Manchester"}),
    ("Katherine Johnson", "katherine@example.test", "+17575550142", ["newsletter"], {"plan": "pro"}),
    ("Edsger Dijkstra", "edsger@example.test", "+31205550199", ["newsletter"], {"plan": "free"}),
    (
        "Margaret Hamilton",
        "margaret@example.test",
        "+16175550100",
        ["vip", "newsletter"],
        {"plan": "enterprise"},
    ),
    ("Linus Torvalds", "linus@example.test", "+15035550111", ["beta"], {"plan": "free"}),
    ("Barbara Liskov", "barbara@example.test", "+16175550122", ["newsletter"], {"plan": "pro"}),
    ("Donald Knuth", "don@example.test", "+16505550133", [], {"plan": "free"}),
    ("Frances Allen", "frances@example.test", "+19145550144", ["vip"], {"plan": "pro"}),
    ("John McCarthy", "john@example.test", "+16505550155", ["beta"], {"plan": "free"}),
    ("Radia Perlman", "radia@example.test", "+19785550166", ["newsletter", "beta"], {"plan": "pro"}),
]


@dataclass(frozen=True)
class Login:
    email: str
    password: str


async def create_user_cli(
    settings: Settings, *, workspace: str, email: str, password: str, role: Role
) -> int:
    db = Database(settings.database_url)
    try:
        async with db.transaction() as s:
            ws = await auth_service.get_or_create_workspace(s, name=workspace)
            user = await auth_service.create_user(
                s, workspace_id=ws.id, email=email, password=password, role=role
            )
            audit.record(
                s,
                workspace_id=ws.id,
                actor=audit.SYSTEM,
                action="user.created",
                target=f"user:{user.id}",
                details={"email": user.email, "role": user.role, "via": "createuser"},
            )
            return user.id
    finally:
        await db.dispose()


async def seed_demo(settings: Settings) -> Login:
    """Create the demo workspace once; later runs only reset the demo admin's password."""
    db = Database(settings.database_url)
    try:
        async with db.transaction() as s:
            existing = await auth_service.find_user_by_email(s, email=DEMO_EMAIL)
            if existing is not None:
                existing.password_hash = hash_password(DEMO_PASSWORD)
                return Login(DEMO_EMAIL, DEMO_PASSWORD)
            ws = await auth_service.get_or_create_workspace(s, name=DEMO_WORKSPACE)
            await auth_service.create_user(
                s,
                workspace_id=ws.id,
                email=DEMO_EMAIL,
                password=DEMO_PASSWORD,
                role=Role.admin,
                name="Demo Admin",
            )
            await auth_service.create_user(
                s,
                workspace_id=ws.id,
                email="agent@demo.switchboard.test",
                password=DEMO_PASSWORD,
                role=Role.agent,
                name="Demo Agent",
            )
            people = []
            for name, email, phone, tags, attrs in _PEOPLE:
                contact = await create_contact(
                    s,
                    workspace_id=ws.id,
                    user_id=None,
                    data={"name": name, "email": email, "phone": phone, "tags": tags, "attributes": attrs},
                )
                people.append(contact.id)
            welcome = Template(
                workspace_id=ws.id,
                name="Welcome",
                channel="email",
                subject="Welcome aboard, {{ name }}!",
                body="Hello {{ name }},\n\nThanks for joining us on the {{ attributes.plan }} plan.\n",
            )
            reminder = Template(
                workspace_id=ws.id,
                name="Appointment reminder",
                channel="sms",
                body="Hi {{ name }}, a reminder of your appointment {{ when | default('tomorrow') }}.",
            )
            order = Template(
                workspace_id=ws.id,
                name="Order update",
                channel="whatsapp",
                body="Hi {{ name }}, your order is on its way. Reply here if you have any question.",
            )
            s.add_all(
                [
                    welcome,
                    reminder,
                    order,
                    Template(
                        workspace_id=ws.id,
                        name="Team alert",
                        channel="chat",
                        body="New signup: {{ name }} <{{ email }}>",
                    ),
                ]
            )
            # The demo's customers answer through a Twilio connection, as real ones would: the
            # sandbox signs their replies with its auth token and posts them to its webhook URL.
            # Disabled, so nothing is ever sent through it (sends go to the sandbox).
            customers = Provider(
                workspace_id=ws.id,
                name="Demo customers (Twilio inbound)",
                kind="twilio",
                channel="sms",
                priority=100,
                enabled=False,
                config={
                    "account_sid": "AC" + secrets.token_hex(16),
                    "auth_token": secrets.token_hex(16),
                    "from_number": DEMO_NUMBER,
                },
                webhook_key=secrets.token_hex(32),
            )
            s.add(customers)
            await s.flush()
            for channel in ("email", "sms", "chat", "whatsapp"):
                config: dict[str, object] = {"delivery_delay_ms": 1500, "bounce_rate": 0.1}
                if channel in ("sms", "whatsapp"):
                    config |= {
                        "customer_reply_rate": CUSTOMER_REPLY_RATE,
                        "customer_reply_delay_ms": 6000,
                        "customer_provider_id": customers.id,
                        "customer_auth_token": customers.config["auth_token"],
                        "customer_number": DEMO_NUMBER,
                    }
                s.add(
                    Provider(
                        workspace_id=ws.id,
                        name=f"Sandbox {channel}",
                        kind="sandbox",
                        channel=channel,
                        priority=10,
                        config=config,
                        webhook_key=secrets.token_hex(32),
                    )
                )
            await s.flush()
            # A few messages, so the board comes alive: the sandbox answers with signed delivery
            # webhooks a moment after the dispatcher sends them, and some customers write back.
            soon = utcnow() + dt.timedelta(minutes=2)
            by_channel = {"email": welcome.id, "sms": reminder.id, "whatsapp": order.id}
            for i, contact_id in enumerate(people[:9]):
                channel = ("email", "sms", "whatsapp")[i % 3]
                await create_message(
                    s,
                    workspace_id=ws.id,
                    user_id=None,
                    data={
                        "contact_id": contact_id,
                        "channel": channel,
                        "template_id": by_channel[channel],
                        "variables": {},
                        "send_at": soon if i == 8 else None,
                    },
                )
        return Login(DEMO_EMAIL, DEMO_PASSWORD)
    finally:
        await db.dispose()
