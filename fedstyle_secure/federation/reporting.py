"""Signed epsilon reports of a run: one file per artist per round plus a key manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedstyle_secure.privacy.budget import BudgetLedger
from fedstyle_secure.privacy.report_store import register_public_key, write_report
from fedstyle_secure.privacy.reports import build_report, new_run_id, sign_report


class ReportWriter:
    """Writes each artist's signed report after every round into ``reports_dir``.

    ``identity_keys`` maps artist id -> Ed25519 private key (from a key bundle); artists without
    one get a fresh key for this run (the simulator's stand-in for each artist's machine).  Every
    report carries ``run_id`` (default: a fresh one, :func:`new_run_id`).
    """

    def __init__(
        self,
        reports_dir: Path,
        artists: Sequence[str],
        identity_keys: Mapping[str, Ed25519PrivateKey] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.dir = Path(reports_dir)
        self.run_id = new_run_id() if run_id is None else run_id
        self.keys = {a: (identity_keys or {}).get(a) or Ed25519PrivateKey.generate() for a in artists}
        for artist, key in self.keys.items():
            register_public_key(self.dir, artist, key.public_key())

    def write(self, artist: str, ledger: BudgetLedger, round_id: int, *, noise_source: str, final_round: int) -> Path:
        """Sign and store ``artist``'s report after ``round_id`` (see :func:`build_report`)."""
        report = build_report(
            ledger,
            artist_id=artist,
            round_id=round_id,
            noise_source=noise_source,
            final_round=final_round,
            run_id=self.run_id,
        )
        return write_report(self.dir, sign_report(report, self.keys[artist]))
