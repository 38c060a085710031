//! Conformance scenarios shared by every adapter.
