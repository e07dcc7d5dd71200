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


def _primitive(kind: type, **fields: object) -> object:
    primitive = kind()
    for name, value in fields.items():
        setattr(primitive, name, value)
    return primitive


def _store_response(status: int, comment: str | None = None) -> object:
    fields = {"ErrorComment": comment} if comment is not None else {}
    return _primitive(C_STORE, MessageIDBeingRespondedTo=12, AffectedSOPClassUID=MR,
                      AffectedSOPInstanceUID=INSTANCE, Status=status, **fields)


COMMITMENT = "1.2.840.10008.1.20.1"
PRIMITIVES = {
    # MoveOriginatorApplicationEntityTitle: odd length, padded with a space
    "C-STORE-RQ": lambda: _primitive(C_STORE, MessageID=12, AffectedSOPClassUID=MR, AffectedSOPInstanceUID=INSTANCE,
                                     Priority=2, MoveOriginatorApplicationEntityTitle="PACS1",
                                     MoveOriginatorMessageID=3),
    "C-STORE-RSP success": lambda: _store_response(0x0000),
    "C-STORE-RSP failure, odd comment": lambda: _store_response(0xA900, "SOP class does not match"),
    "C-STORE-RSP failure, even comment": lambda: _store_response(0xC000, "Cannot understand"),
    "C-STORE-RSP failure, non-ASCII comment": lambda: _store_response(0xC000, "Daten unverst\u00e4ndlich"),
    "C-ECHO-RQ": lambda: _primitive(C_ECHO, MessageID=1, AffectedSOPClassUID="1.2.840.10008.1.1"),
    "C-ECHO-RSP": lambda: _primitive(C_ECHO, MessageIDBeingRespondedTo=1, Status=0,
                                     AffectedSOPClassUID="1.2.840.10008.1.1"),
    # a pending C-FIND response: an identifier data set follows
    "C-FIND-RSP pending": lambda: _primitive(C_FIND, MessageIDBeingRespondedTo=5, Status=0xFF00,
                                             AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.1",
                                             Identifier=BytesIO(b"\x10\x00\x10\x00\x04\x00\x00\x00Doe ")),
    "C-MOVE-RSP": lambda: _primitive(C_MOVE, MessageIDBeingRespondedTo=7, Status=0xFF00,
                                     AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.2",
                                     NumberOfRemainingSuboperations=4, NumberOfCompletedSuboperations=2,
                                     NumberOfFailedSuboperations=0, NumberOfWarningSuboperations=1),
    "N-ACTION-RQ": lambda: _primitive(N_ACTION, MessageID=9, RequestedSOPClassUID=COMMITMENT,
                                      RequestedSOPInstanceUID=f"{COMMITMENT}.1", ActionTypeID=1),
    "N-EVENT-REPORT-RQ": lambda: _primitive(N_EVENT_REPORT, MessageID=10, AffectedSOPClassUID=COMMITMENT,
                                            AffectedSOPInstanceUID=f"{COMMITMENT}.1", EventTypeID=2),
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
