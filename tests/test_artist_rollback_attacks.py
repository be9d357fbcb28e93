"""One artist answering twice in one round -- a rolled-back ``state_dir``, or two live processes of
one artist on one ``state_dir`` -- let a lying server read ANOTHER artist's vector (red-team review,
2026-12-02; each attack test failed before the fix).

The rule the artists rely on (``transport/artist/masking.py``, ``secure/ckks/decryption.py``): an artist
that answered round ``r``'s unmasking request joins no other masking session of ``r``; a CKKS committee
member commits to one set per round.  Each artist keeps that memory in its ``state_dir``
(``masking-journal.sqlite``, ``ckks-guard.sqlite``), which a plain restart keeps (tested elsewhere).  Here:

* backup restore: ``state_dir`` is restored from a copy taken after the round's contribution but before
  the answer (the reports folder, kept outside ``state_dir`` as the docs advise, is not rolled back);
* two processes: the operator started ``fedstyle client`` twice on one config (nothing locked the
  gRPC artist's ``state_dir``; now :func:`one_artist_process` refuses the second, tested last); each
  process checked the journal when it advertised, long before it answered, and now checks it again
  when it answers.

Roster artist_a (victim V), artist_b (B, the one that answers twice), artist_c (C).  Secagg, n = 3, t = 2.
Session S1 = {V, B, C}: every one masks its vector; the server asks only V and B to unmask (t = 2) and
decodes x_V + x_B + x_C.  C never answered, so it may join session S2 = {B, C} of the same round; if B
joins and answers too, the server decodes x_B + x_C, and the difference is x_V.

The artists are real: each one's masking client is built by the real runner from its ClientConfig
(``ArtistRunner._prepare``, as ``fedstyle client`` does per phase); real keys, journals and crypto.  The
server is the real session state machine (:class:`MaskingRound`) run by the (lying) test.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from fedstyle_secure.errors import ConfigError, TransportError
from fedstyle_secure.federation.client import StyleClient
from fedstyle_secure.federation.masking_rounds import MaskingRound
from fedstyle_secure.federation.masking_session import MaskingParams, session_id
from fedstyle_secure.federation.packing import Layout, pack
from fedstyle_secure.secure.ckks.decryption import COMMITTEE_SIZE, Attempt, decryption_committee
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_server_keys
from fedstyle_secure.secure.masking.summation import DEFAULT_THRESHOLD
from fedstyle_secure.transport.artist.ckks import CkksClient, SentContribution
from fedstyle_secure.transport.artist.runner import ArtistRunner, run_artist
from fedstyle_secure.transport.artist.state import identity_lock_name, one_artist_process, witness_folder
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.wire import pb
from tests.fakes import fake_portfolio
from tests.test_transport_masking_restarts import RelayedSession, _plan

ARTISTS = ("artist_a", "artist_b", "artist_c")
VICTIM, TWICE, OTHER = ARTISTS
ROUND = 1
VALUE_RANGE = (-4.0, 4.0)
VALUES = {VICTIM: 1.5, TWICE: 2.0, OTHER: -0.75}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    return write_fresh_keys(tmp_path_factory.mktemp("keys") / "set", ARTISTS)


def _vector(value: float) -> tuple[np.ndarray, Layout]:
    return pack({"update": np.full(6, value)})


LAYOUT = _vector(0.0)[1]


def _process(keys: Path, tmp: Path, artist: str) -> ArtistRunner:
    """A fresh ``fedstyle client`` process of ``artist``: its state_dir, and its reports_dir kept apart
    from it (as docs/transport.md advises for rollback detection).  Its model is a stand-in: the packed
    contribution is fixed (a DP artist resends its stored one after a restart, so the same vector)."""
    config = ClientConfig(
        keys=keys, data=tmp, artist=artist, state_dir=tmp / "state" / artist, reports_dir=tmp / "reports" / artist
    )
    runner = ArtistRunner(config, load_artist_keys(keys, artist), client=cast(StyleClient, object()))
    vector = _vector(VALUES[artist])
    runner._packed = lambda session, plan: vector  # type: ignore[method-assign]  # the model is not under test
    return runner


class Server:
    """One masking session of the lying server: the real server state machine, phases driven by the test."""

    def __init__(self, keys: Path, tag: int, participants: tuple[str, ...]) -> None:
        self.session, self.participants = session_id(ROUND, tag), participants
        params = MaskingParams(self.session, DEFAULT_THRESHOLD, 0)
        publics = load_server_keys(keys).identity_public_keys
        self.round = MaskingRound("secagg", params, participants, VALUE_RANGE, publics, LAYOUT)

    def phase(self, phase: str, parties: dict[str, ArtistRunner], close: bool = True) -> set[str]:
        """``parties`` act on ``phase`` through the runner's real per-phase code; who uploaded."""
        answered = set()
        for artist, runner in parties.items():
            relayed = RelayedSession(artist, partial(self.round.download, artist))  # advertise fetches nothing
            plan = _plan(self.session, phase, participants=self.participants)
            runner._prepare(relayed, plan)(relayed, plan)  # type: ignore[arg-type]  # fake session (two calls)
            if relayed.uploaded is not None:
                self.round.receive(artist, phase, relayed.uploaded, LAYOUT if phase == "advertise" else None)
                answered.add(artist)
        if close and phase != "unmask":
            self.round.close(phase)
        return answered

    def sum(self) -> np.ndarray:
        return self.round.finish().total


