"""The one settings object. Every `SWITCHBOARD_*` variable is read here and nowhere else."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE = f"sqlite+aiosqlite:///{ROOT / 'var' / 'switchboard.db'}"
# Used only outside production, so that `make run` works with nothing set.
_DEV_SECRET = "switchboard-development-secret-not-for-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    database_url: str = DEFAULT_SQLITE
    # Reports and exports read here when set (a PostgreSQL streaming replica); else the primary.
    database_replica_url: str | None = None
    # PostgreSQL: a statement running longer is cancelled (the request answers 503), so one slow
    # query cannot hold a pooled connection for ever. Not applied to LISTEN or to migrations.
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)  # 0: no limit
    db_pool_size: int = Field(default=20, ge=1)  # connections kept open per engine
    db_max_overflow: int = Field(default=20, ge=0)  # opened beyond the pool under load, then closed
    db_pool_timeout_s: float = Field(default=5.0, gt=0)  # waiting for a connection longer answers 503
    redis_url: str | None = None
    redis_prefix: str = "sb:"  # every Redis key and channel of this deployment starts with it
    secret_key: str = ""
    # After rotating `secret_key`: the old keys, comma separated, still accepted for unsubscribe
    # links already sent (server/consent/tokens.py). Keep one as long as mail signed with it may be
    # opened (months); sessions and webhooks use the current key only.
    previous_secret_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    public_url: str | None = None  # behind a proxy: the address users and providers reach us at
    # Where this process itself listens (set by `serve`, never read from the environment by intent):
    # the embedded sandbox posts its delivery webhooks there when `public_url` is unset.
    serve_url: str | None = None

    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    cookie_secure: bool = False  # always on in production

    max_body_bytes: int = 1024 * 1024
    page_limit_default: int = 50
    page_limit_max: int = 500

    # Realtime
    event_retention_hours: float = 24.0
    ws_send_buffer: int = 1000  # frames queued per socket before it is cut off
    ws_ping_interval_s: float = 20.0
    longpoll_max_timeout_s: float = 60.0
    presence_ttl_s: float = 60.0
    # A live socket or stream re-checks its caller this often, and at the access token's expiry
    # at the latest (user active, sign-in not revoked): closed with 4401 when access is gone.
    ws_access_recheck_s: float = 60.0
    ws_max_message_bytes: int = 64 * 1024  # a larger client frame or message is closed with 1009
    ws_ops_burst: int = 20  # per socket: ops at once, then ws_ops_per_s
    ws_ops_per_s: float = 5.0
    ws_user_ops_burst: int = 60  # per user across sockets and instances: presence and subscribe
    ws_user_ops_per_s: float = 10.0
    ws_replays_per_min: int = 6  # per socket: subscribes that replay from an older `after`
    ws_replay_max_events: int = 10_000  # an `after` further back than this answers resync

    # Dispatcher
    embedded_worker: bool = False  # run the dispatcher inside the web process (`serve` sets it)
    dispatcher_batch: int = 200
    dispatcher_concurrency: int = 64
    dispatcher_poll_s: float = 0.5  # fallback poll when no wake-up arrives
    send_lease_s: float = 60.0  # a message left in `sending` longer than this is taken back
    max_attempts: int = 8
    retry_base_s: float = 2.0
    retry_max_s: float = 3600.0
    circuit_failures: int = 5
    circuit_reset_s: float = 30.0
    worker_metrics_port: int | None = None  # `switchboard worker` serves /metrics here when set
    # Outgoing webhooks to loopback, private and link-local addresses (server/endpoints/guard.py).
    allow_private_endpoints: bool = False

    # API rate limits (token bucket: burst capacity and refill per second)
    rate_limit_enabled: bool = True
    rate_limit_user_burst: int = 600
    rate_limit_user_per_s: float = 100.0
    rate_limit_ip_burst: int = 1200
    rate_limit_ip_per_s: float = 200.0
    rate_limit_webhook_ip_burst: int = 5000  # provider webhooks per client address
    rate_limit_webhook_ip_per_s: float = 2000.0
    # Failed sign-ins per (account, client address), and per client address whatever the account.
    rate_limit_login_burst: int = 10
    rate_limit_login_per_s: float = 0.2
    rate_limit_login_ip_burst: int = 30
    rate_limit_login_ip_per_s: float = 0.5

    # `GET /metrics` wants `Authorization: Bearer <metrics_token>` when this is set.
    metrics_token: str | None = None

    # Who answers SMS keywords (STOP/START/HELP): `provider` — Twilio and the carriers already do,
    # Switchboard stays silent — or `switchboard`, with the workspace's texts (server/consent/keywords.py).
    keyword_replies: Literal["provider", "switchboard"] = "provider"

    # The admin audit log keeps entries this long (pruned by the report job, server/reports/job.py).
    audit_retention_days: float = 365.0
    # Contact imports (server/contacts/importer.py). One upload may be this large (the request
    # body limit above does not apply to the import route); a gzip upload may expand to
    # IMPORT_MAX_EXPANSION times it. The upload is kept in `import_dir` while its job runs.
    import_max_bytes: int = 200 * 1024 * 1024
    import_dir: Path = ROOT / "var" / "imports"
    import_batch_rows: int = 5000  # rows per transaction (and per `import.progress` event)
    import_jobs_per_workspace: int = 2  # imports running at once per workspace; more → 429
    import_job_ttl_s: float = 3600.0  # a finished job's status and rejected rows are kept this long
    # A running job's instance renews its lease this often (÷3); a job whose lease ran out is
    # resumed by an instance that has its upload, or failed.
    import_lease_s: float = 30.0
    # Bulk actions on a search's contacts (server/contacts/bulk.py): contacts per transaction (and
    # per `bulk.progress` event); leases and expiry as for imports.
    bulk_chunk_rows: int = Field(default=1000, ge=1, le=10_000)
    bulk_lease_s: float = 30.0
    bulk_job_ttl_s: float = 3600.0

    cache_ttl_s: float = 30.0
    cache_size: int = 10_000

    log_json: bool | None = None
    log_level: str = "INFO"

    extra_origins: list[str] = Field(default_factory=list)

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        if not self.secret_key:
            if self.env == "production":
                raise ValueError("SWITCHBOARD_SECRET_KEY must be set in production")
            self.secret_key = _DEV_SECRET if self.env == "development" else secrets.token_hex(32)
        if self.env == "production" and self.secret_key == _DEV_SECRET:
            raise ValueError("SWITCHBOARD_SECRET_KEY must not be the development default in production")
        if self.uses_development_secret and not self.is_embedded:
            # Anyone can mint an admin token with the public development secret: fine on a laptop
            # with the embedded database, never on a deployment with shared services.
            raise ValueError(
                "SWITCHBOARD_SECRET_KEY must be set when SWITCHBOARD_DATABASE_URL is not SQLite or "
                "SWITCHBOARD_REDIS_URL is set: the development secret is public "
                "(e.g. SWITCHBOARD_SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_hex(32))')\")"
            )
        if self.env == "production":
            self.cookie_secure = True  # production is served over TLS (deploy/nginx.conf)
        if self.log_json is None:
            self.log_json = self.env == "production"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        """The embedded default: an SQLite file and no Redis (one process, nothing shared)."""
        return self.is_sqlite and not self.redis_url

    @property
    def uses_development_secret(self) -> bool:
        return self.secret_key == _DEV_SECRET


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
