"""The package layering (docs/architecture.md): every import goes down the layer order, never up,
so no two packages import each other; pure protocol/algorithm packages import no gRPC or SQLite."""

from __future__ import annotations

import ast
from pathlib import Path

import fedstyle_secure

PACKAGE = Path(fedstyle_secure.__file__).parent
#: Lowest first: a module may import its own package and any package listed before it.
LAYERS: tuple[str, ...] = (
    "errors",
    "files",
    "validation",
    "memory",
    "randomness",
    "data",
    "models",
    "secure",
    "privacy",
    "training",
    "retrieval",
    "federation",
    "transport",
    "flower",  # the optional Flower app (extra `flower`): the only package that may import flwr
    "experiments",
    "cli",
)
#: Pure code: reusable by the simulator and the server alike, so no wire and no database.
PURE: tuple[str, ...] = tuple(layer for layer in LAYERS[: LAYERS.index("transport")] if layer != "memory")
WIRE_MODULES: tuple[str, ...] = ("grpc", "grpc_health", "sqlite3")
#: Optional extras: only their own package imports them, so the base install runs without them.
EXTRA_ONLY: dict[str, str] = {"flwr": "flower"}


def _modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "_generated" not in p.parts]


def _layer_of(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def test_every_module_belongs_to_a_layer() -> None:
    unknown = {str(p.relative_to(PACKAGE)) for p in _modules() if _layer_of(p) not in LAYERS + ("__init__",)}
    assert unknown == set(), f"add these to LAYERS (and docs/architecture.md): {sorted(unknown)}"


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for path in _modules():
        own = _layer_of(path)
        if own == "__init__":
            continue
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[0] != "fedstyle_secure" or len(parts) < 2 or parts[1] not in LAYERS:
                continue
            if LAYERS.index(parts[1]) > LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {module}")
    assert upward == [], "imports against the layer order:\n" + "\n".join(upward)


def test_pure_packages_use_no_wire_or_database() -> None:
    offending = [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for path in _modules()
        if _layer_of(path) in PURE
        for line, module in _imports(path)
        if module.split(".")[0] in WIRE_MODULES
    ]
    assert offending == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import from a lower layer of a higher one is found (fails if the
    AST walk silently missed ``from`` imports)."""
    module = tmp_path / "probe.py"
    module.write_text("from fedstyle_secure.transport.server.servicer import start_server\nimport grpc\n")
    assert (1, "fedstyle_secure.transport.server.servicer") in _imports(module)
    assert (2, "grpc") in _imports(module)


def test_only_the_flower_package_imports_flwr() -> None:
    """The base install stays free of flwr (an optional extra that pins protobuf < 7): no module
    outside ``fedstyle_secure/flower/`` imports it, and nothing below imports that package."""
    offending = [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for path in _modules()
        for line, module in _imports(path)
        if EXTRA_ONLY.get(module.split(".")[0], _layer_of(path)) != _layer_of(path)
        or (module.startswith("fedstyle_secure.flower") and _layer_of(path) != "flower")
    ]
    assert offending == []


def test_the_base_install_runs_without_flwr() -> None:
    """Every module outside the Flower package imports with flwr made unimportable."""
    import subprocess
    import sys

    modules = sorted(
        ".".join(("fedstyle_secure", *p.relative_to(PACKAGE).with_suffix("").parts))
        for p in _modules()
        if _layer_of(p) not in ("flower", "__init__") and p.name != "__main__.py"
    )
    code = "import importlib, sys\nsys.modules['flwr'] = None\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_command_imports_only_its_own_cli_module() -> None:
    """``fedstyle client`` (every artist process) must not pay for the audit's, the sweep's or the
    demo's imports; ``--help`` and unknown commands still get the whole parser."""
    import subprocess
    import sys

    from fedstyle_secure.cli.main import command_named

    assert command_named(["-v", "client", "--config", "c.toml"]) == "client"
    assert command_named(["--help"]) is None and command_named(["clint"]) is None and command_named([]) is None
    code = (
        "import sys\nfrom fedstyle_secure.cli.main import main\n"
        "try:\n    main(['client', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('fedstyle_secure.cli.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout.strip().splitlines()[-1]
    assert loaded == "['fedstyle_secure.cli.client', 'fedstyle_secure.cli.main', 'fedstyle_secure.cli.toml_command']"
