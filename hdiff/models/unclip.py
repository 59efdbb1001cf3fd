"""unCLIP (placeholder until written)."""
