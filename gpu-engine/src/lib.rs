//! cachet-engine library.
