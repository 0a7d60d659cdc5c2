//! One integration-test binary (one link, one process): real upstreams, the real proxy, real
//! HTTP on 127.0.0.1 ephemeral ports.

mod access_log;
mod admin;
mod architecture;
mod bodies;
mod bodies_in;
mod cli;
mod cohorts;
mod dashboard;
mod direct;
mod docs;
mod events;
mod faults;
mod fleet;
mod forced;
mod forwarding;
mod grpc;
mod h1;
mod hostile;
mod latch;
mod lifecycle;
mod notify;
mod operator;
mod protocols;
mod rollback;
mod rollout;
mod shared_stall;
mod streaming;
mod support;
mod tls;
