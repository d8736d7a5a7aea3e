"""The one settings class. Every knob is an environment variable with the prefix ``YILIAN_``.

A ``.env`` file in the working directory is read too, so a deployment can keep its secrets out
of the process list. Nothing here reaches the network: defaults are embedded (SQLite, embedded
Chroma, the packaged multilingual encoder).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YILIAN_", env_file=".env", extra="ignore")

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(default=Path("./var"), description="Where SQLite, Chroma and uploads live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir.")
    chroma_url: str | None = Field(default=None, description="Chroma server URL; unset = embedded Chroma.")

    # --- knowledge -----------------------------------------------------------------------
    embedding_model: str | None = Field(
        default=None, description="Local path of a sentence-transformers model; unset = packaged USE encoder."
    )
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = 8.0
    max_upload_bytes: int = 20 * 1024 * 1024
    # Per-file caps: far above any real policy, they stop a pathological file (300k empty
    # paragraphs, a zip bomb, a 5,000-page PDF) before it costs minutes and gigabytes.
    max_document_chars: int = Field(default=2_000_000, ge=1000)
    max_document_chunks: int = Field(default=20_000, ge=10)
    max_pdf_pages: int = Field(default=3_000, ge=1)
    default_consortium: str | None = Field(
        default=None, description="Consortium whose documents an unbound user's answers prefer."
    )

    # --- HTTP ------------------------------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    web_chat: bool = Field(default=True, description="Serve the web chat (signed-in staff; demo: identity picker).")
    demo: bool = Field(
        default=False,
        description="Demo mode (`make run`): the web chat offers an identity picker. Loopback only, no channels.",
    )
    public_url: str | None = Field(
        default=None,
        description="Public base URL behind a proxy, e.g. https://yilian.example.org; its host is accepted "
                    "and sign-in links point there.",
    )
    trusted_proxies: list[str] = Field(
        default=["127.0.0.1", "::1"],
        description="Addresses or networks of the reverse proxy whose X-Real-IP names the client (audit log).",
    )
    login_link_ttl_minutes: int = Field(default=10, ge=1, le=60)
    session_ttl_hours: int = Field(default=12, ge=1, le=24 * 14)

    # --- Telegram --------------------------------------------------------------------------
    telegram_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org/bot"
    telegram_file_api_base: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None

    # --- WeCom -------------------------------------------------------------------------------
    wecom_corp_id: str | None = None
    wecom_agent_id: int | None = None
    wecom_secret: SecretStr | None = None
    wecom_token: SecretStr | None = None
    wecom_aes_key: SecretStr | None = None
    wecom_api_base: str = "https://qyapi.weixin.qq.com/cgi-bin/"
    wecom_oauth_base: str = Field(
        default="https://open.weixin.qq.com/",
        description="Where WeCom's web authorisation (connect/oauth2/authorize) lives.",
    )
    wecom_choice_style: Literal["card", "markdown"] = Field(
        default="card", description="How choices are shown: template cards with buttons, or a numbered markdown list."
    )
    wecom_per_user_per_minute: int = Field(
        default=25, ge=1, le=30, description="Messages per member per minute (WeCom drops more than 30)."
    )

    # --- delivery (every channel) -------------------------------------------------------------------
    inbound_lease_s: float = Field(
        default=30.0, gt=1,
        description="How long an inbound message stays with a worker that stops renewing it (one that died).")
    recovery_interval_s: float = Field(
        default=15.0, gt=0, description="How often a worker picks up messages a crashed worker left behind.")
    outbox_lease_s: float = Field(
        default=60.0, gt=1, description="How long a worker holds an outbound message it is sending.")

    # --- abuse limits (per user, every channel) ---------------------------------------------------
    rate_limit_per_minute: int = Field(default=20, ge=0, description="Sustained messages per minute per user; 0 = off.")
    rate_limit_burst: int = Field(default=8, ge=1, description="Messages a user may send back to back.")
    rate_limit_queue_cap: int = Field(default=10, ge=0, description="A user's unanswered messages kept; 0 = no cap.")

    # --- referrals --------------------------------------------------------------------------------
    referral_rules: Path | None = Field(
        default=None, description="The consortium's referral rules (YAML); default handlers/referral/rules_default.yaml.")
    referral_escalation_interval_s: float = Field(
        default=60.0, gt=0, description="How often unanswered referrals are checked for escalation.")

    # --- meetings, quotas and the scheduler ------------------------------------------------------
    reminder_offsets: str = Field(default="7d,1d,2h", description="Meeting reminders before the start (d/h/m).")
    quiet_hours: str = Field(default="22:00-07:30",
                             description="Beijing time when non-urgent notifications wait; empty disables.")
    meeting_rules: Path | None = Field(
        default=None, description="Required meetings per policy (YAML); default handlers/meeting_rules_default.yaml.")
    quota_rules: Path | None = Field(
        default=None, description="Training quotas (YAML); default handlers/quota_rules_default.yaml.")
    quota_pace_margin: float = Field(default=0.15, ge=0, le=1,
                                     description="How far behind a linear pace an institution may fall unreminded.")
    scheduler_enabled: bool = Field(default=True, description="Run the scheduler inside `yilian serve`.")
    scheduler_interval_s: float = Field(default=15.0, gt=0, le=60, description="Seconds between scheduler ticks.")
    scheduler_lease_s: float = Field(default=60.0, gt=0, description="The scheduler leader lease.")

    # --- behaviour ------------------------------------------------------------------------------
    dialog_ttl_minutes: int = 60
    invite_ttl_hours: int = 72
    log_level: str = "INFO"
    log_json: bool = False
    metrics_public: bool = Field(
        default=False, description="Serve /metrics to any address (default: loopback and private networks only).")

    @cached_property
    def resolved_data_dir(self) -> Path:
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'yilian.sqlite3'}"

    @property
    def chroma_path(self) -> Path:
        return self.resolved_data_dir / "chroma"

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_token is not None

    @property
    def web_base_url(self) -> str:
        """Where a browser reaches the web pages: ``public_url``, else this server on loopback."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.http_host if self.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def channels_configured(self) -> list[str]:
        """Names of the chat channels with credentials set (any, even half-configured)."""
        names = []
        if self.telegram_token is not None:
            names.append("telegram")
        if any(v is not None for v in (self.wecom_corp_id, self.wecom_secret, self.wecom_token, self.wecom_aes_key)):
            names.append("wecom")
        return names

    @property
    def wecom_enabled(self) -> bool:
        return all(
            v is not None
            for v in (self.wecom_corp_id, self.wecom_secret, self.wecom_token, self.wecom_aes_key)
        )


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and ``.env``), with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
