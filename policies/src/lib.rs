//! cachet-policies.
