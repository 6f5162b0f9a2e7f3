//! Wall-clock time as the packager stamps it (program date-times, part arrival): Unix
//! milliseconds, the same representation the catalog uses, defined here so media needs no catalog.

/// Milliseconds since the Unix epoch (negative before it).
pub type UnixMillis = i64;

/// The wall clock now; 0 if the system clock is before 1970.
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| UnixMillis::try_from(d.as_millis()).unwrap_or(UnixMillis::MAX))
        .unwrap_or(0)
}
