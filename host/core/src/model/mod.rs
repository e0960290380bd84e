//! The bottom layer: plain data, with no behaviour beyond its own
//! invariants. Configuration with its defaults, what loading reports,
//! where a provider comes from, what a validation concludes, and what an
//! operator sees of workers, trust and egress. Everything above speaks in
//! these types; nothing here imports from above.

pub(crate) mod config;
pub(crate) mod egress;
pub(crate) mod names;
pub(crate) mod origin;
pub(crate) mod report;
pub(crate) mod trust;
pub(crate) mod verdict;
pub(crate) mod worker_status;
