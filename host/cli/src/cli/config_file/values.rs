//! The value types several tables share. Each checks its value where
//! serde reads it, so that an error names the value's line and key.

use std::time::Duration;

use serde::Deserialize;

/// A positive number of seconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "f64")]
pub(super) struct Seconds(pub(super) Duration);

impl TryFrom<f64> for Seconds {
    type Error = String;

    fn try_from(seconds: f64) -> Result<Self, String> {
        Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Seconds)
            .ok_or_else(|| format!("must be a positive number of seconds, got {seconds}"))
    }
}

/// A number of seconds, 0 or more.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "f64")]
pub(super) struct GraceSeconds(pub(super) f64);

impl TryFrom<f64> for GraceSeconds {
    type Error = String;

    fn try_from(seconds: f64) -> Result<Self, String> {
        Duration::try_from_secs_f64(seconds)
            .map(|_| GraceSeconds(seconds))
            .map_err(|_| format!("must be a number of seconds, 0 or more, got {seconds}"))
    }
}

/// An integer from `MIN` to `MAX`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
pub(super) struct Int<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> TryFrom<i64> for Int<MIN, MAX> {
    type Error = String;

    fn try_from(value: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            Ok(Int(value))
        } else if MAX == i64::MAX {
            Err(format!("must be {MIN} or more, got {value}"))
        } else {
            Err(format!("must be from {MIN} to {MAX}, got {value}"))
        }
    }
}

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    /// The value (never negative: every `MIN` here is 0 or 1).
    pub(super) fn get(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0)
    }

    /// The value, `None` for 0 ("no limit").
    pub(super) fn limit(self) -> Option<u64> {
        Some(self.get()).filter(|&v| v > 0)
    }

    /// The value as a `usize` (at most `usize::MAX`).
    pub(super) fn to_usize(self) -> usize {
        usize::try_from(self.get()).unwrap_or(usize::MAX)
    }

    /// A number of mebibytes in bytes.
    pub(super) fn mebibytes(self) -> u64 {
        self.get() * (1 << 20)
    }
}

/// Any count from 1 that fits a `u32`.
pub(super) type U32Count = Int<1, { u32::MAX as i64 }>;

/// A size in mebibytes, from `MIN`, that fits a `u64` in bytes.
pub(super) type Mebibytes<const MIN: i64> = Int<MIN, { (u64::MAX >> 20) as i64 }>;

/// The bound on validations in flight: as `--max-in-flight` takes it.
pub(super) type InFlightBound = Int<1, 65_536>;
