//! Helpers for the end-to-end tests: free ports, child processes, scripted upstream.
