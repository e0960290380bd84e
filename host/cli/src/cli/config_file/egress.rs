//! The `[egress]` table: bounds on the HTTP the host performs for each
//! plugin, in process or isolated ([`connhost::HttpLimits`]).

use super::values::{Int, Mebibytes, U32Count};

table! {
    /// The `[egress]` table: [`connhost::HttpLimits`].
    pub(super) struct EgressFile {
        max_body_mb: Mebibytes<1>
            => host.http.max_body_bytes = Int::mebibytes;
        max_concurrent: U32Count
            => host.http.max_concurrent = Int::to_usize;
    }
}
