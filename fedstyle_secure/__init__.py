"""fedstyle-secure: privacy-preserving, style-based artist retrieval.

Architecture (one folder per concern):

- ``data``        image folders, deterministic splits, procedural artworks, public alignment set
- ``models``      frozen style-statistics backbone, trainable projection heads, scratch CNN
- ``training``    pure losses and the local (client-side) training loop
- ``federation``  strategies (server math on sums and counts), clients, in-process simulator
- ``retrieval``   style index, query scoring, retrieval metrics
- ``privacy``     DP-SGD, accountants, budgets, signed epsilon reports, audit
- ``secure``      secure aggregation (CKKS via TenSEAL, pairwise masking / SecAgg+), keys
- ``transport``   protobuf/gRPC server and client processes
- ``cli``         the ``fedstyle`` command line
"""

__version__ = "0.1.0"
