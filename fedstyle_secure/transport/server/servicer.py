"""The gRPC server: decodes ``fedstyle.v1`` calls, authenticates them, forwards them to the
:class:`~fedstyle_secure.federation.coordinator.Coordinator` and persists state after every round.

Every refusal is a specific status (see :mod:`.rejections`); a refused call never changes state.
Long polls and streams are bounded by deadlines so the server never blocks forever.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedstyle_secure.data.images import decode_image
from fedstyle_secure.data.public import default_public_set, public_set_name, public_set_size
from fedstyle_secure.errors import ConfigError, DataError, SecureAggregationError
from fedstyle_secure.federation.coordinator import MASKING_STEPS, Coordinator, Schedule
from fedstyle_secure.federation.rejections import (
    Duplicate,
    Forbidden,
    Malformed,
    NotAuthenticated,
    PastDeadline,
    Rejected,
    Unavailable,
    WrongRound,
)
from fedstyle_secure.federation.strategy import initial_state
from fedstyle_secure.models.inputs import default_cache_dir
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.privacy.report_store import keep_withdrawal
from fedstyle_secure.privacy.reports import new_run_id
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.secure.ckks.decryption import CheckedCiphertext
from fedstyle_secure.secure.keys import pki
from fedstyle_secure.secure.keys.keystore import ServerKeys
from fedstyle_secure.transport import auth
from fedstyle_secure.transport.config import ServerConfig
from fedstyle_secure.transport.dp_config import dp_parameters, require_dp_schedule
from fedstyle_secure.transport.federation_model import server_model
from fedstyle_secure.transport.server.admission import CallGate, CallLimits, ConcurrencyLimiter, TooManyCalls, refuse
from fedstyle_secure.transport.server.metering import ByteMeter
from fedstyle_secure.transport.server.publish_index import index_from_run
from fedstyle_secure.transport.server.report_intake import (
    checked_report,
    checked_withdrawal_statement,
    register_roster_keys,
    store_checked_report,
    withdrawal_reason,
)
from fedstyle_secure.transport.server.store import NonFiniteState, Snapshot, StateStore, require_finite_state
from fedstyle_secure.transport.server.upload_limits import expected_layout, payload_limit
from fedstyle_secure.transport.wire import (
    MIN_CHUNK_BYTES,
    PROTOCOL,
    WIRE_ROUND_KINDS,
    PayloadTooLarge,
    WireError,
    chunk_payload,
    from_tensor,
    join_chunks,
    layout_from_fields,
    optional_tensor,
    pb,
    pb_grpc,
    submission_target,
)

log = logging.getLogger(__name__)
SERVICE_NAME = "fedstyle.v1.Federation"
MAX_POLL_SECONDS = 30.0


def poll_seconds(asked: float) -> float:
    """How long a long poll may wait for a caller asking ``asked`` seconds: within
    ``[0, MAX_POLL_SECONDS]``, and 0 for a value that is not finite (a NaN wait used to pass
    ``min``/``max`` unchanged, and ``Condition.wait_for(timeout=nan)`` spun a core under the lock)."""
    return min(max(asked, 0.0), MAX_POLL_SECONDS) if math.isfinite(asked) else 0.0


POLL_SLICE_SECONDS = 1.0  # a parked long poll notices within this time that its caller went away
TICK_SECONDS = 0.1
INDEX_RETRY_SECONDS = 10.0  # seconds between attempts to write the style index after a failure
PUMP_AHEAD_CHUNKS = 2  # an upload's chunks received but not yet checked: the one in hand + one queued
MAX_BROADCAST_DOWNLOADS = 8
"""Downloads of the broadcast per artist and plan step (round, phase, attempt): an honest artist
takes one per step, and one more per restart or dropped connection.  Each costs about 5 ms of the
server's lock (a 3 MiB model); one artist re-requesting it without end held that lock about 30 % of
the time (review, 2026-12-01)."""
QUERY_SLOTS = 2
"""Query images decoded and embedded at once (the others wait up to :data:`QUERY_WAIT_SECONDS`).  A
186-byte animated WebP declaring a 4096 x 4096 canvas passes every image check and costs 0.34 s of a
core and 252 MiB to decode (red-team review, 2026-12-01): eight buyer calls in flight
(``server.max_buyer_calls``) were about 2 GB; two slots bound it near 0.5 GB."""
QUERY_WAIT_SECONDS = 20.0
MAX_QUERY_PIXELS = 4096 * 4096  # a buyer's query image is refused above this many pixels (decoded: 3 bytes each)
# Methods whose body the server reads only once the call's metadata names the current round and phase.
SUBMISSION_PHASES: dict[str, frozenset[str]] = {
    "UploadContribution": frozenset({"contribute", "decrypt"}),
    "PublishPrototypes": frozenset({"publish"}),
    "SubmitMasking": frozenset(p.value for p in MASKING_STEPS),
}
_END = object()


@dataclass
class _Session:
    token: str
    peer: str
    last_seen: float


def _rpc(method: Callable) -> Callable:
    """Map :class:`Rejected` (and decode errors) to their gRPC status with the message; every
    refusal is logged (:func:`~.admission.refuse`)."""
    name = method.__name__

    def wrapper(self: FederationServicer, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except Rejected as exc:
            refuse(context, name, getattr(grpc.StatusCode, exc.code), exc)
        except PayloadTooLarge as exc:
            refuse(context, name, grpc.StatusCode.RESOURCE_EXHAUSTED, exc)
        except (WireError, ValueError) as exc:
            refuse(context, name, grpc.StatusCode.INVALID_ARGUMENT, exc)
        except SecureAggregationError as exc:
            refuse(context, name, grpc.StatusCode.ABORTED, exc)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


@dataclass
class FederationServicer(pb_grpc.FederationServicer):
    config: ServerConfig
    keys: ServerKeys
    coordinator: Coordinator
    store: StateStore
    clock: Callable[[], float] = time.time
    sessions: dict[str, _Session] = field(default_factory=dict)
    registered: set[str] = field(default_factory=set)
    told_finished: set[str] = field(default_factory=set)
    meter: ByteMeter = field(default_factory=ByteMeter)  # protobuf bytes in/out, logged per saved round
    revocations: auth.Revocations | None = None  # server.crl: revoked certificates refused at every call
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _saved_round: tuple[int, bool] = (-1, False)
    _logged_sum: object = None
    _index_error: str = ""  # why the last attempt to publish the style index failed ("" if none)
    _index_retry_at: float = 0.0  # time.monotonic() of the next attempt after a failure
    _query_slots: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(QUERY_SLOTS))
    _downloads: dict[str, tuple[tuple[int, str, int], int]] = field(default_factory=dict)  # artist -> (step, downloads)
    _run_parameters: dict[str, Any] = field(init=False)  # saved with every round state (restore_coordinator)

    def __post_init__(self) -> None:
        self._run_parameters = run_parameters(self.config)  # fixed for the run: computed once

    @property
    def _public_set(self) -> pb.PublicSetReference:
        """The public set every artist embeds and aligns on (data.public.default_public_set)."""
        name = default_public_set()
        return pb.PublicSetReference(name=public_set_name(name), count=public_set_size(name))

    # ------------------------------------------------------------------ plumbing

    def _artist(self, context: grpc.ServicerContext, rpc: str) -> str:
        """The calling artist: certificate identity + a live session of *this* certificate."""
        caller = auth.caller_of(context, self.revocations)
        auth.require_role(caller, pki.Role.ARTIST, rpc)
        token = dict(context.invocation_metadata()).get(auth.SESSION_METADATA)
        session = self.sessions.get(caller.subject_id)
        if session is None or token != session.token:
            raise NotAuthenticated(f"{caller.subject_id}: no valid session; call Register first (or it was superseded)")
        session.last_seen = self.clock()
        return caller.subject_id

    def identify(self, context: grpc.ServicerContext) -> auth.Caller:
        """The caller's certificate identity (revocation checked); an artist must be in the roster.
        Runs for every call before its body is read (:class:`~.admission.CallGate`)."""
        caller = auth.caller_of(context, self.revocations)
        if caller.role is pki.Role.ARTIST and caller.subject_id not in self.coordinator.roster:
            raise Forbidden(f"{caller.subject_id!r} is not in this federation's roster")
        return caller

    def admit(self, method: str, caller: auth.Caller, metadata: Mapping[str, str]) -> None:
        """Before a submission's body is read: its metadata must name the current round and an open
        phase the method submits in (else FAILED_PRECONDITION / DEADLINE_EXCEEDED at once)."""
        phases = SUBMISSION_PHASES.get(method)
        if phases is None:
            return
        auth.require_role(caller, pki.Role.ARTIST, method)
        try:
            round_id, phase = submission_target(metadata)
        except WireError as exc:
            raise Malformed(str(exc)) from exc
        if phase not in phases:
            raise Malformed(f"{method} submits in phase {' or '.join(sorted(phases))}, not {phase!r} (call metadata)")
        with self._cond:
            self.coordinator.check_open(caller.subject_id, round_id, phase, self.clock())

    def _changed(self) -> None:
        """After any state change: persist a completed round, wake long polls."""
        c = self.coordinator
        if c.last_sum is not None and c.last_sum is not self._logged_sum:  # who is in the sum; never the vector
            self._logged_sum = c.last_sum
            log.info(
                "masked sum unmasked",
                extra={
                    "round": c.last_sum.round_id,
                    "contributors": list(c.last_sum.contributors),
                    "dropped": list(c.last_sum.dropped),
                },
            )
        key = (c.state.round, c.standardisation is not None)
        if key != self._saved_round:
            try:
                self.store.save(
                    Snapshot(
                        c.state,
                        c.standardisation,
                        dict(c.reports),
                        c.roster,
                        c.schedule.algorithm,
                        c.run_id,
                        self._run_parameters,
                    )
                )
            except NonFiniteState as exc:  # unreachable past the coordinator's sum checks: fail closed
                log.error("refusing to persist or broadcast the state: %s", exc)
                c.halt(f"state refused by the store: {exc}")
                self._cond.notify_all()
                return
            self._saved_round = key
            received, sent = self.meter.totals()
            log.info(
                "round state saved",
                extra={
                    "round": c.state.round,
                    "phase": c.plan().phase.value,
                    "bytes_received": received,
                    "bytes_sent": sent,
                },
            )
        self._publish_index_if_due()
        self._cond.notify_all()

    def _publish_index_if_due(self) -> None:
        """Write the style index once the run finished (``server.index`` set), retrying a failed
        attempt every :data:`INDEX_RETRY_SECONDS` from the ticker: a failure is the server's, never
        the caller's whose submission finished the run, and it is logged and shown to buyers."""
        c, target = self.coordinator, self.config.index
        if target is None or not c.finished or c.failed is not None or self._index_published():
            return
        if self._index_error and self.clock() < self._index_retry_at:
            return
        try:
            index_from_run(c, self.config.embedding_dim, self.config.cache_dir, self.config.dp).save(target)
        except Exception as exc:
            self._index_error, self._index_retry_at = (
                f"{type(exc).__name__}: {exc}",
                self.clock() + INDEX_RETRY_SECONDS,
            )
            log.exception("writing the style index to %s failed; retrying in %.0f s", target, INDEX_RETRY_SECONDS)
            return
        self._index_error = ""
        log.info("style index published", extra={"index": str(target)})

    def tick(self) -> None:
        with self._cond:
            if self.coordinator.tick(self.clock()):
                self._changed()
            else:
                self._publish_index_if_due()

    def _plan_key(self) -> tuple[int, str, int]:
        """What an artist acts on once: (round id, phase, attempt)."""
        plan = self.coordinator.plan()
        return plan.round_id, plan.phase.value, plan.attempt

    def _plan_message(self) -> pb.RoundPlan:
        c = self.coordinator
        plan = c.plan()
        return pb.RoundPlan(
            round_id=plan.round_id,
            kind=WIRE_ROUND_KINDS[plan.kind],
            algorithm=c.schedule.algorithm,
            secure_mode=c.schedule.secure_mode,
            phase_deadline_unix=plan.phase_deadline,
            round_deadline_unix=plan.phase_deadline + c.schedule.phase_seconds,
            publish_prototypes=plan.publish,
            participants=list(plan.participants),
            total_rounds=c.schedule.rounds,
            finished=c.finished,
            value_low=plan.value_range[0],
            value_high=plan.value_range[1],
            phase=plan.phase.value,
            seed=c.schedule.seed,
            embedding_dim=self.config.embedding_dim,
            public_pretrain_steps=self.config.pretrain_steps,
            failure=c.failed or "",
            dp=self._dp_parameters(),
            public_set=self._public_set,
            masking=None
            if plan.masking is None
            else pb.MaskingParameters(
                session_id=plan.masking.session_id, threshold=plan.masking.threshold, degree=plan.masking.degree
            ),
            attempt=plan.attempt,
            quorum=c.schedule.quorum,
            committee_size=c.schedule.committee_size,
            decryptors=list(plan.decryptors),
            run_id=c.run_id,
        )

    def _dp_parameters(self) -> pb.DpParameters | None:
        """Announced only; each artist calibrates its own noise and its own ledger enforces its budget."""
        return dp_parameters(self.config.dp, self.coordinator.rules.release_plan_rounds())

    def _upload_limit(self, round_id: int, phase: str) -> tuple[int, str]:
        """Most bytes an upload for ``(round_id, phase)`` may declare, and where that limit comes from."""
        c = self.coordinator
        layout = expected_layout(c.schedule.algorithm, round_id, len(c.roster), self.config.embedding_dim)
        limit = payload_limit(layout, phase, c.schedule.secure_mode, None if c.ckks is None else c.ckks.params)
        if limit >= self.config.max_payload_bytes:
            return self.config.max_payload_bytes, "server.max_payload_bytes"
        why = f"the largest legitimate upload of round {round_id} phase {phase!r}: {layout.size} values + margin"
        return limit, why

    def _read_stream(
        self, requests: Iterator[pb.Chunk], context: grpc.ServicerContext, max_bytes: int, why: str
    ) -> tuple[pb.PayloadHeader, bytes]:
        """Join a Chunk stream of at most ``max_bytes`` (refused once its header declares more, or
        its chunks exceed the declared size), refusing one that stalls for ``stream_idle_seconds``.

        A pump thread receives the chunks so that a stall can be timed; it runs at most
        :data:`PUMP_AHEAD_CHUNKS` chunks ahead of the check and stops when the check is done, so a
        refused stream is never read further."""
        inbox: queue.Queue = queue.Queue(maxsize=PUMP_AHEAD_CHUNKS - 1)
        done = threading.Event()

        def hand_over(item: object) -> bool:
            while not done.is_set():
                try:
                    inbox.put(item, timeout=TICK_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False

        def pump() -> None:
            try:
                for chunk in requests:
                    if not hand_over(chunk):
                        return
            except Exception:  # the RPC was cancelled/aborted: stop quietly
                pass
            hand_over(_END)

        threading.Thread(target=pump, daemon=True, name="stream-pump").start()

        def chunks() -> Iterator[pb.Chunk]:
            while True:
                try:
                    item = inbox.get(timeout=self.config.stream_idle_seconds)
                except queue.Empty:
                    raise PastDeadline(f"upload stalled: no chunk for {self.config.stream_idle_seconds:g} s") from None
                if item is _END:
                    return
                yield item

        try:
            return join_chunks(chunks(), max_bytes, MIN_CHUNK_BYTES)
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"{exc} ({why})") from exc
        finally:
            done.set()

    # ------------------------------------------------------------------ RPCs

    @_rpc
    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.RegisterResponse:
        caller = auth.caller_of(context, self.revocations)
        auth.require_role(caller, pki.Role.ARTIST, "Register")
        if request.artist_id != caller.subject_id:
            raise Forbidden(f"certificate of {caller.subject_id!r} cannot register as {request.artist_id!r}")
        public = self.keys.identity_public_keys.get(caller.subject_id)
        if public is None or caller.subject_id not in self.coordinator.roster:
            raise Forbidden(f"{caller.subject_id!r} is not in this federation's roster")
        if request.protocol != PROTOCOL:
            raise Malformed(
                f"protocol {request.protocol[:40]!r}: this server speaks {PROTOCOL!r} only "
                "(run the same fedstyle-secure version on the server and every artist)"
            )
        auth.verify_registration(public, request.artist_id, bytes(request.nonce), bytes(request.identity_signature))
        with self._cond:
            now, old = self.clock(), self.sessions.get(caller.subject_id)
            if (
                old is not None
                and old.peer != context.peer()
                and now - old.last_seen < self.config.session_timeout_seconds
            ):
                raise Duplicate(
                    f"{caller.subject_id} is already connected from another session (seen {now - old.last_seen:.1f} "
                    "s ago)"
                )
            self.sessions[caller.subject_id] = _Session(auth.new_session_token(), context.peer(), now)
            self.registered.add(caller.subject_id)
            log.info("artist registered", extra={"artist": caller.subject_id, "peer": context.peer()})
            return pb.RegisterResponse(
                session=self.sessions[caller.subject_id].token,
                current_round=self.coordinator.plan().round_id,
                roster=list(self.coordinator.roster),
            )

    @_rpc
    def GetRoundPlan(self, request: pb.RoundPlanRequest, context: grpc.ServicerContext) -> pb.RoundPlan:
        """Reply once the current (round, phase, attempt) differs from the artist's last one (bounded wait)."""
        caller = self._artist(context, "GetRoundPlan")
        end = time.monotonic() + poll_seconds(request.wait_seconds)
        seen = (request.after_round, request.after_phase, request.after_attempt)

        def answer_now() -> bool:  # called with the lock held
            return self.coordinator.finished or self._plan_key() != seen or not context.is_active()

        with self._cond:
            while not answer_now() and time.monotonic() < end:
                self._cond.wait(timeout=min(POLL_SLICE_SECONDS, max(end - time.monotonic(), 0.0)))
            if self.coordinator.finished:
                self.told_finished.add(caller)
            return self._plan_message()

    def everyone_told_finished(self) -> bool:
        """Whether every registered artist has received the final plan (the server may exit)."""
        with self._cond:
            return self.registered <= self.told_finished

    @_rpc
    def DownloadBroadcast(self, request: pb.BroadcastRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        """The current round's broadcast, at most :data:`MAX_BROADCAST_DOWNLOADS` times per artist and
        plan step: building it copies the model under the server's lock (milliseconds for a 3 MiB
        model), so an artist re-requesting it without end would hold that lock for the others' calls."""
        artist = self._artist(context, "DownloadBroadcast")
        with self._cond:
            plan = self.coordinator.plan()
            if request.round_id != plan.round_id:
                raise WrongRound(
                    f"broadcast of round {request.round_id} is not available (round {plan.round_id}, phase "
                    f"{plan.phase.value})"
                )
            self._count_download(artist)
            body = self._broadcast_body(plan.round_id)  # its tensors are copies: serialised outside the lock
        return chunk_payload(body.SerializeToString(), round_id=plan.round_id, kind=pb.PAYLOAD_KIND_BROADCAST)

    def _count_download(self, artist: str) -> None:
        """Count ``artist``'s download of the current plan step's broadcast (call with ``_cond`` held);
        refuse (``TooManyCalls``) one past :data:`MAX_BROADCAST_DOWNLOADS`."""
        step = self._plan_key()
        counted_step, count = self._downloads.get(artist, (step, 0))
        count = count + 1 if counted_step == step else 1
        if count > MAX_BROADCAST_DOWNLOADS:
            round_id, phase, attempt = step
            raise TooManyCalls(
                f"{artist} downloaded the broadcast of round {round_id} phase {phase!r} attempt {attempt} "
                f"{MAX_BROADCAST_DOWNLOADS} times already (MAX_BROADCAST_DOWNLOADS); keep the one downloaded"
            )
        self._downloads[artist] = (step, count)

    def _broadcast_body(self, round_id: int) -> pb.BroadcastBody:
        s, std = self.coordinator.state, self.coordinator.standardisation
        try:  # what the store refuses is never broadcast either
            require_finite_state(s, std)
        except NonFiniteState as exc:
            raise SecureAggregationError(f"no broadcast: {exc}") from exc
        params = s.params if s.round > 0 else None  # before any training round: the starting model every artist builds
        return pb.BroadcastBody(
            round_id=round_id,
            params=optional_tensor(params),
            consensus=optional_tensor(s.consensus),
            prototypes=optional_tensor(s.prototypes),
            known=[bool(k) for k in s.known],
            feature_mean=optional_tensor(None if std is None else std[0]),
            feature_std=optional_tensor(None if std is None else std[1]),
        )

    @_rpc
    def PublishPrototypes(self, request: pb.PrototypePublication, context: grpc.ServicerContext) -> pb.Ack:
        artist = self._artist(context, "PublishPrototypes")
        _same_round(context, request.round_id)
        with self._cond:
            self.submit_publication(artist, request)
        return pb.Ack(round_id=request.round_id, accepted_bytes=request.prototypes.ByteSize())

    def submit_publication(self, artist: str, request: pb.PrototypePublication) -> None:
        """``artist``'s prototype publication to the coordinator (call with ``_cond`` held); any
        transport whose caller was authenticated as ``artist`` (gRPC, Flower) submits here."""
        rows = np.asarray(request.artist_rows, dtype=np.int64)
        protos = from_tensor(request.prototypes, f"prototypes of {artist}").astype(np.float32)
        self.coordinator.submit_publication(artist, request.round_id, rows, protos, bytes(request.nonce), self.clock())
        self._changed()

    @_rpc
    def UploadContribution(self, requests: Iterator[pb.Chunk], context: grpc.ServicerContext) -> pb.Ack:
        artist = self._artist(context, "UploadContribution")
        round_id, phase = submission_target(dict(context.invocation_metadata()))  # admitted before the body was read
        header, payload = self._read_stream(requests, context, *self._upload_limit(round_id, phase))
        _same_round(context, header.round_id)
        checked = self.checked_payload(artist, header, payload)
        with self._cond:
            self.submit_upload(artist, header, checked)
        return pb.Ack(round_id=header.round_id, accepted_bytes=len(payload))

    def checked_payload(self, artist: str, header: pb.PayloadHeader, payload: bytes) -> bytes | CheckedCiphertext:
        """``payload`` with the costly part of its checks done, before the server's lock (refused:
        ``Malformed``): a CKKS contribution's ciphertext is parsed and checked here (0.1-0.2 s of
        TenSEAL), so an artist resending crafted ones holds no lock the others' calls need."""
        if header.kind == pb.PAYLOAD_KIND_CKKS_CIPHERTEXT and self.coordinator.schedule.secure_mode == "ckks":
            return self.coordinator.check_ciphertext(artist, header.round_id, payload)
        return payload

    def submit_upload(self, artist: str, header: pb.PayloadHeader, payload: bytes | CheckedCiphertext) -> None:
        """``artist``'s contribution or decrypted aggregate (after :meth:`checked_payload`) to the
        coordinator (call with ``_cond`` held)."""
        expected = (
            pb.PAYLOAD_KIND_CKKS_CIPHERTEXT
            if self.coordinator.schedule.secure_mode == "ckks"
            else pb.PAYLOAD_KIND_PLAIN_VECTOR
        )
        now = self.clock()
        if header.kind == pb.PAYLOAD_KIND_DECRYPTED_AGGREGATE and not isinstance(payload, CheckedCiphertext):
            self.coordinator.submit_decrypted(artist, header.round_id, payload, bytes(header.nonce), now)
        elif header.kind == expected:
            layout = layout_from_fields(header.layout)
            if not layout.fields:
                raise Malformed("a contribution must declare its layout")
            self.coordinator.submit_contribution(
                artist,
                header.round_id,
                layout,
                payload,
                bytes(header.nonce),
                now,
                bytes(header.signature),
                header.min_quorum,
            )
        else:
            raise Malformed(
                f"payload kind {pb.PayloadKind.Name(header.kind)} is not accepted in secure mode "
                f"{self.coordinator.schedule.secure_mode!r}"
            )
        self._changed()

    @_rpc
    def GetContributionSet(
        self, request: pb.ContributionSetRequest, context: grpc.ServicerContext
    ) -> pb.ContributionSet:
        """CKKS decryption committee: the signed contributions of the current attempt."""
        artist = self._artist(context, "GetContributionSet")
        with self._cond:
            return self.contribution_set_message(artist, request.round_id)

    def contribution_set_message(self, artist: str, round_id: int) -> pb.ContributionSet:
        """The signed contributions of the current attempt, for committee member ``artist``."""
        attempt, contributions, sizes = self.coordinator.contribution_set(artist, round_id)
        listed = [
            pb.SignedContribution(
                artist_id=c.artist,
                sha256=c.digest,
                signature=c.signature,
                size_bytes=sizes[c.artist],
                min_quorum=c.min_quorum,
            )
            for c in contributions
        ]
        return pb.ContributionSet(round_id=round_id, attempt=attempt, contributions=listed)

    @_rpc
    def DownloadContribution(
        self, request: pb.ContributionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Chunk]:
        """CKKS decryption committee: one listed contribution's ciphertext."""
        artist = self._artist(context, "DownloadContribution")
        with self._cond:
            data = self.coordinator.contribution_payload(artist, request.round_id, request.artist_id)
        return chunk_payload(data, round_id=request.round_id, kind=pb.PAYLOAD_KIND_CKKS_CONTRIBUTION)

    @_rpc
    def CommitDecryption(self, request: pb.DecryptionCommit, context: grpc.ServicerContext) -> pb.DecryptionCommits:
        """CKKS decryption committee: keep the caller's commitment, then wait (bounded) until every member committed."""
        artist = self._artist(context, "CommitDecryption")
        wait = poll_seconds(request.wait_seconds)
        with self._cond:
            c = self.coordinator
            c.commit_decryption(
                artist, request.round_id, request.attempt, bytes(request.set_digest), bytes(request.signature)
            )
            self._changed()
            seen = self._plan_key()
            self._cond.wait_for(
                lambda: c.decryption_committed or self._plan_key() != seen or not context.is_active(), timeout=wait
            )
            return self.decryption_commits_message(artist, request.round_id)

    def decryption_commits_message(self, artist: str, round_id: int) -> pb.DecryptionCommits:
        """The committee's commitments held so far, for committee member ``artist``."""
        attempt, commits = self.coordinator.decryption_commits(artist, round_id)
        held = [
            pb.SignedCommit(artist_id=a, set_digest=digest, signature=signature)
            for a, (digest, signature) in sorted(commits.items())
        ]
        return pb.DecryptionCommits(round_id=round_id, attempt=attempt, commits=held)

    @_rpc
    def SubmitMasking(self, request: pb.MaskingUpload, context: grpc.ServicerContext) -> pb.Ack:
        """One pairwise-masking message of the current masking phase (secure modes secagg/secagg+)."""
        artist = self._artist(context, "SubmitMasking")
        _same_round(context, request.round_id)
        with self._cond:
            self.submit_masking(artist, request)
        return pb.Ack(round_id=request.round_id, accepted_bytes=len(request.message))

    def submit_masking(self, artist: str, request: pb.MaskingUpload) -> None:
        """``artist``'s pairwise-masking message to the coordinator (call with ``_cond`` held); any
        transport whose caller was authenticated as ``artist`` (gRPC, Flower) submits here."""
        layout = layout_from_fields(request.layout) if len(request.layout) else None
        if (
            layout is not None and 4 * layout.size > self.config.max_message_bytes
        ):  # its masked input could never arrive
            raise PayloadTooLarge(
                f"layout of {layout.size} entries needs a {4 * layout.size}-byte masked input; max_message_bytes is "
                f"{self.config.max_message_bytes}"
            )
        self.coordinator.submit_masking(
            artist, request.round_id, request.phase, bytes(request.message), layout, bytes(request.nonce), self.clock()
        )
        self._changed()

    @_rpc
    def FetchMasking(self, request: pb.MaskingDownloadRequest, context: grpc.ServicerContext) -> pb.MaskingDownload:
        """The server's masking message of a phase for this artist; waits (bounded) until the phase opens."""
        artist = self._artist(context, "FetchMasking")
        end = time.monotonic() + MAX_POLL_SECONDS
        with self._cond:
            message = self.coordinator.masking_message(artist, request.round_id, request.phase)
            while message is None and context.is_active() and time.monotonic() < end:
                self._cond.wait(timeout=min(POLL_SLICE_SECONDS, max(end - time.monotonic(), 0.0)))
                message = self.coordinator.masking_message(artist, request.round_id, request.phase)
        if message is None:
            raise WrongRound(f"masking message {request.phase!r} of round {request.round_id} is not available yet")
        return pb.MaskingDownload(round_id=request.round_id, phase=request.phase, message=message)

    @_rpc
    def UploadEpsilonReport(self, request: pb.EpsilonReport, context: grpc.ServicerContext) -> pb.Ack:
        """Accept a signed epsilon report only if the artist's identity key signed it; store it if configured."""
        artist = self._artist(context, "UploadEpsilonReport")
        report = self.check_report(artist, request)  # before the lock
        with self._cond:  # one writer of the reports directory
            self.store_checked(artist, request, report)
        return pb.Ack(round_id=request.round_id, accepted_bytes=len(request.signed_json))

    def check_report(self, artist: str, request: pb.EpsilonReport) -> Mapping[str, object]:
        """``artist``'s report if its identity key signed it and it passes every check
        (:func:`checked_report`); call *without* ``_cond``: a crafted report's checks are the
        expensive part (the Flower server checks a reply's reports before it takes the lock too)."""
        return checked_report(request, artist, self.keys.identity_public_keys[artist])

    def store_checked(self, artist: str, request: pb.EpsilonReport, report: Mapping[str, object]) -> None:
        """Store a :meth:`check_report` result (call with ``_cond`` held): only cheap work under the lock."""
        self.coordinator.check_report_round(request.round_id)  # before anything is written
        store_checked_report(report, self.config.reports_dir)
        if self.coordinator.record_report(artist, request.round_id):
            self._saved_round = (-1, False)  # persist the report index (a resent report changes nothing)
            self._changed()
        log.info(
            "epsilon report of %s for round %d stored",
            artist,
            request.round_id,
            extra={"artist": artist, "round": request.round_id},
        )

    @_rpc
    def Withdraw(self, request: pb.Withdrawal, context: grpc.ServicerContext) -> pb.Ack:
        """The artist retires for good (e.g. privacy budget); the reason is persisted and logged."""
        artist = self._artist(context, "Withdraw")
        with self._cond:
            reason = self.withdraw(artist, request)
        return pb.Ack(round_id=request.round_id, detail=f"retired: {reason}")

    def withdraw(self, artist: str, request: pb.Withdrawal) -> str:
        """Retire ``artist`` for good (call with ``_cond`` held); returns the reason kept.  Its signed
        withdrawal, if it sent one (checked: its own, for this run and round), is kept beside its
        reports, so an audit tells the retirement from deleted reports."""
        reason = withdrawal_reason(request)
        c = self.coordinator
        if artist in c.state.retired:  # a repeat (or replay) changes nothing, saves nothing, checks nothing
            return c.state.retired[artist]
        statement = checked_withdrawal_statement(request, artist, c.identity_publics[artist], c.run_id)
        c.retire(artist, reason)
        if statement is not None and self.config.reports_dir is not None:
            keep_withdrawal(self.config.reports_dir, statement)
        self.coordinator.tick(self.clock())  # the phase may now be complete without it
        self._saved_round = (-1, False)  # persist the retirement
        self._changed()
        log.warning(
            "%s retired at round %d: %s",
            artist,
            request.round_id,
            reason,
            extra={"artist": artist, "round": request.round_id, "reason": reason},
        )
        return self.coordinator.state.retired.get(artist, reason)

    @_rpc
    def Query(self, request: pb.QueryRequest, context: grpc.ServicerContext) -> pb.QueryResponse:
        auth.require_role(auth.caller_of(context, self.revocations), pki.Role.BUYER, "Query")
        if not self._index_published():
            if self._index_error:
                raise Unavailable(f"the style index could not be written yet ({self._index_error}); the server retries")
            if self.coordinator.failed is not None:
                raise WrongRound(f"this server's run failed, so it publishes no style index: {self.coordinator.failed}")
            if self._index_due():
                raise Unavailable("the run finished and its style index is being written; retry in a few seconds")
            raise WrongRound(
                "this server has no published style index yet (it is written after the final round when server.index "
                "is set)"
            )
        if not self._query_slots.acquire(timeout=QUERY_WAIT_SECONDS):
            raise Unavailable(f"the server is answering {QUERY_SLOTS} other queries; retry in a few seconds")
        try:
            return self._answer_query(request)
        finally:
            self._query_slots.release()

    def _answer_query(self, request: pb.QueryRequest) -> pb.QueryResponse:
        """Decode, embed and rank one query image (in one of the :data:`QUERY_SLOTS`)."""
        try:  # dimensions checked from the header before anything is decoded (decompression bombs)
            image = decode_image(io.BytesIO(bytes(request.image)), max_pixels=MAX_QUERY_PIXELS, name="(query)")
        except DataError as exc:
            raise Malformed(f"query image: {exc}") from exc
        assert self.config.index is not None  # _index_published() checked it
        index = StyleIndex.load(self.config.index)
        ranked = index.rank(index.embed_images(image[None])[0], max(int(request.top_k), 1))
        return pb.QueryResponse(hits=[pb.QueryHit(artist=r.artist, score=r.score) for r in ranked])

    @_rpc
    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.Status:
        """Round and phase for everyone; artists also see who registered, the last error and their
        own retirement reason and report round; other artists' reasons stay in the operator's log."""
        caller = auth.caller_of(context, self.revocations)
        with self._cond:
            c = self.coordinator
            plan = c.plan()
            status = pb.Status(round_id=plan.round_id, phase=plan.phase.value, index_published=self._index_published())
            if caller.role is pki.Role.ARTIST:
                me = caller.subject_id
                status.registered.extend(sorted(self.registered))
                status.last_error = c.failed or c.last_error
                if me in c.state.retired:
                    status.retired[me] = c.state.retired[me]
                if me in c.reports:
                    status.reports[me] = c.reports[me]
            return status

    def _index_published(self) -> bool:
        return self.config.index is not None and (self.config.index / "index.json").exists()

    def _index_due(self) -> bool:
        """The run finished and a style index is configured, so one is (being) written."""
        c = self.coordinator
        return self.config.index is not None and c.finished and c.failed is None

    def outputs_settled(self) -> bool:
        """The run finished and its outputs are final: the index is published (or its failure
        recorded, retried by the ticker).  Read under the lock, so never halfway through a write."""
        with self._cond:
            if not self.coordinator.finished:
                return False
            return not self._index_due() or self._index_published() or bool(self._index_error)


def _same_round(context: grpc.ServicerContext, round_id: int) -> None:
    """A submission's body must be for the round its call metadata named (which was admitted)."""
    target, _ = submission_target(dict(context.invocation_metadata()))
    if target != round_id:
        raise Malformed(f"the message is for round {round_id}, its call metadata for round {target}")


def run_parameters(config: ServerConfig) -> dict[str, Any]:
    """What a run's artists pin at its first plan or are signed for (as JSON values): a restart of
    the server on the run's ``state_db`` must keep them, or no artist of the run can go on."""
    schedule = config.schedule
    values = {
        "algorithm": schedule.algorithm,
        "rounds": schedule.rounds,
        "secure_mode": schedule.secure_mode,
        "seed": schedule.seed,
        "refreshes": sorted(schedule.refreshes),
        "standardise": schedule.standardise,
        "masking_threshold": schedule.masking_threshold,
        "masking_degree": schedule.masking_degree,
        "committee_size": schedule.committee_size if schedule.secure_mode == "ckks" else None,  # pinned per round
        "embedding_dim": config.embedding_dim,
        "public_pretrain_steps": config.pretrain_steps,
        "public_set": public_set_name(default_public_set()),  # $FEDSTYLE_PUBLIC_SET or what is installed
        "dp": None if config.dp is None else dataclasses.asdict(config.dp),
    }
    return cast(dict[str, Any], json.loads(json.dumps(values)))  # as the store gives them back


def _changed_run_parameters(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{key} {saved.get(key)!r} -> {now.get(key)!r}" for key in sorted(now) if saved.get(key) != now.get(key)]


def _warn_if_ckks_retries_cannot_complete(schedule: Schedule, n_artists: int) -> None:
    """Under ``ckks`` a retry after a failed decrypt phase runs without that attempt's K committee
    members (they sit the round out), and every set needs max(quorum, K) artists: say so at start when
    the roster is too small for such a retry to complete."""
    needed, size = max(schedule.quorum, schedule.committee_size), schedule.committee_size
    if schedule.secure_mode != "ckks" or not size <= n_artists:
        return  # an impossible committee size is refused by Schedule.validate
    if schedule.max_retries > 0 and needed > n_artists - size:
        log.warning(
            "secure_mode ckks: a round whose decrypt phase fails cannot be retried with %d artists: the retry "
            "runs without the %d committee members and needs max(quorum %d, committee_size %d) = %d of the %d "
            "others",
            n_artists,
            size,
            schedule.quorum,
            size,
            needed,
            n_artists - size,
        )


def restore_coordinator(config: ServerConfig, keys: ServerKeys, store: StateStore) -> Coordinator:
    """A coordinator resumed from ``store`` (or fresh, from the starting model every artist
    computes too), over the key set's roster; the round layouts come from that model.
    :class:`ConfigError` when the config changed what the saved run's artists pinned."""
    roster = tuple(keys.artists)
    _warn_if_ckks_retries_cannot_complete(config.schedule, len(roster))
    snapshot = store.load()
    if snapshot is not None and (snapshot.roster != roster or snapshot.algorithm != config.schedule.algorithm):
        raise SecureAggregationError(
            f"{store.path}: saved for roster {snapshot.roster} / {snapshot.algorithm}, not this configuration"
        )
    if snapshot is not None and snapshot.run_parameters is None:
        log.warning(
            "%s was saved by a version that kept no run parameters: this restart's [federation] settings are "
            "taken as the run's from now on (unchecked against its start)",
            store.path,
        )
    if snapshot is not None and snapshot.run_parameters is not None:
        changed = _changed_run_parameters(snapshot.run_parameters, run_parameters(config))
        if changed:
            raise ConfigError(
                f"{store.path} holds run {snapshot.run_id} started with other [federation] settings "
                f"({'; '.join(changed)}); its artists would refuse every plan: restore those settings, or "
                "start a new run with a fresh server.state_db"
            )
    model, shape = server_model(config, len(roster), config.cache_dir or default_cache_dir())
    params = get_flat_params(model) if shape.model is not None else None
    state = snapshot.state if snapshot else initial_state(len(roster), config.embedding_dim, params)
    if shape.model is not None and state.params is not None and state.params.shape != (shape.model.param_count,):
        raise SecureAggregationError(
            f"{store.path}: saved parameters have shape {state.params.shape}, "
            f"this configuration's model has ({shape.model.param_count},)"
        )
    coordinator = Coordinator(
        schedule=config.schedule,
        roster=roster,
        state=state,
        shape=shape,
        ckks=keys.ckks,
        identity_publics=keys.identity_public_keys,
        standardisation=snapshot.standardisation if snapshot else None,
        reports=dict(snapshot.reports) if snapshot else {},
        run_id=snapshot.run_id if snapshot else new_run_id(),
    )
    if snapshot is None:  # the run id is fixed before any artist can pin it: a restart keeps it
        store.save(
            Snapshot(state, None, {}, roster, config.schedule.algorithm, coordinator.run_id, run_parameters(config))
        )
    return coordinator


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    servicer: FederationServicer
    health: health.HealthServicer
    _stop: threading.Event
    gate: CallGate

    def stop(self, grace: float | None = 1.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait()

    def wait_finished(self, timeout: float) -> bool:
        """Whether the run finished with its outputs settled (:meth:`outputs_settled`) within
        ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.servicer.outputs_settled():
                return True
            time.sleep(0.1)
        return self.servicer.outputs_settled()


def new_servicer(config: ServerConfig, keys: ServerKeys, clock: Callable[[], float] = time.time) -> FederationServicer:
    """The server's state, its first round open: coordinator (resumed from ``config.state_db``),
    store, reports directory and revocations; any transport (gRPC here, Flower) drives it."""
    require_dp_schedule(config.dp, config.schedule.standardise)
    if config.reports_dir is not None:  # lets `fedstyle audit <reports_dir>` verify every artist's reports
        register_roster_keys(config.reports_dir, {a: keys.identity_public_keys[a] for a in keys.artists})
    store = StateStore(config.state_db)
    coordinator = restore_coordinator(config, keys, store)
    coordinator.start(clock())
    revocations = None if config.crl is None else auth.Revocations(config.crl, keys.ca_certificate, clock=clock)
    return FederationServicer(
        config=config, keys=keys, coordinator=coordinator, store=store, clock=clock, revocations=revocations
    )


def require_every_address_free(listen: str) -> None:
    """:class:`ConfigError` unless every address ``listen``'s host resolves to (``localhost``: ``::1`` and
    ``127.0.0.1``) is free at its port: gRPC starts when only some of them bind, so a second server on
    ``localhost:P`` beside one on ``127.0.0.1:P`` took the IPv6 half of the artists' connections (a
    helper's red-team review, 2026-12-02).  Port 0 (any free port) is gRPC's to choose."""
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    names = [host.strip("[]")] + (["127.0.0.1", "::1"] if host == "localhost" else [])  # as gRPC resolves it
    addresses = []
    for name in names:
        try:
            addresses += socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            if name == names[0]:
                raise ConfigError(f"server.listen: cannot resolve {listen}: {exc}") from None
    seen: set[object] = set()
    for family, kind, proto, _, address in addresses:
        if address in seen:
            continue
        seen.add(address)
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no conflict
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ConfigError(f"server.listen: cannot bind {listen}: {address[0]} port {port}: {exc}") from None


def start_server(config: ServerConfig, keys: ServerKeys, clock: Callable[[], float] = time.time) -> RunningServer:
    """Start serving on ``config.listen`` (port 0 picks a free one) with mutual TLS; returns at once."""
    servicer = new_servicer(config, keys, clock)
    coordinator = servicer.coordinator
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # gRPC sets SO_REUSEPORT on Linux by default: a second server on a port in use started and the
        # kernel split the artists' connections between the two (one artist joined the stray run)
        ("grpc.so_reuseport", 0),
    ]
    limits = CallLimits(config.max_calls_per_identity, config.max_buyer_calls)
    gate = CallGate(ConcurrencyLimiter(limits), servicer.identify, servicer.admit)
    workers = futures.ThreadPoolExecutor(limits.workers(len(coordinator.roster)), thread_name_prefix="grpc-worker")
    server = grpc.server(workers, options=options, interceptors=[servicer.meter, gate])  # metered: what the gate let in
    pb_grpc.add_FederationServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    require_every_address_free(config.listen)
    try:  # grpcio raises RuntimeError ("Failed to bind") where older versions returned 0
        port = server.add_secure_port(config.listen, auth.server_credentials(keys))
    except RuntimeError as exc:
        raise ConfigError(f"server.listen: cannot bind {config.listen}: {exc}") from None
    if port == 0:
        raise ConfigError(f"server.listen: cannot bind {config.listen}")
    server.start()
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = threading.Event()

    def ticker() -> None:
        while not stop.wait(TICK_SECONDS):
            servicer.tick()

    threading.Thread(target=ticker, daemon=True, name="round-ticker").start()
    return RunningServer(server, port, servicer, health_servicer, stop, gate)
