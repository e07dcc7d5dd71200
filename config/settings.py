"""The node's settings: embedded defaults, one TOML file, then MYOMAP_<SECTION>__<KEY> environment variables."""

from __future__ import annotations

import os
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
CONFIG_FILE_VARIABLE = "MYOMAP_CONFIG"


class Output(str, Enum):
    """Kinds of object the node sends out; peers name the ones they receive."""

    MAPS = "maps"  # reconstructed T1/T2 maps (Parametric Map and MR)
    SR = "sr"
    SEG = "seg"
    SC = "sc"


class DicomSettings(BaseModel):
    ae_title: str = "MYOMAP"
    bind: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535)
    allow_any_calling_ae: bool = True
    max_associations: int = Field(16, ge=1)
    max_pdu_bytes: int = Field(262144, ge=0)
    acse_timeout_s: float = Field(30.0, gt=0)
    dimse_timeout_s: float = Field(60.0, gt=0)
    network_timeout_s: float = Field(60.0, gt=0)
    max_image_pixels: int = Field(16_777_216, gt=0)

    @field_validator("ae_title")
    @classmethod
    def _ae_title_valid(cls, value: str) -> str:
        if not 1 <= len(value) <= 16 or "\\" in value or not value.isprintable():
            raise ValueError(f"ae_title must be 1-16 printable characters without backslash, got {value!r}")
        return value


class WebSettings(BaseModel):
    """The admin web page; ``login`` off only behind a site's own single-sign-on proxy."""

    bind: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    login: bool = True
    session_hours: float = Field(12.0, gt=0)
    # Signs the session cookies; empty: a random key kept in <storage root>/web_secret_key. Secret: never printed.
    secret_key: SecretStr = SecretStr("")


class StorageSettings(BaseModel):
    path: Path = Path("./data")
    min_free_mb: int = Field(512, ge=0)


class DatabaseSettings(BaseModel):
    url: str = ""


class QueueSettings(BaseModel):
    url: str = ""
    workers: int = Field(2, ge=1)


class SeriesSettings(BaseModel):
    quiet_seconds: float = Field(3.0, gt=0)


class RoutingSettings(BaseModel):
    return_to_sender: bool = True
    return_outputs: list[Output] = [Output.MAPS, Output.SC]


class ScuSettings(BaseModel):
    max_attempts: int = Field(6, ge=1)
    backoff_initial_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)


class ModelsSettings(BaseModel):
    """The ONNX models: where they run and which files; an empty path takes the model shipped with the node."""

    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")
    threads: int = Field(1, ge=0)  # onnxruntime intra-op threads per model; 0 lets it choose
    slice_workers: int = Field(0, ge=0)  # slices of a series analysed at once; 0: one per CPU core
    segmentation: str = ""
    consensus: str = ""
    motion: str = ""
    qc_encoder: str = ""
    qc_decoder: str = ""


class ScoringSettings(BaseModel):
    """How received reader contours are scored."""

    gold_standard: str = ""  # reader label whose contours are the reference; empty: STAPLE of readers named expert*


class LoggingSettings(BaseModel):
    level: str = "INFO"


class Peer(BaseModel):
    """A DICOM application entity the node talks to."""

    ae_title: str
    host: str | None = None  # when set, a store from this AE must come from this host
    port: int = Field(104, ge=1, le=65535)
    receives: list[Output] = []
    may_store: bool = True


class Settings(BaseSettings):
    """Effective configuration of one node; build it once with :func:`load_settings` and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="MYOMAP_", env_nested_delimiter="__", extra="forbid", toml_file=[DEFAULTS_FILE]
    )

    dicom: DicomSettings = DicomSettings()
    web: WebSettings = WebSettings()
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    queue: QueueSettings = QueueSettings()
    series: SeriesSettings = SeriesSettings()
    routing: RoutingSettings = RoutingSettings()
    scu: ScuSettings = ScuSettings()
    models: ModelsSettings = ModelsSettings()
    scoring: ScoringSettings = ScoringSettings()
    logging: LoggingSettings = LoggingSettings()
    peers: list[Peer] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments win, then the environment, then the TOML files (a site file over the defaults).
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, deep_merge=True))

    @cached_property
    def storage_root(self) -> Path:
        return self.storage.path.expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.storage_root / 'myomap.db'}"

    @property
    def queue_url(self) -> str:
        return self.queue.url or f"sqlite:///{self.storage_root / 'queue.db'}"

    def peer(self, ae_title: str) -> Peer | None:
        """The configured peer with this AE title, if any (AE titles compare without padding)."""
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title.strip() == wanted), None)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the effective settings from the defaults, an optional TOML file and the environment.

    Raises
    ------
    FileNotFoundError
        If ``config_file`` is given and does not exist.
    pydantic.ValidationError
        If a value is of the wrong type or out of range.
    """
    if config_file is None:
        config_file = os.environ.get(CONFIG_FILE_VARIABLE) or None
    if config_file is None:
        return Settings(**overrides)
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")

    class SiteSettings(Settings):
        model_config = SettingsConfigDict(toml_file=[DEFAULTS_FILE, path])

    return SiteSettings(**overrides)
