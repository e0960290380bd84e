//! Two hosts in one process are independent: each owns its compiled-in
//! providers' settings and egress grant, its bounds on validations in
//! flight and its counts. (These were process-wide once: the last catalog
//! built decided the built-ins' settings and grant for every host, and one
//! host's calls in flight counted against another's bound.)

use std::sync::{Arc, Condvar, Mutex};

use connhost::plugin_api::prelude::*;
use connhost::{BusyBound, Catalog, Connhost, CredentialFields, HostConfig, Verdict};

use crate::support::vendor::Vendor;
use crate::support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn api_key(key: &str) -> CredentialFields {
    CredentialFields::from([("api_key".to_owned(), key.to_owned())])
}

#[test]
fn each_host_has_its_own_builtin_settings_egress_grant_and_refusal_counts() {
    let (vendor_a, vendor_b) = (Vendor::start(), Vendor::start());
    let mut a = HostConfig::default();
    set(&mut a, "builtin", "openai_base_url", vendor_a.url());
    grant(&mut a, "builtin", vendor_a.url());
    let mut b = HostConfig::default();
    set(&mut b, "builtin", "openai_base_url", vendor_b.url());
    let host_a = Connhost::start(&a);
    // Built after A: it must change nothing of A's.
    let host_b = Connhost::start(&b);
    let rt = runtime();

    let verdict = rt
        .block_on(host_a.validate("openai", api_key("good-key")))
        .unwrap();
    assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
    assert_eq!((vendor_a.requests(), vendor_b.requests()), (1, 0));

    let verdict = rt
        .block_on(host_b.validate("openai", api_key("good-key")))
        .unwrap();
    let Verdict::Inconclusive { message } = &verdict else {
        panic!("B has no grant for its vendor: {verdict:?}");
    };
    assert!(
        message.contains(&format!(
            "egress refused: plugin \"builtin\" may not call {}",
            loopback_grant(vendor_b.url())
        )),
        "{message}"
    );
    assert_eq!((vendor_a.requests(), vendor_b.requests()), (1, 0));

    // A is still A: its settings and grant were not replaced by B's.
    let verdict = rt
        .block_on(host_a.validate("openai", api_key("good-key")))
        .unwrap();
    assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
    assert_eq!((vendor_a.requests(), vendor_b.requests()), (2, 0));

    // Each counts its own refusals.
    assert_eq!(host_a.egress_refusals(), []);
    assert_eq!(
        host_b.egress_refusals(),
        [("builtin".to_owned(), "not_granted", 1)]
    );
}

/// A provider that holds `hold` until the test opens its gate, and
/// accepts anything else at once.
struct Holder(Arc<HoldGate>);

#[derive(Default)]
struct HoldGate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl HoldGate {
    fn wait_for_held(&self, count: usize) {
        let state = self.state.lock().unwrap();
        drop(
            self.changed
                .wait_while(state, |(held, _)| *held < count)
                .unwrap(),
        );
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

#[async_trait]
impl ConnectionProvider for Holder {
    fn provider_id(&self) -> &str {
        "holder"
    }
    fn display_name(&self) -> &str {
        "Holder"
    }
    fn description(&self) -> &str {
        "Holds a validation until the test lets it go."
    }
    fn icon(&self) -> &str {
        "key"
    }
    fn connection_type(&self) -> ConnectionType {
        ConnectionType::ApiKey
    }
    fn form_schema(&self) -> Option<CredentialFormSchema> {
        Some(CredentialFormSchema::api_key("Any key."))
    }
    async fn validate(&self, credential: &str) -> ValidationResult {
        if credential == "hold" {
            // Its own thread (the host runs it on one): blocking is the
            // point.
            let mut state = self.0.state.lock().unwrap();
            state.0 += 1;
            self.0.changed.notify_all();
            drop(
                self.0
                    .changed
                    .wait_while(state, |(_, open)| !*open)
                    .unwrap(),
            );
        }
        Ok(ConnectionValidation::valid())
    }
}

#[test]
fn each_host_bounds_its_own_calls_in_flight() {
    let gate = Arc::new(HoldGate::default());
    let config = HostConfig::default()
        .with_max_in_flight(1)
        .with_builtins(false);
    let serve = |gate: &Arc<HoldGate>| {
        Connhost::from_catalog(&Catalog::new(&config).with_provider(Holder(gate.clone())))
    };
    let (host_a, host_b) = (serve(&gate), serve(&gate));
    let rt = runtime();

    // A's one slot is taken by a call that holds.
    let held = {
        let host_a = host_a.clone();
        rt.spawn(async move { host_a.validate("holder", api_key("hold")).await })
    };
    gate.wait_for_held(1);
    // B, serving the same compiled-in code, has a bound of its own.
    let verdict = rt
        .block_on(host_b.validate("holder", api_key("fast")))
        .unwrap();
    assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
    // A's own bound is reached.
    let verdict = rt
        .block_on(host_a.validate("holder", api_key("fast")))
        .unwrap();
    assert!(
        matches!(
            verdict,
            Verdict::Busy {
                limit: 1,
                bound: BusyBound::Provider
            }
        ),
        "{verdict:?}"
    );
    gate.open();
    let verdict = rt.block_on(held).unwrap().unwrap();
    assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
}
