"""DIMSE command sets encoded by dicomnode.net.command_set are byte for byte what pynetdicom and pydicom write."""

from __future__ import annotations

from io import BytesIO

import pynetdicom.dimse_messages as dimse_messages
import pytest
from pydicom.tag import Tag
from pynetdicom import dimse
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_MOVE, C_STORE, N_ACTION, N_EVENT_REPORT
from pynetdicom.dsutils import encode as pydicom_encode

from dicomnode.net.command_set import encode_command_set, use_fast_command_sets

MR = "1.2.840.10008.5.1.4.1.1.4"
INSTANCE = "1.2.826.0.1.3680043.8.498.1234567890123456789"  # odd length: padded with a NUL


def _store_request() -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = 12
    primitive.AffectedSOPClassUID = MR
    primitive.AffectedSOPInstanceUID = INSTANCE
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "PACS1"  # odd length: padded with a space
    primitive.MoveOriginatorMessageID = 3
    return primitive


def _store_response(status: int, comment: str | None = None) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 12
    primitive.AffectedSOPClassUID = MR
    primitive.AffectedSOPInstanceUID = INSTANCE
    primitive.Status = status
    if comment is not None:
        primitive.ErrorComment = comment
    return primitive


def _echo(response: bool) -> C_ECHO:
    primitive = C_ECHO()
    if response:
        primitive.MessageIDBeingRespondedTo = 1
        primitive.Status = 0
    else:
        primitive.MessageID = 1
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    return primitive


def _find_response() -> C_FIND:
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 5
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Status = 0xFF00
    primitive.Identifier = BytesIO(b"\x10\x00\x10\x00\x04\x00\x00\x00Doe ")  # a data set follows
    return primitive


def _move_response() -> C_MOVE:
    primitive = C_MOVE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    primitive.Status = 0xFF00
    primitive.NumberOfRemainingSuboperations = 70000 % 65536
    primitive.NumberOfCompletedSuboperations = 2
    primitive.NumberOfFailedSuboperations = 0
    primitive.NumberOfWarningSuboperations = 1
    return primitive


def _action_request() -> N_ACTION:
    primitive = N_ACTION()
    primitive.MessageID = 9
    primitive.RequestedSOPClassUID = "1.2.840.10008.1.20.1"
    primitive.RequestedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    primitive.ActionTypeID = 1
    return primitive


def _event_report() -> N_EVENT_REPORT:
    primitive = N_EVENT_REPORT()
    primitive.MessageID = 10
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.20.1"
    primitive.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    primitive.EventTypeID = 2
    return primitive


PRIMITIVES = {
    "C-STORE-RQ": _store_request,
    "C-STORE-RSP success": lambda: _store_response(0x0000),
    "C-STORE-RSP failure, odd comment": lambda: _store_response(0xA900, "SOP class does not match"),
    "C-STORE-RSP failure, even comment": lambda: _store_response(0xC000, "Cannot understand"),
    "C-STORE-RSP failure, non-ASCII comment": lambda: _store_response(0xC000, "Daten unverst\u00e4ndlich"),
    "C-ECHO-RQ": lambda: _echo(False),
    "C-ECHO-RSP": lambda: _echo(True),
    "C-FIND-RSP pending": _find_response,
    "C-MOVE-RSP": _move_response,
    "N-ACTION-RQ": _action_request,
    "N-EVENT-REPORT-RQ": _event_report,
}


def _message(primitive: object) -> dimse_messages.DIMSEMessage:
    # pynetdicom's own choice of message class (DIMSEServiceProvider.send_msg)
    responding = primitive.MessageIDBeingRespondedTo is not None  # type: ignore[attr-defined]
    kind = dimse._RSP_TO_MESSAGE if responding else dimse._RQ_TO_MESSAGE
    message = kind[primitive.__class__]()
    message.primitive_to_message(primitive)
    return message


@pytest.fixture
def pynetdicoms_own_encoder():
    """pynetdicom as shipped for the duration of a test, whatever an earlier test installed."""
    installed = dimse_messages.encode
    dimse_messages.encode = pydicom_encode
    yield
    dimse_messages.encode = installed


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_every_command_set_is_encoded_as_pydicom_encodes_it(name: str, pynetdicoms_own_encoder) -> None:
    command_set = _message(PRIMITIVES[name]()).command_set
    assert encode_command_set(command_set) == pydicom_encode(command_set, True, True)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_messages_sent_with_the_fast_encoder_are_pynetdicoms_own(name: str, pynetdicoms_own_encoder) -> None:
    def sent() -> list[bytes]:
        message = _message(PRIMITIVES[name]())
        return [value for pdata in message.encode_msg(1, 16382) for _, value in pdata.presentation_data_value_list]

    expected = sent()
    use_fast_command_sets()
    assert dimse_messages.encode is not pydicom_encode
    assert sent() == expected


def test_elements_it_does_not_encode_itself_go_to_pydicom() -> None:
    command_set = _message(_store_response(0xA900)).command_set
    command_set.OffendingElement = [Tag("SOPClassUID"), Tag("SOPInstanceUID")]  # AT, two values
    assert encode_command_set(command_set) == pydicom_encode(command_set, True, True)
    assert len(encode_command_set(command_set)) == len(pydicom_encode(_message(_store_response(0xA900)).command_set,
                                                                     True, True)) + 8 + 8
