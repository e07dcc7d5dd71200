"""The node's settings: embedded defaults, one TOML file, then MYOMAP_<SECTION>__<KEY> environment variables."""

from __future__ import annotations

import os
import ssl
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
CONFIG_FILE_VARIABLE = "MYOMAP_CONFIG"


class TLSFileError(ValueError):
    """A certificate, private key or CA file for DICOM TLS is missing or cannot be loaded."""


def _existing_file(path: str, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise TLSFileError(f"{what} {file} does not exist or is not a file")
    return file


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for the pass phrase of an encrypted key.
    raise TLSFileError("the private key is encrypted; the node needs an unencrypted PEM key (file mode 0600)")


def load_certificate_chain(context: ssl.SSLContext, certificate: str, private_key: str) -> None:
    """Load a PEM certificate (chain) and its unencrypted private key into ``context``.

    Raises
    ------
    TLSFileError
        If a file is missing or unreadable, not PEM, the key is encrypted or belongs to another certificate.
    """
    certificate_file = _existing_file(certificate, "TLS certificate")
    key_file = _existing_file(private_key, "TLS private key")
    try:
        context.load_cert_chain(certificate_file, key_file, password=_no_password)
    except ssl.SSLError as error:
        raise TLSFileError(
            f"cannot load TLS certificate {certificate_file} with private key {key_file} ({error.reason or error}): "
            "both must be PEM and the key must belong to the certificate"
        ) from error
    except OSError as error:
        raise TLSFileError(f"cannot read TLS certificate or key: {error}") from error


def load_ca_bundle(context: ssl.SSLContext, ca: str) -> None:
    """Load a PEM bundle of CA certificates into ``context`` as the ones it trusts.

    Raises
    ------
    TLSFileError
        If the file is missing, unreadable or holds no PEM certificate.
    """
    ca_file = _existing_file(ca, "TLS CA file")
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as error:
        raise TLSFileError(f"cannot load TLS CA file {ca_file} ({error.reason or error}): it must hold PEM "
                           "certificates") from error
    except OSError as error:
        raise TLSFileError(f"cannot read TLS CA file {ca_file}: {error}") from error


class Output(str, Enum):
    """Kinds of object the node sends out; peers name the ones they receive."""

    MAPS = "maps"  # reconstructed T1/T2 maps (Parametric Map and MR)
    SR = "sr"
    SEG = "seg"
    SC = "sc"  # the console's Secondary Captures of a map analysis
    READER_SC = "reader_sc"  # the overlay of a reader's contours scored against the reference
    PDF = "pdf"  # a trainee's progress report (Encapsulated PDF) after each scored attempt


class DicomSettings(BaseModel):
    ae_title: str = "MYOMAP"
    bind: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    allow_any_calling_ae: bool = True
    max_associations: int = Field(default=16, ge=1)
    # Processes that serve the DICOM ports: the node's own accepts and places each connection on the one with the
    # fewest open; max_associations counts the whole node's associations, pending connections and the inflation
    # budget are per process; 0: one per CPU core.
    processes: int = Field(default=0, ge=0)
    max_pdu_bytes: int = Field(default=262144, ge=0)
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    max_image_pixels: int = Field(default=16_777_216, gt=0)
    # A Deflated data set is inflated in bounded chunks and refused (0xA700) beyond this size or beyond what
    # max_image_pixels allows, whichever is smaller: a small deflate bomb must not take the node's memory.
    max_inflated_mb: int = Field(default=256, gt=0)
    # Connections that have not yet sent their A-ASSOCIATE-RQ: bounded apart from associations, closed after
    # request_timeout_s; when full, the oldest such connection (of an unknown address first) makes room.
    request_timeout_s: float = Field(default=5.0, gt=0)
    max_pending_connections: int = Field(default=32, ge=1)
    max_pending_per_address: int = Field(default=4, ge=1)  # not for the hosts of configured peers
    # Association slots beyond max_associations that only configured peers may take.
    reserved_peer_associations: int = Field(default=4, ge=0)
    # DICOM TLS (PS3.15 B.1): a second listener on tls_port (0: none) speaking TLS 1.2 or later; the node's
    # certificate and unencrypted private key (PEM) also authenticate it to peers it sends to over TLS.
    tls_port: int = Field(default=0, ge=0, le=65535)
    tls_certificate: str = ""
    tls_private_key: str = ""
    tls_ca: str = ""  # PEM bundle of the CAs whose certificates the node accepts (clients, and peers by default)
    tls_require_client_certificate: bool = False  # mutual TLS: a caller must present a certificate from tls_ca

    @field_validator("ae_title")
    @classmethod
    def _ae_title_valid(cls, value: str) -> str:
        if not 1 <= len(value) <= 16 or "\\" in value or not value.isprintable():
            raise ValueError(f"ae_title must be 1-16 printable characters without backslash, got {value!r}")
        return value

    @model_validator(mode="after")
    def _tls_valid(self) -> DicomSettings:
        if self.tls_port and self.tls_port == self.port:
            raise ValueError(f"tls_port {self.tls_port} is also the plain port; give TLS a port of its own")
        if self.tls_port and not (self.tls_certificate and self.tls_private_key):
            raise ValueError("tls_port needs tls_certificate and tls_private_key (PEM files)")
        if bool(self.tls_certificate) != bool(self.tls_private_key):
            raise ValueError("tls_certificate and tls_private_key go together: set both or neither")
        if self.tls_require_client_certificate and not self.tls_ca:
            raise ValueError("tls_require_client_certificate needs tls_ca, the CAs that sign client certificates")
        if self.tls_certificate:
            load_certificate_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.tls_certificate, self.tls_private_key)
        if self.tls_ca:
            load_ca_bundle(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.tls_ca)
        return self


