//! cachet gateway library.
