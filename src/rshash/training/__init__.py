"""Training: fine-tune the backbone tail, then train the hashing head (three phases)."""
