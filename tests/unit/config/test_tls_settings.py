"""DICOM TLS settings: off by default, and a configuration whose files are missing or do not load is refused with
a message naming the key and the file (what `myomap config` and `myomap serve` print)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config.settings import load_settings
from tests.integration.tls_certs import Certificates, make_certificates

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _dicom(certs: Certificates, **values: Any) -> dict[str, Any]:
    return {
        "tls_port": 2762,
        "tls_certificate": str(certs.server_crt),
        "tls_private_key": str(certs.server_key),
        "tls_ca": str(certs.ca_crt),
        **values,
    }


def test_tls_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYOMAP_CONFIG", raising=False)
    settings = load_settings(peers=[{"ae_title": "PACS", "host": "10.0.0.2"}])
    dicom = settings.dicom
    assert (dicom.tls_port, dicom.tls_certificate, dicom.tls_ca, dicom.tls_require_client_certificate) == (
        0, "", "", False,
    )
    peer = settings.peers[0]
    assert (peer.tls, peer.tls_ca, peer.tls_server_name, peer.tls_check_hostname) == (False, "", "", True)


def test_a_complete_tls_configuration_loads_from_a_site_file(certs: Certificates, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        f'[dicom]\ntls_port = 2762\ntls_certificate = "{certs.server_crt}"\ntls_private_key = "{certs.server_key}"\n'
        f'tls_ca = "{certs.ca_crt}"\ntls_require_client_certificate = true\n\n'
        '[[peers]]\nae_title = "PACS"\nhost = "10.0.0.2"\ntls = true\ntls_server_name = "pacs.example.org"\n'
        f'\n[[peers]]\nae_title = "OTHER"\nhost = "10.0.0.3"\ntls = true\ntls_ca = "{certs.other_ca_crt}"\n'
        "tls_check_hostname = false\n"
    )
    settings = load_settings(site)
    assert settings.dicom.tls_port == 2762 and settings.dicom.tls_require_client_certificate
    assert settings.peer("PACS").tls_server_name == "pacs.example.org"
    assert settings.peer("OTHER").tls_check_hostname is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tls_certificate": "", "tls_private_key": ""}, "tls_port needs tls_certificate and tls_private_key"),
        ({"tls_port": 0, "tls_private_key": ""}, "set both or neither"),
        ({"port": 2762}, "tls_port 2762 is also the plain port"),
        ({"tls_ca": "", "tls_require_client_certificate": True}, "require_client_certificate needs tls_ca"),
        ({"tls_certificate": "/nonexistent/node.crt"}, r"TLS certificate /nonexistent/node\.crt does not exist"),
        ({"tls_private_key": "/nonexistent/node.key"}, r"TLS private key /nonexistent/node\.key does not exist"),
        ({"tls_ca": "/nonexistent/ca.pem"}, r"TLS CA file /nonexistent/ca\.pem does not exist"),
    ],
)
def test_incomplete_or_missing_files_are_refused(certs: Certificates, change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_settings(dicom=_dicom(certs, **change))


def test_files_that_do_not_load_are_refused(certs: Certificates, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="the key must belong to the certificate"):
        load_settings(dicom=_dicom(certs, tls_private_key=str(certs.other_key)))  # another certificate's key
    with pytest.raises(ValidationError, match=r"cannot load TLS certificate .*client\.key"):
        load_settings(dicom=_dicom(certs, tls_certificate=str(certs.client_key)))  # a key is no certificate
    with pytest.raises(ValidationError, match=r"cannot load TLS CA file .*server\.key"):
        load_settings(dicom=_dicom(certs, tls_ca=str(certs.server_key)))
    with pytest.raises(ValidationError, match=r"TLS CA file .* is not a file"):
        load_settings(dicom=_dicom(certs, tls_ca=str(tmp_path)))
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(certs.server_key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True, capture_output=True, timeout=60,
    )
    # Refused with a message rather than a pass-phrase prompt on the terminal.
    with pytest.raises(ValidationError, match="the private key is encrypted"):
        load_settings(dicom=_dicom(certs, tls_private_key=str(encrypted)))


def test_tls_peers_need_a_ca(certs: Certificates) -> None:
    with pytest.raises(ValidationError, match="peer PACS has tls = true but neither its tls_ca nor"):
        load_settings(peers=[{"ae_title": "PACS", "host": "10.0.0.2", "tls": True}])
    with pytest.raises(ValidationError, match=r"TLS CA file /nonexistent/pacs-ca\.pem does not exist"):
        load_settings(peers=[{"ae_title": "PACS", "tls": True, "tls_ca": "/nonexistent/pacs-ca.pem"}])
    # The node's own CA bundle serves peers without one; without a certificate the node presents none.
    settings = load_settings(dicom={"tls_ca": str(certs.ca_crt)},
                             peers=[{"ae_title": "PACS", "host": "10.0.0.2", "tls": True}])
    assert settings.peer("PACS").tls and settings.dicom.tls_port == 0


def test_myomap_config_reports_a_tls_error(certs: Certificates, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[dicom]\ntls_port = 2762\ntls_certificate = "/nonexistent/node.crt"\n'
                    f'tls_private_key = "{certs.server_key}"\n')
    myomap = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "myomap"
    if not myomap.exists():
        pytest.skip("the myomap entry point is not installed in .venv")
    done = subprocess.run([str(myomap), "config", "--config", str(site)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "TLS certificate /nonexistent/node.crt does not exist" in " ".join((done.stdout + done.stderr).split())
