"""The wire: protobuf over gRPC with mutual TLS.  ``artist/`` is the artist process (session,
round runner, its masking / CKKS / privacy sides, owner-only state), ``server/`` the server
process (servicer, admission limits, store, report intake, index publication); shared here:
:mod:`.wire` (generated protobuf, chunking), :mod:`.auth`, :mod:`.config`, :mod:`.codegen`,
:mod:`.loopback` (all parties on one machine), :mod:`.processes`.
"""
