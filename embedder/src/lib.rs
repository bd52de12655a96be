//! cachet-embedder.