class WebSettings(BaseModel):
    """The admin web page; ``login`` off only behind a site's own single-sign-on proxy."""

    bind: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    login: bool = True
    session_hours: float = Field(default=12.0, gt=0)
    # Keys the forms' CSRF tokens; empty: a random key kept in <storage root>/web_secret_key. Secret: never printed.
    secret_key: SecretStr = SecretStr("")
    # Origins (scheme://host[:port]) whose state-changing requests are taken besides the page's own, for a proxy
    # that does not pass the browser's Host header on; the CSRF check refuses every other foreign Origin.
    trusted_origins: list[str] = Field(default_factory=list)


class StorageSettings(BaseModel):
    path: Path = Path("./data")
    min_free_mb: int = Field(default=512, ge=0)


class DatabaseSettings(BaseModel):
    url: str = ""


class QueueSettings(BaseModel):
    url: str = ""
    workers: int = Field(default=2, ge=1)
    # `myomap serve` runs the workers in a child process of their own, so that analysis never slows ingest
    # (false: threads of the node's process, as an embedded Node does).
    separate_process: bool = True
    # /healthz says "degraded" when jobs have waited this long and no worker has taken one meanwhile.
    stalled_after_s: float = Field(default=300.0, gt=0)


class SeriesSettings(BaseModel):
    quiet_seconds: float = Field(default=3.0, gt=0)
    # A mapping series is analysed once its study has received no mapping image for this long, so that the raw
    # images and the scanner's map of one slice, sent one after the other, are analysed together.
    pairing_seconds: float = Field(default=2.0, ge=0)


class RoutingSettings(BaseModel):
    return_to_sender: bool = True
    return_outputs: list[Output] = [Output.MAPS, Output.SC]


class ScuSettings(BaseModel):
    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)


class ModelsSettings(BaseModel):
    """The ONNX models: where they run and which files; an empty path takes the model shipped with the node."""

    device: str = Field(default="auto", pattern="^(auto|cpu|cuda)$")
    threads: int = Field(default=1, ge=0)  # onnxruntime intra-op threads per model; 0 lets it choose
    slice_workers: int = Field(default=0, ge=0)  # slices of a series analysed at once; 0: one per CPU core
    # The workers' process shares each series with slice_workers - 1 forks of itself on the CPU (each holds about
    # 120 MB of its own); false: threads of the workers' process, which queue for one interpreter lock.
    slice_processes: bool = True
    segmentation: str = ""
    consensus: str = ""
    motion: str = ""
    qc_encoder: str = ""
    qc_decoder: str = ""


class MappingSettings(BaseModel):
    """How the node reports the maps it reconstructs."""

    # "scanner": the plain fit, as the vendor's own MOLLI/ShMOLLI map (what sites' normal ranges are built on);
    # "corrected": the Bloch-corrected estimate. The other one is reported as a second, labelled measurement.
    report_t1: Literal["scanner", "corrected"] = "scanner"


class ScoringSettings(BaseModel):
    """How received reader contours are scored."""

    gold_standard: str = ""  # reader label whose contours are the reference; empty: STAPLE of readers named expert*


class LoggingSettings(BaseModel):
    level: str = "INFO"
    # highdicom, pynetdicom and huey log at the higher of this and ``level`` (dicomnode/app/logging_setup.py).
    libraries: str = Field(default="WARNING", pattern="(?i)^(debug|info|warning|error|critical)$")


class ConsoleSettings(BaseModel):
    """What the images for the scanner console say beyond the verdict."""

    # True at sites whose governance requires the node's images to say they are not for diagnosis.
    not_for_diagnostic_use: bool = False


class Peer(BaseModel):
    """A DICOM application entity the node talks to."""

    ae_title: str
    host: str | None = None  # when set, a store from this AE must come from this host
    port: int = Field(default=104, ge=1, le=65535)
    receives: list[Output] = []
    may_store: bool = True
    tls: bool = False  # send to this peer over TLS, checking its certificate against tls_ca
    tls_ca: str = ""  # PEM bundle of the CAs that sign this peer's certificate; empty: [dicom] tls_ca
    tls_server_name: str = ""  # the name its certificate must carry; empty: its host
    tls_check_hostname: bool = True  # false only for sites whose peer certificates name no host or address

    @model_validator(mode="after")
    def _tls_ca_loads(self) -> Peer:
        if self.tls_ca:
            load_ca_bundle(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), self.tls_ca)
        return self


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
    mapping: MappingSettings = MappingSettings()
    scoring: ScoringSettings = ScoringSettings()
    logging: LoggingSettings = LoggingSettings()
    console: ConsoleSettings = ConsoleSettings()
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

    @model_validator(mode="after")
    def _tls_peers_have_ca(self) -> Settings:
        for peer in self.peers:
            if peer.tls and not (peer.tls_ca or self.dicom.tls_ca):
                raise ValueError(
                    f"peer {peer.ae_title} has tls = true but neither its tls_ca nor [dicom] tls_ca names the "
                    "CAs to check its certificate against"
                )
        return self

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
