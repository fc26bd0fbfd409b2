//! Flotilla's end-to-end tests: ONE test binary (each extra one would link the whole
//! server again), a module per area. Every test starts the real `flotilla` binary on
//! loopback with a fresh data directory and talks to it over HTTPS like a client would.

mod agent;
mod bad_input;
mod cli;
mod crud;
mod durability;
mod exec;
mod ingress;
mod kubectl;
mod limits;
mod metrics;
mod pods;
mod python_client;
mod sandbox;
mod services;
mod support;
mod top;
mod watch;
mod workloads;
