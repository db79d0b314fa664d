"""The signed Merkle log of every public event: the tree store, the signer, its key."""
