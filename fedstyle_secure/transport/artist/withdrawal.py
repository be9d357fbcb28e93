"""An artist's withdrawal from a run over the wire: signed, kept beside its own reports, sent.

One home for ``Withdraw``: the DP retirement (:meth:`ArtistPrivacy.retire`) and the runner's
declines (a CKKS committee size below the artist's own floor) both go through
:func:`send_withdrawal`, so the server stops waiting for the artist and an audit lists it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.privacy.report_store import keep_withdrawal, signed_run_ids, withdrawal_end, withdrew_from
from fedstyle_secure.privacy.reports import canonical_json, sign_report
from fedstyle_secure.privacy.withdrawals import MAX_REASON_CHARS, build_withdrawal
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.transport.wire import new_nonce, pb

WITHDRAW_TIMEOUT_SECONDS = 30.0


def send_withdrawal(session: Any, keys: ArtistKeys, plan: pb.RoundPlan, reason: str, reports_dir: Path | None) -> None:
    """Tell the server this artist stops taking part in the run at ``plan``'s round, with a withdrawal
    signed by its identity key (:mod:`~fedstyle_secure.privacy.withdrawals`) that also signs where its
    reports of the run end: the round and mechanisms listed of the latest one in ``reports_dir`` (the
    artist's own reports folder; None: it keeps none), read from the files, or a count no report
    matches if a charge is not yet in one (:func:`~fedstyle_secure.privacy.report_store.withdrawal_end`).
    The run's first withdrawal is kept there too: the artist never acts in the run again (:func:`withdrew`).
    ``session``: an :class:`~fedstyle_secure.transport.artist.channel.ArtistSession` or the Flower
    artist's stand-in."""
    run_id = plan.run_id or None
    if reports_dir is not None:  # a folder of another run: refused, not mixed (its audit would lose a withdrawal)
        check_reports_folder_of_run(reports_dir, keys.artist_id, run_id)
    last_report = None if reports_dir is None else withdrawal_end(reports_dir, keys.artist_id, run_id)
    unsigned = build_withdrawal(keys.artist_id, plan.round_id, reason, run_id, last_report)
    withdrawal = sign_report(unsigned, keys.identity_key)
    if reports_dir is not None:
        keep_withdrawal(reports_dir, withdrawal)
    session.stub.Withdraw(
        pb.Withdrawal(
            round_id=plan.round_id,
            reason=reason[:MAX_REASON_CHARS],
            nonce=new_nonce(),
            signed_json=canonical_json(withdrawal),
        ),
        metadata=session.metadata,
        timeout=WITHDRAW_TIMEOUT_SECONDS,
    )


def withdrew(reports_dir: Path | None, keys: ArtistKeys, plan: pb.RoundPlan) -> bool:
    """Whether this artist signed a withdrawal from ``plan``'s run (kept in ``reports_dir``).  It then
    acts in the run no more, whatever state it holds: a server deleting the reports it made after a
    withdrawal would otherwise have that withdrawal explain a folder missing part of its epsilon."""
    return reports_dir is not None and withdrew_from(reports_dir, keys.artist_id, plan.run_id or None)


def own_reports_dir(reports_dir: Path | None, state_dir: Path | None) -> Path | None:
    """Where an artist keeps its signed reports and withdrawals: ``client.reports_dir``, else
    ``<state_dir>/reports`` (None: neither is set, a run without DP and without a state folder)."""
    return reports_dir or (None if state_dir is None else state_dir / "reports")


def check_reports_folder_of_run(reports_dir: Path, artist_id: str, run_id: str | None) -> None:
    """Raise :class:`ConfigError` if this artist's reports folder holds reports or a withdrawal signed
    for another run than ``run_id``, the run it starts: a state_dir and a reports folder belong to one
    run.  A folder reused for a new run was refused as a rolled-back state (its charge record is the
    earlier run's), or, with no charge recorded, mixed the runs (its audit then flagged the other run's
    withdrawal).  Checked when a run starts with no state, before anything is drawn or charged, and
    before a withdrawal is kept.  A plan naming no run (``run_id`` None, a server that names none: each
    report writer then signs an id of its own) has nothing to compare with and is not checked."""
    others = signed_run_ids(reports_dir, artist_id) - {run_id}
    if run_id is not None and others:
        raise ConfigError(
            f"client.reports_dir: {reports_dir} holds this artist's records of another run "
            f"({', '.join(sorted(str(r) for r in others))}), not of run {run_id}: a state_dir and a reports "
            "folder belong to one run; give this run a fresh client.reports_dir (or leave it unset: "
            "<state_dir>/reports), or, if this state_dir was restored from a backup, restore that run's"
        )
