//! Human units on the command line and in files: durations (`500ms`, `30s`, `5m`, `1h`) and
//! sizes (`65536`, `64KiB`, `8MiB`).

/// Parses `500ms`, `30s`, `5m`, `1h` (a bare number is seconds) into ms.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs * 1000);
    }
    let d: jiff::SignedDuration = t.parse().map_err(|_| {
        format!("invalid duration {s:?}: use a number with a unit, like 500ms, 30s, 5m or 1h")
    })?;
    if d.is_negative() {
        return Err(format!("invalid duration {s:?}: it must not be negative"));
    }
    Ok(d.as_millis() as u64)
}

/// Parses `65536`, `64KiB`, `8MiB`, `1GiB` into bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use bytes, or KiB, MiB, GiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("invalid size unit in {s:?}: use KiB, MiB or GiB")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("7"), Ok(7_000));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("-5s").is_err());
    }

    #[test]
    fn sizes_accept_binary_units() {
        assert_eq!(parse_bytes("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("8 parsecs").is_err());
    }
}
