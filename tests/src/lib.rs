//! Conformance scenarios for the amqp-proto core and its adapters, and the scripted-peer kit
//! ([`peer`]) that drives the core in memory under fake time.
//!
//! The kit is public so that users can test their own code against broker behaviour,
//! including misbehaviour, without a socket or a sleep.

#![recursion_limit = "4096"] // `strip_await!` over the longest scenario needs about 2048.

pub mod client;
pub mod cluster;
pub mod conformance;
pub mod node;
pub mod peer;
pub mod proxy;
