"""Protection of what the server sums (pure: no gRPC, no files except :mod:`.keys.keystore`).

Subpackages: :mod:`.masking` (pairwise masking, SecAgg / SecAgg+: Shamir, PRG, fixed point,
artist and server state machines, consistency round), :mod:`.ckks` (TenSEAL CKKS primitives,
signed contributions and the decryption committee), :mod:`.keys` (PKI: mutual-TLS and identity
keys, on-disk key sets).  Top level: :mod:`.api` (``SecureSummation``, ``PlainSummation``, the one
interface every protection implements), :mod:`.factory` / :mod:`.select` (build one for a
``--secure`` mode), :mod:`.binary` (length-checked byte encodings shared by the protocols).
"""
