"""Routing rules: configured receivers, return to sender, hosts and de-duplication."""

from __future__ import annotations

import logging

import pytest

from config import load_settings
from config.settings import Output, Peer, Settings
from dicomnode.net.routing import Destination, destinations, is_console


def _settings(
    *peers: Peer, return_to_sender: bool = True, return_outputs: tuple[Output, ...] = (Output.MAPS,)
) -> Settings:
    return Settings(
        peers=list(peers),
        routing={"return_to_sender": return_to_sender, "return_outputs": list(return_outputs)},
    )


PACS = Peer(ae_title="PACS", host="10.0.0.2", port=11112, receives=[Output.SR, Output.SEG, Output.SC])
CONSOLE = Peer(ae_title="CONSOLE", host="10.0.0.5", port=104, receives=[Output.SC])


def test_peers_receive_the_outputs_they_list() -> None:
    settings = _settings(PACS, CONSOLE)
    assert destinations(settings, output=Output.SR, calling_ae="SCANNER", calling_host="10.0.0.9") == [
        Destination("PACS", "10.0.0.2", 11112)
    ]
    assert destinations(settings, output=Output.SC, calling_ae="SCANNER", calling_host="10.0.0.9") == [
        Destination("PACS", "10.0.0.2", 11112),
        Destination("CONSOLE", "10.0.0.5", 104),
    ]


def test_no_peer_no_destination() -> None:
    settings = _settings(PACS, return_to_sender=False)
    assert destinations(settings, output=Output.MAPS, calling_ae="PACS", calling_host="10.0.0.2") == []


def test_sender_gets_return_outputs_at_its_configured_host_and_port() -> None:
    scanner = Peer(ae_title="SCANNER", host="10.0.0.7", port=4006, receives=[])
    settings = _settings(PACS, scanner)
    found = destinations(settings, output=Output.MAPS, calling_ae="SCANNER", calling_host="192.168.1.1")
    assert found == [Destination("SCANNER", "10.0.0.7", 4006)]
    # Outputs outside return_outputs do not go back.
    assert destinations(settings, output=Output.SEG, calling_ae="SCANNER", calling_host="10.0.0.7") == [
        Destination("PACS", "10.0.0.2", 11112)
    ]


def test_sender_without_host_is_reached_where_it_called_from() -> None:
    scanner = Peer(ae_title="SCANNER", port=4006)
    settings = _settings(scanner)
    found = destinations(settings, output=Output.MAPS, calling_ae="SCANNER  ", calling_host="10.1.2.3")
    assert found == [Destination("SCANNER", "10.1.2.3", 4006)]


def test_return_to_sender_can_be_switched_off() -> None:
    scanner = Peer(ae_title="SCANNER", host="10.0.0.7", port=4006)
    settings = _settings(scanner, return_to_sender=False)
    assert destinations(settings, output=Output.MAPS, calling_ae="SCANNER", calling_host="10.0.0.7") == []


def test_unknown_sender_gets_nothing_back_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(PACS)
    with caplog.at_level(logging.WARNING, logger="dicomnode.net.routing"):
        found = destinations(settings, output=Output.MAPS, calling_ae="STRANGER", calling_host="10.0.0.8")
    assert found == []
    assert "STRANGER" in caplog.text


def test_sender_that_is_also_a_receiver_appears_once() -> None:
    console = Peer(ae_title="CONSOLE", host="10.0.0.5", port=104, receives=[Output.MAPS, Output.SC])
    settings = _settings(console, return_outputs=(Output.MAPS, Output.SC))
    found = destinations(settings, output=Output.MAPS, calling_ae="CONSOLE", calling_host="10.0.0.5")
    assert found == [Destination("CONSOLE", "10.0.0.5", 104)]


def test_receiver_without_host_is_skipped_unless_it_is_the_sender() -> None:
    archive = Peer(ae_title="ARCHIVE", port=104, receives=[Output.SR])
    settings = _settings(archive, PACS)
    assert destinations(settings, output=Output.SR, calling_ae="SCANNER", calling_host="10.0.0.9") == [
        Destination("PACS", "10.0.0.2", 11112)
    ]
    assert destinations(settings, output=Output.SR, calling_ae="ARCHIVE", calling_host="10.0.0.4") == [
        Destination("ARCHIVE", "10.0.0.4", 104),
        Destination("PACS", "10.0.0.2", 11112),
    ]


def test_output_given_as_string_is_accepted() -> None:
    settings = _settings(PACS)
    assert destinations(settings, output="seg", calling_ae="", calling_host="") == [
        Destination("PACS", "10.0.0.2", 11112)
    ]


def test_reader_overlays_go_to_the_peers_that_list_them_and_never_back_to_a_console_by_default() -> None:
    workstation = Peer(ae_title="READING", host="10.0.0.6", port=104, receives=[Output.SR, Output.READER_SC])
    pacs = Peer(ae_title="PACS", host="10.0.0.2", port=11112,
                receives=[Output.MAPS, Output.SR, Output.SEG, Output.SC, Output.READER_SC])
    console = Peer(ae_title="CONSOLE", host="10.0.0.5", port=104, receives=[Output.SC])
    # The embedded defaults: results go back to the sender, but not the reader overlays.
    settings = load_settings(peers=[workstation, pacs, console])
    assert Output.READER_SC not in settings.routing.return_outputs
    assert destinations(settings, output=Output.READER_SC, calling_ae="CONSOLE", calling_host="10.0.0.5") == [
        Destination("READING", "10.0.0.6", 104), Destination("PACS", "10.0.0.2", 11112),
    ]
    # The console's own images still reach it.
    assert Destination("CONSOLE", "10.0.0.5", 104) in destinations(
        settings, output=Output.SC, calling_ae="CONSOLE", calling_host="10.0.0.5")


def test_a_console_is_the_sender_or_a_peer_that_takes_console_images_and_no_reports() -> None:
    viewer = Peer(ae_title="VIEWER", host="10.0.0.8", port=104, receives=[Output.MAPS, Output.SC])
    scanner = Peer(ae_title="SCANNER", host="10.0.0.7", port=4006)
    settings = _settings(PACS, CONSOLE, viewer, scanner)
    assert is_console(settings, ae_title="SCANNER", calling_ae="SCANNER")
    assert is_console(settings, ae_title="CONSOLE", calling_ae="SCANNER")
    assert is_console(settings, ae_title="VIEWER", calling_ae="SCANNER")
    assert not is_console(settings, ae_title="PACS", calling_ae="SCANNER")  # it keeps the SR: an archive
    assert not is_console(settings, ae_title="SCANNER", calling_ae="OTHER")
    assert not is_console(_settings(scanner, return_to_sender=False), ae_title="SCANNER", calling_ae="SCANNER")