def _first_session(keys: Path, parties: dict[str, ArtistRunner], before_unmask: Callable[[], None]) -> np.ndarray:
    """S1 = {V, B, C} up to the survivor set; ``before_unmask`` runs; then only V and B are asked to
    unmask (t = 2): the decoded x_V + x_B + x_C (the protocol's honest output)."""
    s1 = Server(keys, 0x1111, ARTISTS)
    for phase in ("advertise", "share", "masked_input", "consistency"):
        assert s1.phase(phase, parties) == set(ARTISTS)
    before_unmask()
    assert s1.phase("unmask", {a: parties[a] for a in (VICTIM, TWICE)}) == {VICTIM, TWICE}
    return s1.sum()


def _second_session(keys: Path, parties: dict[str, ArtistRunner]) -> np.ndarray | None:
    """S2 = {B, C} of the same round: x_B + x_C if both answer every phase, else None."""
    s2 = Server(keys, 0x2222, (TWICE, OTHER))
    for phase in ("advertise", "share", "masked_input", "consistency", "unmask"):
        if s2.phase(phase, parties, close=False) != {TWICE, OTHER}:
            return None
        if phase != "unmask":
            s2.round.close(phase)
    return s2.sum()


def _victim_read(total1: np.ndarray, total2: np.ndarray | None) -> bool:
    return total2 is not None and np.allclose(total1 - total2, VALUES[VICTIM], atol=1e-4)


def test_control_plain_restart_keeps_the_victim_safe(keys, tmp_path):
    """Control: B's process restarts normally after answering; its journal keeps it out of S2."""
    parties = {a: _process(keys, tmp_path, a) for a in ARTISTS}
    total1 = _first_session(keys, parties, lambda: None)
    np.testing.assert_allclose(total1, sum(VALUES.values()), atol=1e-4)
    restarted = {TWICE: _process(keys, tmp_path, TWICE), OTHER: parties[OTHER]}
    assert _second_session(keys, restarted) is None


def test_a_state_dir_restored_from_a_backup_does_not_answer_a_round_twice(keys, tmp_path, caplog):
    """B's operator restores state_dir from a backup taken after B signed S1's survivor set (its round
    contribution long charged) but before B answered S1's unmasking request.  Nothing in state_dir says
    B answered round 1, so the restored B joins S2 with the same vector and answers it: the server reads
    x_V = S1 - S2.  With the reports folder outside state_dir (not rolled back) that must not happen."""
    parties = {a: _process(keys, tmp_path, a) for a in ARTISTS}
    state, backup = tmp_path / "state" / TWICE, tmp_path / "backup"
    total1 = _first_session(keys, parties, lambda: shutil.copytree(state, backup))
    np.testing.assert_allclose(total1, sum(VALUES.values()), atol=1e-4)
    shutil.rmtree(state)
    shutil.copytree(backup, state)  # the restore
    restored = {TWICE: _process(keys, tmp_path, TWICE), OTHER: parties[OTHER]}
    with caplog.at_level("WARNING"):
        total2 = _second_session(keys, restored)
    assert not _victim_read(total1, total2), f"server read the victim's vector: {total1 - total2}"
    assert total2 is None and "I already answered an unmasking request of this round" in caplog.text


