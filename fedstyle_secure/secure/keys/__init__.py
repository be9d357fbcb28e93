"""Keys: :mod:`.pki` (generation and validation, pure) and :mod:`.keystore` (on-disk key sets and bundles)."""
