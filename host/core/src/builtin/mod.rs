//! Providers compiled into the host, registered through `inventory` exactly
//! as a third-party crate linked into the host would register its own.

mod openai;
mod simulator;