def test_two_live_processes_of_one_artist_do_not_answer_a_round_twice(keys, tmp_path, caplog):
    """``fedstyle client`` started twice on one config (the old process still alive after a "restart";
    nothing locks the gRPC artist's state_dir).  The second process advertises in S2 while the first is
    still in S1 before its answer (the journal is consulted only at advertise); then each answers the
    unmasking request of its own session: the server reads x_V = S1 - S2."""
    parties = {a: _process(keys, tmp_path, a) for a in ARTISTS}
    second = {TWICE: _process(keys, tmp_path, TWICE), OTHER: parties[OTHER]}
    s2 = Server(keys, 0x2222, (TWICE, OTHER))

    def advertise_in_s2() -> None:  # C and B's second process advertise before B's first one answers S1
        assert s2.phase("advertise", second) == {TWICE, OTHER}

    total1 = _first_session(keys, parties, advertise_in_s2)
    np.testing.assert_allclose(total1, sum(VALUES.values()), atol=1e-4)
    total2 = None
    with caplog.at_level("WARNING"):
        for phase in ("share", "masked_input", "consistency", "unmask"):
            if s2.phase(phase, second, close=False) != {TWICE, OTHER}:
                break
            if phase != "unmask":
                s2.round.close(phase)
        else:
            total2 = s2.sum()
    assert not _victim_read(total1, total2), f"server read the victim's vector: {total1 - total2}"
    assert total2 is None and "answered the unmasking request of another masking session" in caplog.text


# --------------------------------------------------------------------------- CKKS: one committee member rolled back


