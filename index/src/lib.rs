//! cachet-index.
