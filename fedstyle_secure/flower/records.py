"""The project's ``fedstyle.v1`` protobuf messages carried in Flower ``RecordDict`` s.

One Flower message type per round phase (``train.publish``, ``train.contribute``, ``query.decrypt``,
...) plus ``query.register``; its content is one ``ConfigRecord`` of protobuf bytes, so every
field keeps the meaning (and the checks) it has over gRPC.  Server -> artist: the round plan, the
broadcast, the CKKS contribution set and commitments, a masking phase's message.  Artist -> server:
what the gRPC artist would have called, in order (a publication, a contribution, decryption or
masking message, epsilon reports, a withdrawal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from flwr.app import ConfigRecord, ConfigRecordValues, RecordDict
from google.protobuf.message import Message as ProtoMessage

from fedstyle_secure.transport.wire import pb

RECORD = "fedstyle"
REGISTER = "query.register"
PHASE_ACTIONS: dict[str, str] = {  # coordinator phase -> Flower message type (train: the artist trains)
    "publish": "train.publish",
    "contribute": "train.contribute",
    "decrypt": "query.decrypt",
    # secagg / secagg+: one message type per masking phase (the artist trains when it advertises)
    "advertise": "train.advertise",
    "share": "query.share",
    "masked_input": "query.masked_input",
    "consistency": "query.consistency",
    "unmask": "query.unmask",
}
# keys of the artist's reply
CLAIM, NONCE, SIGNATURE = "artist", "nonce", "signature"
PUBLISH, UPLOAD_HEADER, UPLOAD_PAYLOAD, REPORTS, WITHDRAW, COMMIT, MASKING_UPLOAD = (
    "publish",
    "upload_header",
    "upload_payload",
    "reports",
    "withdraw",
    "commit",
    "masking_upload",
)
M = TypeVar("M", bound=ProtoMessage)
T = TypeVar("T")
MAX_LIST_ITEMS = 100_000  # items of one list in a record (contributions: one per listed artist)
# keys of the server's message
PLAN, BROADCAST, CONTRIBUTION_SET, CONTRIBUTIONS, COMMITS = "plan", "broadcast", "set", "contributions", "commits"
MASKING_DOWNLOAD = "masking_download"


@dataclass
class ServerMessage:
    """What the server sends an artist for one phase (absent parts are ``None``)."""

    plan: pb.RoundPlan
    broadcast: pb.BroadcastBody | None = None
    contribution_set: pb.ContributionSet | None = None
    contributions: dict[str, bytes] = field(default_factory=dict)  # CKKS committee: artist -> ciphertext
    commits: pb.DecryptionCommits | None = None
    masking: pb.MaskingDownload | None = None  # the server's masking message of the phase for this artist

    def to_record(self) -> RecordDict:
        values: dict[str, ConfigRecordValues] = {PLAN: self.plan.SerializeToString()}
        if self.masking is not None:
            values[MASKING_DOWNLOAD] = self.masking.SerializeToString()
        if self.broadcast is not None:
            values[BROADCAST] = self.broadcast.SerializeToString()
        if self.contribution_set is not None:
            values[CONTRIBUTION_SET] = self.contribution_set.SerializeToString()
            values[CONTRIBUTIONS + ".artists"] = list(self.contributions)
            values[CONTRIBUTIONS + ".payloads"] = list(self.contributions.values())
        if self.commits is not None:
            values[COMMITS] = self.commits.SerializeToString()
        return RecordDict({RECORD: ConfigRecord(values)})

    @classmethod
    def from_record(cls, content: RecordDict) -> ServerMessage:
        values = _values(content)
        artists = _list(values, CONTRIBUTIONS + ".artists", str)
        payloads = _list(values, CONTRIBUTIONS + ".payloads", bytes)
        return cls(
            plan=pb.RoundPlan.FromString(_bytes(values, PLAN)),
            broadcast=_optional(values, BROADCAST, pb.BroadcastBody),
            contribution_set=_optional(values, CONTRIBUTION_SET, pb.ContributionSet),
            contributions=dict(zip(artists, payloads)),
            commits=_optional(values, COMMITS, pb.DecryptionCommits),
            masking=_optional(values, MASKING_DOWNLOAD, pb.MaskingDownload),
        )


@dataclass
class ArtistReply:
    """What an artist answers to one phase: the calls the gRPC artist would have made."""

    artist: str
    publication: pb.PrototypePublication | None = None
    upload: tuple[pb.PayloadHeader, bytes] | None = None
    reports: list[pb.EpsilonReport] = field(default_factory=list)
    withdrawal: pb.Withdrawal | None = None
    commit: pb.DecryptionCommit | None = None
    masking: pb.MaskingUpload | None = None

    def to_record(self) -> RecordDict:
        values: dict[str, ConfigRecordValues] = {CLAIM: self.artist}
        if self.masking is not None:
            values[MASKING_UPLOAD] = self.masking.SerializeToString()
        if self.publication is not None:
            values[PUBLISH] = self.publication.SerializeToString()
        if self.upload is not None:
            values[UPLOAD_HEADER], values[UPLOAD_PAYLOAD] = self.upload[0].SerializeToString(), self.upload[1]
        if self.reports:
            values[REPORTS] = [r.SerializeToString() for r in self.reports]
        if self.withdrawal is not None:
            values[WITHDRAW] = self.withdrawal.SerializeToString()
        if self.commit is not None:
            values[COMMIT] = self.commit.SerializeToString()
        return RecordDict({RECORD: ConfigRecord(values)})

    @classmethod
    def from_record(cls, content: RecordDict) -> ArtistReply:
        values = _values(content)
        header = _optional(values, UPLOAD_HEADER, pb.PayloadHeader)
        return cls(
            artist=_str(values, CLAIM),
            publication=_optional(values, PUBLISH, pb.PrototypePublication),
            upload=None if header is None else (header, _bytes(values, UPLOAD_PAYLOAD)),
            reports=[pb.EpsilonReport.FromString(r) for r in _list(values, REPORTS, bytes)],
            withdrawal=_optional(values, WITHDRAW, pb.Withdrawal),
            commit=_optional(values, COMMIT, pb.DecryptionCommit),
            masking=_optional(values, MASKING_UPLOAD, pb.MaskingUpload),
        )


def registration_request(nonce: bytes) -> RecordDict:
    return RecordDict({RECORD: ConfigRecord({NONCE: nonce})})


def registration_nonce(content: RecordDict) -> bytes:
    return _bytes(_values(content), NONCE)


def registration_reply(artist: str, signature: bytes) -> RecordDict:
    return RecordDict({RECORD: ConfigRecord({CLAIM: artist, SIGNATURE: signature})})


def registration_claim(content: RecordDict) -> tuple[str, bytes]:
    """(claimed artist id, its signature of the server's nonce) of a registration reply."""
    values = _values(content)
    return _str(values, CLAIM), _bytes(values, SIGNATURE)


def _values(content: RecordDict) -> ConfigRecord:
    record = content.config_records.get(RECORD)
    if record is None:
        raise ValueError(f"the message carries no {RECORD!r} record")
    return record


def _bytes(values: ConfigRecord, key: str) -> bytes:
    value = values.get(key)
    if not isinstance(value, bytes):
        raise ValueError(f"the message's {key!r} is missing or not bytes")
    return value


def _list(values: ConfigRecord, key: str, item_type: type[T]) -> list[T]:
    """The list ``key`` (empty if absent), every item of ``item_type``: a record may carry lists of
    ints, floats, strings or bytes, and a peer's list is checked before any item is used (``bytes(n)``
    of an int would allocate ``n`` bytes)."""
    value = values.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"the message's {key!r} is not a list")
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(f"the message's {key!r} has {len(value)} items, more than {MAX_LIST_ITEMS}")
    items: list[T] = [item for item in value if isinstance(item, item_type)]
    if len(items) != len(value):
        raise ValueError(f"the message's {key!r} holds an item that is not {item_type.__name__}")
    return items


def _str(values: ConfigRecord, key: str) -> str:
    value = values.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"the message's {key!r} is not a string")
    return value


def _optional(values: ConfigRecord, key: str, message_type: type[M]) -> M | None:
    """The protobuf message ``key`` if present (``DecodeError`` if it is not one)."""
    if key not in values:
        return None
    message = message_type()
    message.ParseFromString(_bytes(values, key))
    return message
