"""Every table, imported in one place so `Base.metadata` is complete (Alembic, tests)."""

from server.apikeys.models import ApiKey
from server.audit.models import AuditEntry
from server.auth.models import RefreshToken, Role, User
from server.consent.models import Consent, ConsentCurrent
from server.contacts.models import Audit, Contact, ContactIdentity, ImportJob, ImportRejectedRow
from server.conversations.models import Conversation, ConversationRead, InboundMessage, InboundToken
from server.db import Base
from server.endpoints.models import Delivery, Endpoint
from server.events.models import Event
from server.messages.models import (
    Campaign,
    IdempotencyRecord,
    Message,
    MessageCount,
    MessageCountDelta,
    MessageEvent,
    MessageStatus,
    Suppression,
)
from server.providers.models import Provider
from server.reports.models import DailyReport
from server.sso.models import SsoConfig, SsoIdentity
from server.templates.models import Template
from server.webhooks.models import WebhookToken
from server.workspaces.models import Workspace

__all__ = [
    "ApiKey",
    "Audit",
    "AuditEntry",
    "Base",
    "Campaign",
    "Consent",
    "ConsentCurrent",
    "Contact",
    "ContactIdentity",
    "Conversation",
    "ConversationRead",
    "DailyReport",
    "Delivery",
    "Endpoint",
    "Event",
    "IdempotencyRecord",
    "ImportJob",
    "ImportRejectedRow",
    "InboundMessage",
    "InboundToken",
    "Message",
    "MessageCount",
    "MessageCountDelta",
    "MessageEvent",
    "MessageStatus",
    "Provider",
    "RefreshToken",
    "Role",
    "SsoConfig",
    "SsoIdentity",
    "Suppression",
    "Template",
    "User",
    "WebhookToken",
    "Workspace",
]
