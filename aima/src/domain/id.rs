/// Eight lowercase hex digits, the random part of every AIMA id.
pub fn random_hex8() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// True when `s` is exactly eight lowercase hex digits.
pub(crate) fn is_hex8(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_hex8() {
        for _ in 0..1000 {
            assert!(is_hex8(&random_hex8()));
        }
    }

    #[test]
    fn hex8_rejects_other_shapes() {
        for bad in [
            "",
            "1234567",
            "123456789",
            "ABCDEF12",
            "1234567g",
            "12 45678",
        ] {
            assert!(!is_hex8(bad), "{bad:?}");
        }
    }
}
