// Isolated plugins (`isolation = "process"`): each in a sandboxed worker
// process of its own, answering through the same API as in process.

use std::time::Duration;

use connhost::{Connhost, HostConfig, Isolation, Verdict};

use crate::support::vendor::Vendor;
use crate::support::*;

/// The `connhost` binary, which is the worker program too.
pub fn connhost_binary() -> std::path::PathBuf {
    build_artifacts().join(format!("connhost{}", std::env::consts::EXE_SUFFIX))
}

/// A configuration isolating every plugin of `dir`.
pub fn isolated(dir: &PluginDir) -> HostConfig {
    let mut config = HostConfig::with_plugins_dir(dir.path());
    config.isolation = Isolation::Process;
    config.worker.program = Some(connhost_binary());
    config
}

fn validate(host: &Connhost, provider: &str, key: &str) -> Verdict {
    runtime()
        .block_on(host.validate(provider, fields(&[("api_key", key)])))
        .expect("known provider")
}

#[test]
fn an_isolated_plugin_answers_like_an_in_process_one_and_its_http_goes_through_the_host() {
    let dir = PluginDir::with(&["fixture-greeter-v1"]);
    let vendor = Vendor::start();
    let mut config = isolated(&dir);
    set(&mut config, "fixture-greeter-v1", "api_url", vendor.url());
    vendor.grant(&mut config, &["fixture-greeter-v1"]);
    config.validation_timeout = Duration::from_secs(20);
    let host = Connhost::start(&config);
    assert!(
        host.load_report().failed.is_empty(),
        "{:?}",
        host.load_report().failed
    );
    let plugin = &host.load_report().loaded[0];
    assert_eq!(plugin.plugin, "fixture-greeter-v1");
    let Verdict::Valid(accepted) = validate(&host, "greeter", "plain") else {
        panic!("not valid")
    };
    assert_eq!(accepted.provider_username.as_deref(), Some("greeter 1.0.0"));
    // Through the host's HTTP capability to the loopback vendor.
    assert!(validate(&host, "greeter", "vendor:good-key").is_valid());
    assert_eq!(vendor.requests(), 1);
    let refused = validate(&host, "greeter", "vendor:wrong");
    assert!(
        refused
            .error_message()
            .unwrap()
            .contains("the vendor answered 401"),
        "{refused:?}"
    );
}

/// A host isolating every plugin of `dir`, with `configure` applied.
/// Runs every `(provider, fields)` validation at once on `runtime`, each a
/// task of its own, and returns their verdicts in order.
fn all_at_once(
    runtime: &tokio::runtime::Runtime,
    host: &Connhost,
    calls: impl IntoIterator<Item = (&'static str, connhost::CredentialFields)>,
) -> Vec<Verdict> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(provider, fields)| {
            let host = host.clone();
            runtime.spawn(async move { host.validate(provider, fields).await.unwrap() })
        })
        .collect();
    runtime.block_on(async {
        let mut verdicts = Vec::new();
        for task in tasks {
            verdicts.push(task.await.unwrap());
        }
        verdicts
    })
}

fn isolated_host(dir: &PluginDir, configure: impl FnOnce(&mut HostConfig)) -> Connhost {
    let mut config = isolated(dir);
    configure(&mut config);
    let host = Connhost::start(&config);
    assert!(
        host.load_report().failed.is_empty(),
        "{:?}",
        host.load_report().failed
    );
    host
}

/// The worker status of the plugin `name` as it stands.
fn worker(host: &Connhost, name: &str) -> connhost::WorkerStatus {
    host.plugins()
        .loaded
        .iter()
        .find(|p| p.plugin == name)
        .and_then(|p| p.worker.clone())
        .unwrap_or_else(|| panic!("no isolated plugin {name}"))
}

