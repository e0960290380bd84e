//! Forwards a plugin's `tracing` events to the host.
//!
//! A plugin library has its own copy of `tracing` with its own global
//! dispatcher, which the host's subscriber never sees. At init the SDK
//! installs [`Forwarder`] as that copy's global default; it formats each
//! event and hands it to the host's `log` function, which re-emits it under
//! the plugin's name. Spans inside plugins are not forwarded; events polled
//! on host threads still land inside the host's current span.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::abi::{level, HostContext};

/// A subscriber that sends every event to the host.
pub(crate) struct Forwarder {
    host: HostContext,
    max: LevelFilter,
    next_span: AtomicU64,
}

impl Forwarder {
    pub(crate) fn new(host: HostContext) -> Self {
        Self {
            host,
            max: level_filter(host.max_log_level),
            next_span: AtomicU64::new(1),
        }
    }
}

fn level_filter(code: u8) -> LevelFilter {
    match code {
        0 => LevelFilter::OFF,
        level::ERROR => LevelFilter::ERROR,
        level::WARN => LevelFilter::WARN,
        level::INFO => LevelFilter::INFO,
        level::DEBUG => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The ABI code of a level.
pub(crate) fn level_code(level: Level) -> u8 {
    match level {
        Level::ERROR => level::ERROR,
        Level::WARN => level::WARN,
        Level::INFO => level::INFO,
        Level::DEBUG => level::DEBUG,
        Level::TRACE => level::TRACE,
    }
}

impl Subscriber for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = MessageVisitor::default();
        event.record(&mut message);
        let metadata = event.metadata();
        (self.host.vtable.log())(
            self.host.plugin,
            level_code(*metadata.level()),
            RStr::from_str(metadata.target()),
            RStr::from_str(&message.finish()),
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Formats an event as `message key=value ...`.
#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl MessageVisitor {
    fn finish(mut self) -> String {
        if !self.fields.is_empty() {
            if !self.message.is_empty() {
                self.message.push(' ');
            }
            self.message.push_str(self.fields.trim_start());
        }
        self.message
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// Sends a panic's message and location to the host's log instead of the
/// plugin's stderr.
pub(crate) fn install_panic_hook(host: HostContext) {
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string payload)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("panicked at {location}: {message}");
        (host.vtable.log())(
            host.plugin,
            level::ERROR,
            RStr::from_str("panic"),
            RStr::from_str(&text),
        );
    }));
}