@dataclasses.dataclass
class CkksServer:
    """The lying CKKS server's decrypt phase for one listed set: what ArtistSession.decrypt calls."""

    listed: dict[str, tuple[SentContribution, bytes]]  # artist -> (its ciphertext, its signature)
    commits: dict[str, tuple[bytes, bytes]] = dataclasses.field(default_factory=dict)

    def for_member(self, artist: str) -> CkksServer.Member:
        return CkksServer.Member(self, artist)

    @dataclasses.dataclass
    class Member:
        server: CkksServer
        artist_id: str

        def contribution_set(self, round_id: int) -> pb.ContributionSet:
            return pb.ContributionSet(
                round_id=ROUND,
                attempt=0,
                contributions=[
                    pb.SignedContribution(artist_id=a, sha256=s.digest, signature=sig, min_quorum=2)
                    for a, (s, sig) in sorted(self.server.listed.items())
                ],
            )

        def contribution(self, round_id: int, artist: str, max_bytes: int = 0) -> bytes:
            return self.server.listed[artist][0].payload

        def commit_decryption(self, round_id, attempt, digest, signature, wait_seconds: float = 0.0):
            self.server.commits[self.artist_id] = (digest, signature)
            return pb.DecryptionCommits(
                round_id=ROUND,
                attempt=0,
                commits=[
                    pb.SignedCommit(artist_id=a, set_digest=d, signature=s) for a, (d, s) in self.server.commits.items()
                ],
            )

    def decrypt(self, members: dict[str, CkksClient]) -> np.ndarray | None:
        """Every member decrypts concurrently; the released sum if one of them released it."""
        plan = pb.RoundPlan(
            round_id=ROUND,
            attempt=0,
            phase="decrypt",
            secure_mode="ckks",
            quorum=2,
            committee_size=COMMITTEE_SIZE,
            decryptors=list(members),
            phase_deadline_unix=time.time() + 8,
        )
        out: dict[str, bytes] = {}

        def one(artist: str, client: CkksClient) -> None:
            try:
                out[artist] = client.decrypt(self.for_member(artist), plan)  # type: ignore[arg-type]
            except Exception as exc:  # a refusal: nothing released
                client.last_refusal = str(exc)

        threads = [threading.Thread(target=one, args=item) for item in members.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return None if not out else np.frombuffer(next(iter(out.values())), dtype=np.float64)


def _ckks_artist(keys: Path, tmp: Path, artist: str) -> tuple[CkksClient, Callable[[], tuple[SentContribution, bytes]]]:
    """A fresh process's CKKS client, built by the runner from its config, and how it contributes to
    attempt 0 (a DP artist after a restart re-encrypts its stored vector: the same plaintext)."""
    runner = _process(keys, tmp, artist)
    client = runner._ckks()
    plan = pb.RoundPlan(
        round_id=ROUND, attempt=0, phase="contribute", secure_mode="ckks", committee_size=COMMITTEE_SIZE
    )

    def contribute() -> tuple[SentContribution, bytes]:
        sent = client.contribution(ROUND, lambda: _vector(VALUES[artist]))
        return sent, client.signature(plan)

    return client, contribute


def _ckks_cast(keys: Path, tmp: Path) -> tuple[dict, dict, tuple[str, str, str]]:
    """Every artist's fresh CKKS client and contribution, and (X, Y, Z): attempt 0's committee {X, Y}
    and the artist Z outside it."""
    clients, contribute = {}, {}
    for a in ARTISTS:
        clients[a], contribute[a] = _ckks_artist(keys, tmp, a)
    at = Attempt(ROUND, 0, clients[VICTIM].keys.ckks.fingerprint, COMMITTEE_SIZE)
    x, y = decryption_committee(at, ARTISTS)
    return clients, contribute, (x, y, next(a for a in ARTISTS if a not in (x, y)))


@pytest.mark.parametrize("restore", [False, True], ids=["plain-restart", "backup-restore"])
def test_a_ckks_committee_member_commits_to_one_set_per_round_even_after_a_restore(keys, tmp_path, restore):
    """Attempt 0, set S1 = {X, Y, Z}, committee {X, Y}: the server gets x_X + x_Y + x_Z.  X restarts and
    re-contributes; the server lists S2 = {X, Z} (committee {X, Z}; Z never committed).  X's guard says
    it committed to S1 in this round -- unless its state_dir was restored from a backup taken after it
    contributed and before it committed: then X and Z decrypt S2 and the server reads x_Y = S1 - S2."""
    clients, contribute, (x, y, z) = _ckks_cast(keys, tmp_path)
    listed = {a: contribute[a]() for a in ARTISTS}
    state, backup = tmp_path / "state" / x, tmp_path / "backup"
    shutil.copytree(state, backup)  # X's backup: after its contribution, before its commitment
    total1 = CkksServer(listed).decrypt({x: clients[x], y: clients[y]})
    assert total1 is not None
    np.testing.assert_allclose(total1, sum(VALUES.values()), atol=1e-4)
    if restore:
        shutil.rmtree(state)
        shutil.copytree(backup, state)
    clients[x], contribute[x] = _ckks_artist(keys, tmp_path, x)  # X's new process
    total2 = CkksServer({x: contribute[x](), z: listed[z]}).decrypt({x: clients[x], z: clients[z]})
    leaked = total2 is not None and np.allclose(total1 - total2, VALUES[y], atol=1e-4)
    assert not leaked, f"server read {y}'s vector: {total1 - total2}"
    assert total2 is None and "already committed to decrypting another set" in (clients[x].last_refusal or "")


def test_a_second_artist_process_on_one_state_dir_is_refused_before_it_connects(keys, tmp_path):
    """``fedstyle client`` started twice on one config: the second process stops at once, naming the
    state folder, while the first holds it (the server address is unroutable: it never connects)."""
    state = tmp_path / "state"
    config = ClientConfig(
        keys=keys,
        data=fake_portfolio(tmp_path),
        artist=VICTIM,
        state_dir=state,
        server="127.0.0.1:9",
        give_up_seconds=1,
    )
    artist_keys = load_artist_keys(keys, VICTIM)
    with one_artist_process(state, wait=False):  # the first process
        started = time.monotonic()
        with pytest.raises(ConfigError, match=f"another artist process is using {state}"):
            run_artist(config, artist_keys)
        assert time.monotonic() - started < 5
    with one_artist_process(state, wait=False):  # released with the first process
        pass


# ---------------------------------------------------- a second process beside a running one (restored state_dir)
# (red-team review of the fixes above, 2026-12-02: the lock file lived in the folder a restore replaces,
# and the CKKS guard was read once and overwritten at save)


def test_two_live_ckks_processes_of_one_artist_commit_to_one_set_per_attempt(keys, tmp_path):
    """X's ``fedstyle client`` (P1) is running; its operator restores X's state_dir from a backup (or
    deletes ``artist.lock``, taking it for stale) and starts ``fedstyle client`` again (P2).  The
    restored folder's ``artist.lock`` is another file, so P2's lock is not refused: two live processes
    on one state_dir.  The masking path survives this (``MaskingJournal.claim`` re-checks the shared
    journal when it answers); the CKKS guard is read once, when the client is built, and ``save``
    overwrites whatever another process stored.  Attempt 0: P1 and P2 both contribute (P2's guard is
    loaded before P1 commits); the server lists S1 = {X(P1), Y, Z} to P1 and Y (committee {X, Y}) and
    S2 = {X(P2), Z} to P2 and Z (committee {X, Z}; Z never committed): S1 - S2 = x_Y."""
    state = tmp_path / "state"
    clients, contribute, (x, y, z) = _ckks_cast(keys, tmp_path)
    with one_artist_process(state / x, wait=False):  # P1 holds X's lock for its lifetime
        shutil.copytree(state / x, tmp_path / "backup")
        listed = {a: contribute[a]() for a in ARTISTS}  # the contribute phase (P1 for X)
        shutil.rmtree(state / x)
        shutil.copytree(tmp_path / "backup", state / x)  # the restore, P1 still running
        with one_artist_process(state / x, wait=False):  # P2 is not refused: the lock file is a new one
            p2, p2_contribute = _ckks_artist(keys, tmp_path, x)
            second = p2_contribute()  # P2 contributes to attempt 0 too (before P1 committed)
            total1 = CkksServer(listed).decrypt({x: clients[x], y: clients[y]})
            assert total1 is not None
            np.testing.assert_allclose(total1, sum(VALUES.values()), atol=1e-4)
            total2 = CkksServer({x: second, z: listed[z]}).decrypt({x: p2, z: clients[z]})
    leaked = total2 is not None and np.allclose(total1 - total2, VALUES[y], atol=1e-4)
    assert not leaked, f"server read {y}'s vector: {total1 - total2}"
    assert total2 is None and "another process" in (p2.last_refusal or "")


def test_a_state_dir_restored_while_its_artist_runs_does_not_let_a_second_one_start(tmp_path):
    """P1 holds ``<state_dir>/artist.lock`` (as ``fedstyle client`` does for its lifetime and a Flower
    ClientApp per message).  The operator restores the state_dir from a backup while P1 runs: the
    restored folder's lock file is a new file, so nothing refused P2 -- two live processes of one
    artist, each with its own in-memory guards and DP ledger.  With ``reports_dir`` outside state_dir
    (not restored) the lock held there refuses P2.  (``fedstyle client`` is also refused by its
    identity, the test below; a Flower ClientApp is not, and a state_dir may be on a shared disk.)"""
    state, witness = tmp_path / "state", witness_folder(tmp_path / "reports", VICTIM)
    with one_artist_process(state, wait=False, witness_dir=witness):  # P1
        shutil.copytree(state, tmp_path / "backup")
        shutil.rmtree(state)
        shutil.copytree(tmp_path / "backup", state)  # the restore, P1 still running
        p2 = one_artist_process(state, wait=False, witness_dir=witness)
        with pytest.raises(ConfigError, match=f"another artist process is using {witness}"), p2:
            pass


def test_a_second_client_of_one_artist_without_a_state_dir_is_refused(keys, tmp_path):
    """An artist without DP need not keep a ``state_dir``, and then keeps no journal: ``fedstyle client``
    started twice on one config was two processes each free to answer its own masking session of a
    round (the two-process attack above, with nothing on disk to share).  The second one now stops at
    once (an abstract socket named after the artist's identity key), and another artist is not held up."""
    config = ClientConfig(
        keys=keys,
        data=fake_portfolio(tmp_path),
        artist=VICTIM,
        server="127.0.0.1:9",
        give_up_seconds=60,
        reconnect_max_seconds=0.2,
    )
    victim = load_artist_keys(keys, VICTIM)
    held = "@" + identity_lock_name(victim.identity_key.public_key().public_bytes_raw())
    stop = threading.Event()
    first = threading.Thread(target=run_artist, args=(config, victim, stop), daemon=True)
    first.start()  # P1: retries the (unroutable) server while it holds the name
    try:
        _wait_until_bound(held)  # read from /proc/net/unix: P2 must not race P1 for the name
        with pytest.raises(ConfigError, match=f"another fedstyle client of {VICTIM} is running"):
            run_artist(dataclasses.replace(config, give_up_seconds=0.5), victim)  # P2
        other = dataclasses.replace(config, artist=OTHER, give_up_seconds=0.5)
        with pytest.raises(TransportError, match="unreachable"):  # another artist: not refused, gives up
            run_artist(other, load_artist_keys(keys, OTHER))
    finally:
        stop.set()
        first.join(30)
    assert not first.is_alive()
    with pytest.raises(TransportError, match="unreachable"):  # the name went with P1
        run_artist(dataclasses.replace(config, give_up_seconds=0.5), victim)


def _wait_until_bound(name: str, seconds: float = 60.0) -> None:
    """Return once a Unix socket named ``name`` (``@...``: abstract) is bound on this machine."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open("/proc/net/unix") as table:
            if any(line.split()[-1] == name for line in table if len(line.split()) > 7):
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing bound {name} within {seconds:g} s")
