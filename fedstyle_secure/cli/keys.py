"""``fedstyle keys``: create a key set, cut per-machine bundles, validate a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.secure.ckks.primitives import CkksParams
from fedstyle_secure.secure.keys import keystore, pki


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="create and distribute key material (TLS certificates, identity keys, CKKS contexts)",
        description="Key material for a deployment: a private CA, the server's and each artist's TLS "
        "certificates (mutual TLS), an Ed25519 identity key per artist, and the CKKS contexts "
        "(secret one for artists, key-less public one for the server).",
    )
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    actions.required = True
    _register_init(actions)
    _register_bundle(actions)
    _register_check(actions)
    _register_revoke(actions)


def _register_init(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "init",
        help=f"create a complete key set (plus {keystore.README} saying which file goes where)",
        description="Create a key set in --out (secret files mode 0600). Then give each machine its own "
        "bundle with `fedstyle keys bundle`; the CA key stays with the administrator.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder, new or empty")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--artists", metavar="NAMES", help="comma-separated artist ids, e.g. alice,bob")
    who.add_argument("--count", type=int, metavar="N", help="N artists named artist_00 .. artist_<N-1>")
    p.add_argument("--buyers", metavar="NAMES", default="", help="comma-separated buyer ids (TLS client certificates)")
    p.add_argument(
        "--server-host",
        action="append",
        metavar="H",
        help="host name or IP address the server certificate is valid for; repeatable "
        f"(default {' '.join(keystore.DEFAULT_SERVER_HOSTS)})",
    )
    p.add_argument(
        "--days",
        type=int,
        default=pki.LEAF_VALIDITY_DAYS,
        metavar="D",
        help="certificate validity in days (default %(default)s)",
    )
    defaults = CkksParams()
    p.add_argument(
        "--ckks-degree",
        type=int,
        default=defaults.poly_modulus_degree,
        metavar="N",
        help="CKKS ring degree (default %(default)s)",
    )
    p.add_argument(
        "--ckks-primes",
        default=",".join(map(str, defaults.coeff_mod_bit_sizes)),
        metavar="BITS",
        help="CKKS modulus chain in bits, comma-separated (default %(default)s)",
    )
    p.add_argument(
        "--ckks-scale-bits",
        type=int,
        default=defaults.scale_bits,
        metavar="B",
        help="CKKS scale 2**B (default %(default)s)",
    )
    p.set_defaults(func=run_init)


def _register_bundle(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "bundle",
        help="copy exactly what one machine needs into a folder",
        description="Cut one machine's bundle out of a key set: an artist gets its own TLS and identity keys, "
        "the CKKS secret context and every artist's identity public key; the server gets its TLS keys, the "
        "key-less CKKS context and the identity public keys. No bundle contains the CA key.",
    )
    p.add_argument("--keys", type=Path, required=True, metavar="DIR", help="key set made by `fedstyle keys init`")
    _add_machine_arguments(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="bundle folder to create")
    p.set_defaults(func=run_bundle)


def _register_check(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "check",
        help="validate a bundle (integrity, certificate chain, expiry, key match)",
        description="Load a bundle exactly as the server or an artist will, and report any problem.",
    )
    p.add_argument("--keys", type=Path, required=True, metavar="DIR", help="bundle or key set folder")
    _add_machine_arguments(p, required=False)
    p.set_defaults(func=run_check)


def _register_revoke(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "revoke",
        help="revoke an artist's or buyer's TLS certificate (CA-signed CRL for the server)",
        description="Add the certificate to a certificate revocation list signed by the CA (needs the full key "
        "set). Copy the CRL to the server and point `server.crl` at it; the server re-reads it when it changes "
        "and refuses revoked certificates at their next call.",
    )
    p.add_argument("--keys", type=Path, required=True, metavar="DIR", help="full key set made by `fedstyle keys init`")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--artist", metavar="NAME", help="the artist whose certificate is revoked")
    who.add_argument("--buyer", metavar="NAME", help="the buyer whose certificate is revoked")
    p.add_argument("--crl", type=Path, metavar="FILE", help="CRL to create or extend (default KEYS/crl.pem)")
    p.set_defaults(func=run_revoke)


def _add_machine_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    machine = parser.add_mutually_exclusive_group(required=required)
    machine.add_argument("--artist", metavar="NAME", help="an artist's machine")
    machine.add_argument("--server", action="store_true", help="the server's machine")
    machine.add_argument("--buyer", metavar="NAME", help="a buyer's machine")
    machine.add_argument(
        "--auditor",
        action="store_true",
        help="an auditor: every artist's identity public key, no secret (`fedstyle audit --keys`)",
    )


def _split_ids(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _artist_ids(args: argparse.Namespace) -> list[str]:
    if args.count is not None:
        if not 1 <= args.count <= keystore.MAX_KEYSET_MEMBERS:
            raise ConfigError(f"--count must be in 1..{keystore.MAX_KEYSET_MEMBERS}, got {args.count}")
        return [f"artist_{i:02d}" for i in range(args.count)]
    return _split_ids(args.artists)


def run_init(args: argparse.Namespace) -> int:
    try:
        primes = tuple(int(bits) for bits in _split_ids(args.ckks_primes))
    except ValueError as exc:
        raise ConfigError(f"--ckks-primes must be comma-separated bit sizes, got {args.ckks_primes!r}") from exc
    params = CkksParams(
        poly_modulus_degree=args.ckks_degree, coeff_mod_bit_sizes=primes, scale_bits=args.ckks_scale_bits
    )
    files = keystore.generate_key_files(
        _artist_ids(args),
        server_hosts=tuple(args.server_host or keystore.DEFAULT_SERVER_HOSTS),
        buyers=_split_ids(args.buyers),
        ckks_params=params,
        validity_days=args.days,
    )
    keystore.write_key_files(args.out, files)
    print(f"wrote {len(files)} files to {args.out}; see {args.out / keystore.README} for which file goes where")
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    files = keystore.bundle_files(
        args.keys, artist=args.artist, server=args.server, buyer=args.buyer, auditor=args.auditor
    )
    keystore.write_key_files(args.out, files)
    owner = (
        "server"
        if args.server
        else "auditor"
        if args.auditor
        else f"artist {args.artist}"
        if args.artist
        else f"buyer {args.buyer}"
    )
    print(f"wrote the {owner}'s bundle ({len(files)} files) to {args.out}")
    return 0


def _bundle_role(args: argparse.Namespace) -> tuple[str, str | None]:
    """(role, id) to check: the one named on the command line, else the bundle's own (its manifest
    says whose it is); a full key set needs the machine named."""
    if args.server or args.auditor:
        return ("server" if args.server else "auditor"), None
    if args.artist or args.buyer:
        return ("artist", args.artist) if args.artist else ("buyer", args.buyer)
    manifest = keystore.load_key_manifest(args.keys)
    bundle = manifest.get("bundle") or {}
    role, subject = bundle.get("role"), bundle.get("id")
    if role is None:
        raise ConfigError(
            f"{args.keys} is a full key set: name the machine to check with --server, --artist NAME, --buyer NAME "
            "or --auditor"
        )
    # the manifest is not signed: the files on disk must be exactly that role's bundle, or a relabelled
    # bundle (an artist's called an auditor's) would be checked as what it is not
    expected = set(
        keystore.bundle_paths(
            manifest,
            artist=subject if role == "artist" else None,
            server=role == "server",
            buyer=subject if role == "buyer" else None,
            auditor=role == "auditor",
        )
    )
    present = {
        path.relative_to(args.keys).as_posix()
        for path in args.keys.rglob("*")
        if path.is_file() and path.name not in (keystore.MANIFEST, keystore.README)
    }
    if present != expected:
        extra, missing = sorted(present - expected), sorted(expected - present)
        raise ConfigError(
            f"{args.keys}: its manifest names the role {role!r}, but the folder holds {extra or 'nothing more'} "
            f"beyond it and lacks {missing or 'nothing'}; check it with the machine named (--server, --artist, "
            "--buyer or --auditor)"
        )
    return str(role), subject


def run_check(args: argparse.Namespace) -> int:
    role, subject = _bundle_role(args)
    if role == "buyer":
        keystore.load_buyer_tls_pem(args.keys, str(subject))
        print(f"buyer bundle OK: {subject}")
    elif role == "auditor":
        identities = keystore.load_identity_keys(args.keys)
        print(f"auditor bundle OK: identity public keys of {len(identities)} artists")
    elif role == "server":
        server = keystore.load_server_keys(args.keys)
        server.ckks.check_key_material()  # machines parse it on their first CKKS round; a check parses it now
        print(
            f"server bundle OK: {len(server.artists)} artists, certificate valid until "
            f"{server.certificate.not_valid_after_utc:%Y-%m-%d}"
        )
    else:
        artist = keystore.load_artist_keys(args.keys, subject)
        artist.ckks.check_key_material()
        print(
            f"artist bundle OK: {artist.artist_id}, certificate valid until "
            f"{artist.certificate.not_valid_after_utc:%Y-%m-%d}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    role, subject = (pki.Role.ARTIST, args.artist) if args.artist else (pki.Role.BUYER, args.buyer)
    crl = args.crl or args.keys / "crl.pem"
    serials = keystore.revoke(args.keys, role, subject, crl)
    print(f"revoked {role.value} {subject}; {crl} now lists {len(serials)} certificate(s)")
    return 0