/// A client validating the greeter (in a worker of its own) over and over
/// until stopped; counts answers that are not valid.
struct Bystander {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Drop for Bystander {
    /// A test that failed before [`finish`](Self::finish) leaves no client
    /// running.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Bystander {
    fn start(host: &Connhost) -> Self {
        let host = host.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = runtime();
            let (mut calls, mut failures) = (0, Vec::new());
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                let verdict = runtime
                    .block_on(host.validate("greeter", fields(&[("api_key", "plain")])))
                    .unwrap();
                calls += 1;
                if !verdict.is_valid() {
                    failures.push(format!("{verdict:?}"));
                }
            }
            (calls, failures)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the client; asserts it made calls and none failed.
    fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (calls, failures) = self.thread.take().unwrap().join().unwrap();
        assert!(calls > 0, "the bystander made no call");
        assert!(
            failures.is_empty(),
            "{} of {calls} bystander validations failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }
}

fn act(host: &Connhost, provider: &str, action: &str) -> Verdict {
    runtime()
        .block_on(host.validate(provider, fields(&[("action", action)])))
        .expect("known provider")
}

/// Triggers `provider`'s fault while a bystander validates another
/// plugin; checks the answer names `expected` and is retryable, then that
/// the worker comes back and answers.
fn fault_becomes_an_answer(
    package: &str,
    plugin: &str,
    provider: &str,
    configure: impl FnOnce(&mut HostConfig),
    expected: &[&str],
) {
    let dir = PluginDir::with(&[package, "fixture-greeter-v1"]);
    let host = isolated_host(&dir, configure);
    assert!(act(&host, provider, "ok").is_valid());
    let first_pid = worker(&host, plugin).pid.expect("a pid");
    let bystander = Bystander::start(&host);
    let verdict = act(&host, provider, "fault");
    let message = verdict.error_message().unwrap_or_default();
    for words in expected {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
    wait_until("the worker is back", || {
        let status = worker(&host, plugin);
        status.state == connhost::WorkerState::Ready && status.restarts == 1
    });
    let status = worker(&host, plugin);
    assert_ne!(status.pid, Some(first_pid), "a new worker process");
    assert_eq!(status.crashes, 1);
    assert!(
        act(&host, provider, "ok").is_valid(),
        "the new worker answers"
    );
    bystander.finish();
}

#[test]
fn a_segfault_answers_with_the_signal_and_the_worker_restarts() {
    fault_becomes_an_answer(
        "fixture-fault-segfault",
        "fixture-fault-segfault",
        "fault-segfault",
        |_| {},
        &["SIGSEGV", "restarted"],
    );
}

#[test]
fn an_abort_answers_with_the_signal_and_the_worker_restarts() {
    fault_becomes_an_answer(
        "fixture-fault-abort",
        "fixture-fault-abort",
        "fault-abort",
        |_| {},
        &["SIGABRT", "restarted"],
    );
}

#[test]
fn an_exit_answers_with_the_exit_code_and_the_worker_restarts() {
    fault_becomes_an_answer(
        "fixture-fault-exit",
        "fixture-fault-exit",
        "fault-exit",
        |_| {},
        &["exited with code 0", "restarted"],
    );
}

#[test]
fn a_stack_overflow_answers_as_such_and_the_worker_restarts() {
    fault_becomes_an_answer(
        "fixture-fault-stack",
        "fixture-fault-stack",
        "fault-stack-overflow",
        |_| {},
        &["overflowed its stack", "restarted"],
    );
}

#[test]
fn a_runaway_allocation_answers_with_the_memory_limit_and_the_worker_restarts() {
    fault_becomes_an_answer(
        "fixture-fault-alloc",
        "fixture-fault-alloc",
        "fault-alloc",
        |config| config.worker.memory_limit = Some(256 << 20),
        &["exceeded its memory limit of 256 MiB", "restarted"],
    );
}

#[test]
fn a_provider_that_spins_times_out_its_worker_is_replaced_and_no_host_thread_is_held() {
    let dir = PluginDir::with(&["fixture-fault-spin", "fixture-greeter-v1"]);
    let host = isolated_host(&dir, |config| {
        config.validation_timeout = Duration::from_secs(2);
    });
    let bystander = Bystander::start(&host);
    // More spinning calls than a provider may have threads in process:
    // each only awaits its worker.
    let verdicts = all_at_once(
        &runtime(),
        &host,
        (0..4).map(|_| ("fault-spin", fields(&[("action", "fault")]))),
    );
    for verdict in verdicts {
        let message = verdict.error_message().unwrap_or_default();
        assert!(
            message.contains("did not answer within 2.0 s"),
            "{message:?}"
        );
        assert!(verdict.is_retryable());
    }
    wait_until("the spinning worker is replaced", || {
        let status = worker(&host, "fixture-fault-spin");
        status.state == connhost::WorkerState::Ready && status.restarts >= 1
    });
    let status = worker(&host, "fixture-fault-spin");
    assert!(
        status
            .last_crash
            .as_deref()
            .is_some_and(|c| c.contains("did not stop")),
        "{status:?}"
    );
    assert!(act(&host, "fault-spin", "ok").is_valid());
    bystander.finish();
}

#[test]
fn one_worker_answers_many_calls_at_once_while_some_of_its_validations_hold_their_threads() {
    let dir = PluginDir::with(&["fixture-hang"]);
    let host = isolated_host(&dir, |config| {
        config.validation_timeout = Duration::from_secs(300);
    });
    let runtime = runtime();
    // Validations that hold their thread in the worker for the whole
    // test: blocking I/O inside `async`, and a future that never ends.
    let stuck: Vec<_> = [("blocks-thread", "600000"), ("hangs-forever", "10")]
        .into_iter()
        .map(|(provider, key)| {
            let host = host.clone();
            runtime.spawn(async move { host.validate(provider, fields(&[("api_key", key)])).await })
        })
        .collect();
    // Many more at once over the same socket, through the worker's other
    // threads: every one is answered.
    // (Under the host's bound on one provider's calls in flight.)
    let verdicts = all_at_once(
        &runtime,
        &host,
        (0..24).map(|i| ("slow", fields(&[("api_key", &format!("{}", 10 + i % 5))]))),
    );
    for verdict in &verdicts {
        assert!(verdict.is_valid(), "{verdict:?}");
    }
    assert!(
        stuck.iter().all(|call| !call.is_finished()),
        "a stuck validation ended"
    );
    let status = worker(&host, "fixture-hang");
    assert_eq!((status.restarts, status.crashes), (0, 0), "{status:?}");
    for call in stuck {
        call.abort();
    }
}

#[test]
fn calls_made_one_after_another_and_overlapping_are_each_answered_once() {
    // A call alone in flight polls the socket for its answer itself (and
    // the worker's thread that answered polls for the next call); calls
    // made meanwhile are answered through the host's reader thread. Either
    // way every call gets its own answer.
    let dir = PluginDir::with(&["fixture-greeter-v1"]);
    let host = isolated_host(&dir, |config| {
        config.validation_timeout = Duration::from_secs(60);
    });
    for _ in 0..300 {
        assert!(validate(&host, "greeter", "plain").is_valid());
    }
    let runtime = runtime();
    let callers: Vec<_> = (0..3)
        .map(|caller| {
            let host = host.clone();
            runtime.spawn(async move {
                for call in 0..300 {
                    let verdict = host
                        .validate("greeter", fields(&[("api_key", "plain")]))
                        .await
                        .unwrap();
                    assert!(
                        verdict.is_valid(),
                        "caller {caller}, call {call}: {verdict:?}"
                    );
                }
            })
        })
        .collect();
    runtime.block_on(async {
        for caller in callers {
            caller.await.unwrap();
        }
    });
    let status = worker(&host, "fixture-greeter-v1");
    assert_eq!((status.restarts, status.crashes), (0, 0), "{status:?}");
}

#[test]
fn a_validation_that_times_out_is_cancelled_in_its_worker_which_keeps_serving() {
    let dir = PluginDir::with(&["fixture-hang"]);
    let host = isolated_host(&dir, |config| {
        config.validation_timeout = Duration::from_secs(3);
    });
    let pid = worker(&host, "fixture-hang").pid;
    let timed_out = validate(&host, "hangs-forever", "10");
    assert!(
        matches!(timed_out, Verdict::TimedOut { .. }),
        "{timed_out:?}"
    );
    // Longer than the grace a cancelled validation has to stop: had the
    // cancellation not reached the worker, its worker would be stopped
    // before this answers.
    let verdict = validate(&host, "slow", "1500");
    assert!(verdict.is_valid(), "{verdict:?}");
    let status = worker(&host, "fixture-hang");
    assert_eq!(
        (status.pid, status.restarts, status.crashes),
        (pid, 0, 0),
        "{status:?}"
    );
}

#[test]
fn a_crash_loop_parks_the_plugin_with_its_reason_until_an_unpark() {
    let dir = PluginDir::with(&["fixture-fault-abort"]);
    let mut config = isolated(&dir);
    config.worker.crash_limit = 3;
    let mut catalog = connhost::Catalog::new(&config);
    catalog.scan_now();
    let host = Connhost::from_catalog(&catalog);
    for round in 0..3 {
        wait_until("the worker is ready", || {
            let state = worker(&host, "fixture-fault-abort").state;
            state == connhost::WorkerState::Ready || state == connhost::WorkerState::Parked
        });
        let verdict = act(&host, "fault-abort", "fault");
        assert!(
            verdict.error_message().unwrap().contains("SIGABRT"),
            "round {round}: {verdict:?}"
        );
    }
    wait_until("the plugin is parked", || {
        worker(&host, "fixture-fault-abort").state == connhost::WorkerState::Parked
    });
    let parked = act(&host, "fault-abort", "ok");
    let message = parked.error_message().unwrap();
    assert!(message.contains("parked"), "{message}");
    assert!(message.contains("3 times within 60 s"), "{message}");
    assert!(!parked.is_retryable());
    let status = worker(&host, "fixture-fault-abort");
    assert_eq!(status.pid, None);
    assert!(status.last_crash.unwrap().contains("SIGABRT"));
    catalog.unpark();
    wait_until("the plugin runs again", || {
        worker(&host, "fixture-fault-abort").state == connhost::WorkerState::Ready
    });
    assert!(act(&host, "fault-abort", "ok").is_valid());
}

fn probe(host: &Connhost, provider: &str, field: &str, value: &str) -> Verdict {
    runtime()
        .block_on(host.validate(provider, fields(&[(field, value)])))
        .expect("known provider")
}

/// Asserts a probe was refused by the sandbox: a provider fault naming
/// the operation and the system's refusal.
fn assert_refused(verdict: &Verdict, operation: &str) {
    let message = verdict.error_message().unwrap_or_default();
    assert!(
        matches!(verdict, Verdict::ProviderFault { .. }),
        "{operation}: {verdict:?}"
    );
    assert!(message.contains(operation), "{message}");
    assert!(
        [
            "Operation not permitted",
            "Permission denied",
            "Network is unreachable",
            // In a root of its own, the host's files do not exist.
            "No such file or directory"
        ]
        .iter()
        .any(|refusal| message.contains(refusal)),
        "no refusal named in {message:?}"
    );
}

#[test]
fn the_sandbox_refuses_a_tcp_connect_a_read_outside_its_paths_and_an_exec() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "host secrets").unwrap();
    let path = secret_file.path().display().to_string();
    let dir = PluginDir::with(&["fixture-sandbox-probe"]);

