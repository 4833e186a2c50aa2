//! Unix times as PostgreSQL timestamptz values (PostgreSQL counts from 2000): one place for
//! every SQL function that returns a time.

use pgrx::datum::TimestampWithTimeZone;

/// Microseconds since 1970.
pub fn from_unix_micros(micros: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(micros.saturating_sub(backstop_core::snapshot::time::EPOCH_SHIFT_MICROS)).ok()
}

/// Milliseconds since 1970.
pub fn from_unix_ms(ms: i64) -> Option<TimestampWithTimeZone> {
    from_unix_micros(ms.saturating_mul(1000))
}

/// Seconds since 1970.
pub fn from_unix_seconds(seconds: f64) -> Option<TimestampWithTimeZone> {
    from_unix_micros((seconds * 1e6).round() as i64)
}

pub fn from_system_time(time: std::time::SystemTime) -> Option<TimestampWithTimeZone> {
    from_unix_seconds(backstop_core::time::unix_seconds(time))
}

/// Seconds since 1970 of a timestamptz.
pub fn to_unix_seconds(time: TimestampWithTimeZone) -> f64 {
    let micros: i64 = time.into_inner();
    micros.saturating_add(backstop_core::snapshot::time::EPOCH_SHIFT_MICROS) as f64 / 1e6
}
