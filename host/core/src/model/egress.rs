//! A plugin's egress as shown: what its providers declare and what its
//! operator granted. The policy that enforces it is `crate::egress`.

/// A plugin's egress as the operator sees it (`connhost plugins --json`,
/// `/v1/plugins`): the hosts its providers declare, and what the
/// operator granted (`null`: no grant, the declarations apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Egress {
    /// The hosts its providers declare.
    pub declared: Vec<String>,
    /// The operator's grant, which replaces the declarations; `null`
    /// when there is none.
    pub granted: Option<Vec<String>>,
}

impl Egress {
    /// The hosts each of `lists` declares, once each, in order.
    pub fn declared_by<'a>(lists: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<String> {
        let mut declared: Vec<String> = Vec::new();
        for host in lists.into_iter().flatten() {
            if !declared.contains(host) {
                declared.push(host.clone());
            }
        }
        declared
    }
}