    // The same plugin in process reaches all three ...
    let in_process = host_with(&dir, |_| {});
    for (provider, field, value) in [
        ("probe-connect", "address", address.as_str()),
        ("probe-read", "path", path.as_str()),
        ("probe-exec", "command", "/bin/sh"),
    ] {
        assert!(
            probe(&in_process, provider, field, value).is_valid(),
            "{provider} in process"
        );
    }
    // ... and isolated, none.
    let host = isolated_host(&dir, |_| {});
    let sandbox = worker(&host, "fixture-sandbox-probe").sandbox;
    for measure in [
        "no new privileges",
        "landlock",
        "seccomp",
        "mount namespace",
        "pid namespace",
    ] {
        assert!(
            sandbox.iter().any(|m| m.contains(measure)),
            "{measure} not in {sandbox:?}"
        );
    }
    assert_refused(
        &probe(&host, "probe-connect", "address", &address),
        "connect",
    );
    assert_refused(&probe(&host, "probe-read", "path", &path), "read");
    assert_refused(&probe(&host, "probe-exec", "command", "/bin/sh"), "exec");
    // Refusals are answers, not crashes.
    assert_eq!(worker(&host, "fixture-sandbox-probe").crashes, 0);
}

#[test]
fn chaos_killing_workers_at_random_fails_no_other_provider_and_every_worker_comes_back() {
    let victims = [
        ("fixture-fault-abort", "fault-abort"),
        ("fixture-fault-exit", "fault-exit"),
        ("fixture-fault-segfault", "fault-segfault"),
    ];
    let mut packages: Vec<&str> = victims.iter().map(|(package, _)| *package).collect();
    packages.push("fixture-greeter-v1");
    let dir = PluginDir::with(&packages);
    let host = isolated_host(&dir, |config| {
        config.worker.crash_limit = 1000;
    });
    let bystander = Bystander::start(&host);
    // A client of the victims too: every answer is valid or a retryable
    // fault, never a hang (each call is bounded by the timeout anyway).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let victim_client = {
        let (host, stop) = (host.clone(), stop.clone());
        std::thread::spawn(move || {
            let runtime = runtime();
            let mut answers = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (_, provider) in victims {
                    let verdict = runtime
                        .block_on(host.validate(provider, fields(&[("action", "ok")])))
                        .unwrap();
                    assert!(
                        verdict.is_valid() || verdict.is_retryable(),
                        "{provider}: {verdict:?}"
                    );
                    answers += 1;
                }
            }
            answers
        })
    };
    let mut seed: u64 = std::process::id() as u64 | 1;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut kills = 0;
    while kills < 12 {
        let (plugin, _) = victims[random(victims.len() as u64) as usize];
        if let Some(pid) = worker(&host, plugin).pid {
            let killed = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
            kills += usize::from(killed.success());
        }
        // Not a wait: random spacing between kills, so they land at
        // every stage of a worker's life.
        std::thread::sleep(Duration::from_millis(20 + random(80)));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(victim_client.join().unwrap() > 0);
    for (plugin, provider) in victims {
        wait_until("every worker is back", || {
            worker(&host, plugin).state == connhost::WorkerState::Ready
        });
        assert!(act(&host, provider, "ok").is_valid(), "{provider}");
    }
    let crashes: u64 = victims
        .iter()
        .map(|(plugin, _)| worker(&host, plugin).crashes)
        .sum();
    // (A kill may land on a worker that is already dying.)
    assert!(crashes > 0 && crashes <= kills as u64, "{crashes} crashes");
    bystander.finish();
}

#[test]
fn the_daytona_example_answers_the_same_isolated_as_in_process_against_the_loopback_vendor() {
    let vendor = Vendor::start();
    let dir = PluginDir::with(&["daytona"]);
    let configure = |config: &mut HostConfig| {
        set(config, "daytona", "api_url", vendor.url());
        vendor.grant(config, &["daytona"]);
    };
    let in_process = host_with(&dir, configure);
    let isolated = isolated_host(&dir, configure);
    for key in ["good-key", "wrong-key", "rate-limited", "broken"] {
        let ask = |host: &Connhost| {
            runtime()
                .block_on(host.validate("daytona", fields(&[("api_key", key)])))
                .unwrap()
        };
        assert_eq!(ask(&isolated), ask(&in_process), "{key}");
    }
    assert_eq!(vendor.requests(), 8);
}
