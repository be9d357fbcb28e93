"""CKKS (TenSEAL): :mod:`.primitives` (parameters, encrypt/add/decrypt, checked loading),
:mod:`.decryption` (signed contributions, the decryption committee), :mod:`.summation` (in-process driver)."""
