"""The one settings object every process reads (env vars `PENGUINMAILS_*`, or plain `DATABASE_URL` / `REDIS_URL`)."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "dev-only-secret-change-me-before-production-use"
TIERS = ("oltp", "content", "queue", "analytics")
Tier = Literal["oltp", "content", "queue", "analytics"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PENGUINMAILS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "production", "test"] = "development"

    # Postgres: the owner DSN (migrations run as this role). Tiers default to the same database.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "PENGUINMAILS_DATABASE_URL")
    )
    content_database_url: str | None = None
    queue_database_url: str | None = None
    analytics_database_url: str | None = None
    # The roles the processes connect as. Neither owns a table nor is a superuser; the app role is
    # bound to one tenant per transaction by RLS, the system role (queuer, pipelines) has BYPASSRLS.
    app_db_role: str = "penguinmails_app"
    app_db_password: SecretStr | None = None
    system_db_role: str = "penguinmails_system"
    system_db_password: SecretStr | None = None
    db_pool_size: int = 10
    # Test each pooled connection with a round trip before use. The workers turn it off: a
    # connection lost under them fails that batch, which the queue retries.
    db_pool_pre_ping: bool = True
    db_statement_timeout_ms: int = 30_000

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "PENGUINMAILS_REDIS_URL")
    )

    redis_namespace: str = "dramatiq"  # prefix of the queue's Redis keys

    # Embedded services, used when no DATABASE_URL / REDIS_URL is configured.
    data_dir: Path = PROJECT_ROOT / ".penguinmails"
    embedded_postgres_port: int = 54329
    embedded_redis_port: int = 63799

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    cors_origins: list[str] = ["http://localhost:3000"]
    secret_key: SecretStr = SecretStr(DEV_SECRET)

    access_token_ttl_seconds: int = 3600
    # Log-in attempts allowed per window, per email address and per client IP.
    login_attempts_per_email: int = 10
    login_attempts_per_ip: int = 50
    login_window_seconds: int = 900
    # Operations. Requests a minute to the API per bearer token and per client IP (sliding
    # windows in Redis; 0: no limit); X-Forwarded-For is believed only from a peer in
    # `trusted_proxies` (comma-separated addresses or CIDRs). Logs: JSON lines in production.
    # A daily backup of every database into `backup_dir` when set, the newest `backup_keep` kept.
    api_rate_per_token: int = Field(default=600, ge=0)
    api_rate_per_ip: int = Field(default=1200, ge=0)
    trusted_proxies: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    backup_dir: Path | None = None
    backup_keep: int = Field(default=7, ge=1)

    # Secrets at rest (SMTP passwords, DKIM private keys): AES-256-GCM keys by id, base64 of 32
    # bytes, e.g. {"k2": "…", "k1": "…"}; new secrets use `encryption_key_id`, old ids still
    # decrypt (rotation). Unset in development: one key derived from secret_key.
    encryption_keys: dict[str, SecretStr] = {}
    encryption_key_id: str = "dev"

    # GraphQL hardening: a document's size, checked before it is parsed (graphql_api/
    # query_limits.py), then its shape with fragments expanded, each measured once.
    graphql_max_query_chars: int = 32 * 1024
    graphql_max_tokens: int = 3000
    graphql_max_definitions: int = 50  # operations and fragments
    graphql_max_operations: int = 10
    graphql_max_fragment_spreads: int = 100  # named and inline
    graphql_max_directives: int = 50
    graphql_max_nesting: int = 64  # brackets of any kind: selections, lists, input objects
    graphql_max_depth: int = 12  # fields with selections on the deepest path
    graphql_max_aliases: int = 30
    graphql_max_fields: int = 1000  # fields resolved, fragments expanded
    graphql_max_same_name_fields: int = 10  # fields answering at one response path
    graphql_max_page_size: int = 100
    max_request_bytes: int = 60 * 1024 * 1024  # above the lead import limit plus JSON overhead

    lead_import_max_bytes: int = 50 * 1024 * 1024
    lead_import_max_rows: int = 1_000_000

    # The durable queue (jobs/): claims, leases, packing into Dramatiq messages, retries.
    queue_claim_batch: int = 500
    queue_jobs_per_message: int = 50
    # A job's lease: renewed every third of it while its message waits in Redis (by the queuer)
    # and while it runs (by its worker), so it expires only when its worker or its message is
    # gone, and the job is then claimed again within about this long.
    queue_lease_seconds: float = 15.0
    queue_poll_seconds: float = 1.0  # LISTEN/NOTIFY wakes the queuer sooner
    # Backpressure: per tier, Redis holds at most this many messages no worker has taken yet.
    queue_max_messages_per_tier: int = 20
    # A job (or a batch of one kind) running longer is cut short: the RFC 5321 10 minutes for
    # the reply to the end of DATA, and the commands before it, fit.
    job_timeout_seconds: float = 900.0
    job_concurrency: int = 10  # jobs of one batch running at once in a worker thread
    job_backoff_base_seconds: float = 10.0
    job_backoff_max_seconds: float = 3600.0
    job_max_attempts: int = 5
    job_log_retention_days: int = 30
    # Analytics pipelines: how often the scheduler runs them, and how long an event's number
    # may stay taken by a transaction that has not committed before the pipelines give up on
    # it (a rolled-back insert leaves such a hole for ever).
    pipeline_interval_seconds: float = Field(default=30.0, gt=0)
    pipeline_late_commit_seconds: float = Field(default=600.0, gt=0)
    # Imported by workers: they register handlers.
    job_modules: list[str] = ["jobs.handlers"]
    worker_processes: int = 2
    # Each thread runs one Dramatiq message (a batch of jobs) at a time and mostly waits on
    # its event loop: enough of them that a batch held by a slow server leaves room for others.
    worker_threads: int = 24
    # Messages each tier's consumer holds; 0: worker_threads // 3 (at least 1), so every
    # message a worker takes has a thread to start it at once, and no job waits inside a
    # worker where its lease is not renewed.
    worker_prefetch: int = 0
    worker_metrics_port: int = 0  # Prometheus exposition from the workers; 0 = off

    # The plans sold (services/plan_catalogue.py): applied by `penguinmails plans sync`, and by
    # `migrate` and `up` to the database. Default: the file shipped in this package.
    plan_catalogue: Path = Path(__file__).resolve().parent / "plans.toml"
    # Unset: no Stripe; `plans sync` then applies the catalogue to the database only.
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None  # tests point the real client at a local server
    stripe_webhook_secret: SecretStr | None = None
    # Stripe's list of events is read this often (and by `penguinmails billing reconcile`) for
    # the ones a webhook outage lost; skipped without a key.
    billing_reconcile_seconds: float = Field(default=3600.0, gt=0)
    # A failed payment leaves this many days of grace (0: none) before the grace step, run
    # every `billing_check_seconds` (and by `penguinmails billing enforce-grace`), suspends the
    # tenant's sending.
    billing_grace_days: int = Field(default=7, ge=0)
    billing_check_seconds: float = Field(default=300.0, gt=0)

    # Account e-mails (services/account_mail.py): address verification, password reset,
    # invitations and payment notices, queued as jobs. With a Loops key they go through its
    # transactional API, one published transactional email per kind (JSON: {"verify_email":
    # "<id>", "password_reset": …, "invitation": …, "payment_failed": …, "suspended": …,
    # "restored": …}; a kind without an id goes by SMTP); otherwise as plain text through the
    # platform SMTP relay below, from `account_mail_from`. Their links point at the dashboard
    # (`dashboard_url`, or `public_url` when unset).
    require_verified_email: bool = True  # an unverified address cannot launch or resume
    account_mail_from: str = "PenguinMails <no-reply@penguinmails.test>"
    dashboard_url: str | None = None
    loop_api_key: SecretStr | None = None
    loop_api_base: str = "https://app.loops.so"  # tests point it at a local server
    loop_transactional_ids: dict[str, str] = {}
    loop_timeout_seconds: float = Field(default=10.0, gt=0)

    smtp_relay_host: str = "127.0.0.1"
    smtp_relay_port: int = 2525
    smtp_relay_username: str | None = None
    smtp_relay_password: SecretStr | None = None
    smtp_relay_starttls: bool = False
    smtp_pool_size: int = 16  # open connections per SMTP server and login, per worker process
    # RFC 5321 §4.5.3.2: the connection and greeting, each command's reply, and the reply to
    # the end of DATA (10 minutes: no reply by then is an unknown outcome, never a resend).
    smtp_connect_timeout_seconds: float = 30.0
    smtp_command_timeout_seconds: float = 60.0
    smtp_data_timeout_seconds: float = 600.0
    # `penguinmails inbound`: receives DSNs, complaint reports and mailto unsubscribes.
    inbound_host: str = "127.0.0.1"
    inbound_port: int = 2526
    # Sliding-window send rates (Redis), sends per minute, nested (services/send_limits.py): per
    # tenant, sending domain, sending IP (or relay), email account, and recipient provider per
    # sending IP (gmail, outlook, yahoo, other; JSON in the environment). Halved for a throttled
    # domain or IP.
    tenant_sends_per_minute: int = Field(default=3000, ge=0)
    domain_sends_per_minute: int = Field(default=1200, ge=0)
    ip_sends_per_minute: int = Field(default=600, ge=0)
    account_sends_per_minute: int = Field(default=60, ge=0)
    provider_sends_per_minute: dict[str, int] = Field(
        default_factory=lambda: {"gmail": 300, "outlook": 300, "yahoo": 150, "other": 600}
    )
    account_failures_before_pause: int = 10  # consecutive SMTP failures (4xx, connection)
    # Reply detection: the inbox of every account with an IMAP server is read this often; a
    # connection or IMAP command taking longer than the timeout fails that poll (it is retried).
    reply_poll_seconds: float = 60.0
    imap_timeout_seconds: float = 30.0
    # Log in to an IMAP server that offers no TLS (STARTTLS) at all: only for a local server.
    imap_allow_plaintext: bool = False

    # Content retention: a sent message's body (its MIME) is dropped this many days after it was
    # written; the message row and its events stay (services/retention.py, hourly).
    content_retention_days: int = 90

    # Warm-up (services/warmup.py). Each tenant with warm-up on gets a tick this often; a tick
    # acts once per account per local day (the tenant's time zone), so a later one that day is
    # a no-op. Warm-up mail is spread over [start hour, end hour) local time; a reply to one
    # waits up to warmup_reply_delay_seconds after its message was found (as a person's would).
    # A hard bounce or complaint halves the account's target, then the ramp holds that many
    # days before it grows again. Warm-up messages are kept this many days, then deleted.
    warmup_tick_seconds: float = Field(default=900.0, gt=0)
    warmup_start_hour: int = Field(default=8, ge=0, le=23)
    warmup_end_hour: int = Field(default=18, ge=1, le=24)
    warmup_reply_delay_seconds: float = Field(default=3600.0, ge=0)
    warmup_hold_days: int = Field(default=2, ge=0)
    warmup_retention_days: int = Field(default=30, ge=1)

    # The DNS records a tenant publishes for a sending domain: SPF includes the platform's
    # senders; the return-path (bounces) and tracking hosts are CNAMEs under the tenant's domain
    # pointing at the platform's own hosts.
    dkim_selector: str = "pm"
    spf_include: str = "_spf.penguinmails.test"
    return_path_label: str = "bounces"
    return_path_host: str = "bounces.penguinmails.test"
    tracking_label: str = "track"
    tracking_host: str = "track.penguinmails.test"
    # The MX a sending domain publishes: the platform's inbound host, which receives replies,
    # bounces and complaint reports for it.
    mx_host: str = "mx.penguinmails.test"
    mx_preference: int = 10
    # Domain verification (services/dns.py): the resolvers asked, comma-separated `host` or
    # `host:port` (empty: the system's), how long one lookup may take, and how often every
    # domain is checked again.
    dns_nameservers: str = ""
    dns_timeout_seconds: float = 5.0
    dns_max_in_flight: int = 100  # lookups at once per process
    dns_recheck_seconds: float = 6 * 3600
    # Recipient domains (services/recipients.py): where each one's mail goes (its MX, or its
    # address), kept in Redis this long; the lead import's domain check and the provider limits
    # read it. A lookup the resolver could not answer is not kept.
    recipient_domain_cache_seconds: int = 86_400
    # After a DKIM rotation the replaced key stays published this long (mail in flight, and
    # mail re-verified later, still finds it), then is retired.
    dkim_retire_days: float = 7.0
    # DNS blocklists (services/reputation.py): every sending IP and every domain is looked up
    # in each zone (comma-separated) this often.
    dnsbl_zones: str = "zen.spamhaus.org,dbl.spamhaus.org,b.barracudacentral.org,bl.spamcop.net"
    dnsbl_check_seconds: float = 3600.0
    # Reputation scores and sending guards (services/guards.py), from each domain's, IP's and
    # account's last 7 days, evaluated this often. Below guard_min_sends sends in the window a
    # rate is no verdict (one complaint on ten sends): the guards wait and the score counts the
    # rates in proportion to the volume.
    guard_check_seconds: float = 300.0
    guard_min_sends: int = Field(default=1000, ge=1)
    guard_complaint_throttle: float = 0.001  # 0.10 %: half rate, and an alert
    guard_complaint_pause: float = 0.003  # 0.30 %: paused
    guard_bounce_throttle: float = 0.05  # hard bounces 5 %: half rate
    guard_bounce_alert: float = 0.15  # hard bounces 15 %: an alert
    guard_clean_days: float = 7.0  # a guard lifts after this long under every threshold

    # Sending infrastructure (services/provisioning.py). Where VPS instances and their IPs come
    # from: `local` (development: instances on this machine's loopback addresses, state in
    # data_dir) or `hostwinds`. Monthly costs in cents come from the provider's plan.
    hosting_provider: Literal["local", "hostwinds"] = "local"
    hostwinds_api_key: SecretStr | None = None
    hostwinds_api_base: str = "https://clients.hostwinds.com"  # tests: a local server
    hostwinds_timeout_seconds: float = Field(default=30.0, gt=0)
    # Region slug -> Hostwinds location id; the slugs are the regions a VPS can be asked in.
    hostwinds_locations: dict[str, int] = {"dallas": 1, "seattle": 2, "amsterdam": 3}
    hostwinds_plan_id: int = 1  # the VPS plan bought
    hostwinds_image_id: int = 1  # the OS image installed (a Debian with Docker)
    hostwinds_vps_monthly_cost_cents: int = Field(default=1099, ge=0)
    hostwinds_ip_monthly_cost_cents: int = Field(default=400, ge=0)
    # The local provider: its regions, the addresses its instances and IPs take (each a
    # loopback address this machine answers on), where their SSH server and MailU admin API
    # are (empty: none; the configuration is rendered and stored, not deployed, and accounts
    # send through the platform relay, the development sink), and what it says they cost.
    local_hosting_regions: list[str] = ["local"]
    local_hosting_network: str = "127.77.0.0/24"
    local_hosting_state: Path | None = None  # None: data_dir / "local-hosting.json"
    local_hosting_ssh: str = ""  # host:port
    local_hosting_admin_url: str = ""
    local_hosting_vps_monthly_cost_cents: int = Field(default=0, ge=0)
    local_hosting_ip_monthly_cost_cents: int = Field(default=0, ge=0)
    # Where DNS records are published: `zonefile` (master files in dns_zone_dir, served by the
    # development DNS server) or `cloudflare` (the API token needs Zone.DNS edit).
    dns_provider: Literal["zonefile", "cloudflare"] = "zonefile"
    dns_zone_dir: Path | None = None  # None: data_dir / "zones"
    cloudflare_api_token: SecretStr | None = None
    cloudflare_api_base: str = "https://api.cloudflare.com/client/v4"  # tests: a local server
    cloudflare_timeout_seconds: float = Field(default=30.0, gt=0)
    # A VPS's names: vps-<id>.<vps_hostname_domain>, and one HELO (PTR) name per sending IP.
    vps_hostname_domain: str = "mta.penguinmails.test"
    # MailU on each VPS: deployed over SSH as this user with this key (known_hosts None: any
    # host key is accepted, the one seen recorded with the VPS), its submission and IMAP ports.
    vps_ssh_user: str = "root"
    vps_ssh_port: int = 22
    vps_ssh_key: Path | None = None
    vps_ssh_known_hosts: Path | None = None
    vps_ssh_timeout_seconds: float = Field(default=60.0, gt=0)
    vps_submission_port: int = 587
    # MailU's admin API on a VPS, and the host its accounts submit to and read over IMAP
    # ({hostname}: the VPS's name, which its TLS certificate is for; {ip}: its primary address).
    vps_admin_url: str = "https://{hostname}/api/v1"
    vps_mail_host: str = "{hostname}"
    vps_tls_ca_file: Path | None = None  # CA certificates for the VPS's TLS (None: the system's)
    vps_imap_port: int = 993
    vps_smtp_ready_seconds: float = Field(default=300.0, gt=0)  # after `docker compose up -d`
    # The state machine: each step is tried provisioning_attempts times (the queue's backoff
    # between), a step that waits (instance booting, DNS verifying, warm-up) looks again every
    # poll; DNS that has not verified after provisioning_dns_wait_seconds fails the step.
    provisioning_attempts: int = Field(default=5, ge=1)
    provisioning_poll_seconds: float = Field(default=15.0, gt=0)
    provisioning_dns_wait_seconds: float = Field(default=3600.0, gt=0)
    provisioning_warmup_check_seconds: float = Field(default=3600.0, gt=0)
    provisioning_active_reputation: int = Field(default=70, ge=0, le=100)
    # Infrastructure cost above this share of a tenant's subscription revenue raises an alert.
    infra_cost_alert_ratio: float = Field(default=0.20, gt=0)
    vps_health_check_seconds: float = Field(default=300.0, gt=0)

    # Live updates (graphql_api/live.py): shared reads pushed at most live_max_hz times a second
    # per tenant or campaign, and every live_refresh_seconds whatever the events (covers a lost
    # one); a client's queue holds live_client_queue pushes (full: dropped, close code 4408);
    # caps per connection (Strawberry's limit) and per tenant (close code 4429).
    live_max_hz: float = Field(default=2.0, gt=0)
    live_refresh_seconds: float = Field(default=30.0, gt=0)
    live_client_queue: int = Field(default=16, ge=1)
    live_max_subscriptions_per_connection: int = Field(default=10, ge=1)
    live_max_connections_per_tenant: int = Field(default=100, ge=1)

    # Metrics and alerts (services/metrics.py, services/alerts.py). `/metrics` answers only
    # clients in these networks (comma-separated CIDRs). The workers and `inbound` write their
    # metrics into `metrics_dir` (prometheus-client's multiprocess files; `up` uses one under
    # data_dir, emptied at start); the API's /metrics adds them to its own.
    metrics_allow: str = "127.0.0.0/8,::1/128"
    metrics_dir: Path | None = None
    metrics_cache_seconds: float = Field(default=5.0, ge=0)  # the queue and lag gauges' reads
    # The platform's conditions, evaluated every `alert_check_seconds` by the scheduler: job
    # attempts failed over attempts ended in the window (at least alert_error_min_jobs), ready
    # jobs waiting longer than alert_waiting_seconds, a statement running longer than
    # alert_slow_query_seconds, a pipeline without a successful run for
    # alert_pipeline_lag_seconds, a job dead in the last alert_dead_job_seconds.
    alert_check_seconds: float = Field(default=60.0, gt=0)
    alert_error_rate: float = 0.05
    alert_error_window_seconds: float = 300.0
    alert_error_min_jobs: int = Field(default=20, ge=1)
    alert_waiting_jobs: int = 1000
    alert_waiting_seconds: float = 600.0
    alert_slow_query_seconds: float = 2.0
    alert_pipeline_lag_seconds: float = 300.0
    alert_dead_job_seconds: float = 3600.0
    # Every alert raised and resolved is POSTed here (JSON), signed with HMAC-SHA256 of the body
    # under the secret (X-PenguinMails-Signature: sha256=<hex>), through the durable queue.
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    alert_webhook_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("dns_nameservers")
    @classmethod
    def _nameservers_parse(cls, value: str) -> str:
        parse_nameservers(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def trusted_networks(self) -> list[IPv4Network | IPv6Network]:
        return parse_networks(self.trusted_proxies)

    @property
    def dns_resolvers(self) -> list[tuple[str, int]]:
        """`dns_nameservers` as (address, port) pairs; empty: the system's resolvers."""
        return parse_nameservers(self.dns_nameservers)

    @model_validator(mode="after")
    def _no_dev_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("set PENGUINMAILS_SECRET_KEY: the development default is public")
        return self

    @model_validator(mode="after")
    def _warmup_hours_in_order(self) -> Settings:
        if self.warmup_start_hour >= self.warmup_end_hour:
            raise ValueError("PENGUINMAILS_WARMUP_START_HOUR must be before _END_HOUR")
        return self

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set: start the embedded services (penguinmails up, "
                "./scripts/run) or point DATABASE_URL at a PostgreSQL 15+ server"
            )
        return self.database_url

    def tier_url(self, tier: Tier) -> str:
        """The owner DSN of a tier: its own URL when configured, else the main database."""
        own = {
            "oltp": None,
            "content": self.content_database_url,
            "queue": self.queue_database_url,
            "analytics": self.analytics_database_url,
        }[tier]
        return own or self.require_database_url()

    def owner_urls(self) -> list[str]:
        """Each distinct database the tiers live on (migrations run once on each)."""
        return list(dict.fromkeys(self.tier_url(t) for t in TIERS))

    def role_url(self, tier: Tier, role: Literal["app", "system", "owner"]) -> URL:
        """The async (asyncpg) URL a tier is reached at as one of the three roles."""
        url = make_url(self.tier_url(tier)).set(drivername="postgresql+asyncpg")
        if role == "app":
            url = url.set(username=self.app_db_role, password=_secret(self.app_db_password))
        elif role == "system":
            url = url.set(username=self.system_db_role, password=_secret(self.system_db_password))
        return url


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


@lru_cache
def get_settings() -> Settings:
    return Settings()


def parse_nameservers(value: str) -> list[tuple[str, int]]:
    """`host` or `host:port` (`[v6]:port` for an IPv6 address with a port), comma-separated."""
    import ipaddress

    out = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            ipaddress.ip_address(host)
            number = int(port)
            if not 0 < number < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{item!r} is not a nameserver: give an IP address, optionally with :port"
            ) from None
        out.append((host, number))
    return out


def parse_networks(value: str) -> list[IPv4Network | IPv6Network]:
    """Addresses or CIDRs, comma-separated."""
    out = []
    for item in (part.strip() for part in value.split(",")):
        if item:
            try:
                out.append(ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (CIDR)") from None
    return out
