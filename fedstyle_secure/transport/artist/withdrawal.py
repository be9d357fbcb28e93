"""An artist's withdrawal from a run over the wire: signed, kept beside its own reports, sent.

One home for ``Withdraw``: the DP retirement (:meth:`ArtistPrivacy.retire`) and the runner's
declines (a CKKS committee size below the artist's own floor) both go through
:func:`send_withdrawal`, so the server stops waiting for the artist and an audit lists it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedstyle_secure.privacy.report_store import keep_withdrawal
from fedstyle_secure.privacy.reports import canonical_json, sign_report
from fedstyle_secure.privacy.withdrawals import MAX_REASON_CHARS, build_withdrawal
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.transport.wire import new_nonce, pb

WITHDRAW_TIMEOUT_SECONDS = 30.0


def send_withdrawal(
    session: Any,
    keys: ArtistKeys,
    plan: pb.RoundPlan,
    reason: str,
    keep_in: Path | None,
    last_report: tuple[int, int] | None = None,
) -> None:
    """Tell the server this artist stops taking part in the run at ``plan``'s round, with a withdrawal
    signed by its identity key (:mod:`~fedstyle_secure.privacy.withdrawals`) that also signs where its
    reports end (``last_report``: round and mechanisms listed of its last report; None: none); the
    first one is also kept in ``keep_in`` (the artist's own reports folder), if given.  ``session``: an
    :class:`~fedstyle_secure.transport.artist.channel.ArtistSession` or the Flower artist's stand-in."""
    unsigned = build_withdrawal(keys.artist_id, plan.round_id, reason, plan.run_id or None, last_report)
    withdrawal = sign_report(unsigned, keys.identity_key)
    if keep_in is not None:
        keep_withdrawal(keep_in, withdrawal)
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
