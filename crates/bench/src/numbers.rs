//! Deterministic, valid-looking North American numbers for the benchmark's contacts and
//! callers, written in the notations people and PBXs actually use.
//!
//! Every index `i` below [`capacity`] maps to a distinct number (a multiplicative
//! permutation of the number space, so neighbouring contacts get unrelated numbers).
//! Which numbers exist in the CRM is fully determined by the index, so the benchmark
//! knows its known and unknown callers without keeping a million strings in memory:
//!
//! - contact `i` has `phone = number(stored_phone(i))`; every 50th contact shares the
//!   previous contact's number (a household), so some callers match several records;
//! - every 10th contact also has `mobile = number(MOBILE_BASE + i)`;
//! - indexes in `contacts .. MOBILE_BASE` are never stored: unknown callers.

/// Exchanges (the `EEE` of `AAA-EEE-LLLL`) are 200..=999.
const EXCHANGES: u64 = 800;
const LINES: u64 = 10_000;
/// Multiplier of the permutation; prime, and checked to be coprime with the capacity.
const MULTIPLIER: u128 = 2_654_435_761;
const OFFSET: u128 = 1_234_567;

/// Area codes 201..=989 that start with 2-9 and are not N11 service codes.
fn area_codes() -> &'static [u16] {
    static AREAS: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    AREAS.get_or_init(|| (201..=989u16).filter(|a| a / 100 >= 2 && a % 100 != 11).collect())
}

/// How many distinct numbers the generator can produce.
pub fn capacity() -> u64 {
    area_codes().len() as u64 * EXCHANGES * LINES
}

/// Indexes from here on are mobile numbers; below it (and above the contact count) unknown callers.
pub fn mobile_base() -> u64 {
    capacity() / 2
}

/// The parts (area, exchange, line) of number `idx`.
fn parts(idx: u64) -> (u16, u64, u64) {
    let x = ((u128::from(idx) * MULTIPLIER + OFFSET) % u128::from(capacity())) as u64;
    let line = x % LINES;
    let exchange = 200 + (x / LINES) % EXCHANGES;
    let areas = area_codes();
    let area = areas[((x / (LINES * EXCHANGES)) as usize) % areas.len()];
    (area, exchange, line)
}

/// The E.164 form of number `idx`.
pub fn e164(idx: u64) -> String {
    let (a, e, l) = parts(idx);
    format!("+1{a}{e:03}{l:04}")
}

/// Number of notations [`written`] knows.
pub const NOTATIONS: u64 = 6;

/// Number `idx` written in notation `notation % NOTATIONS`.
pub fn written(idx: u64, notation: u64) -> String {
    let (a, e, l) = parts(idx);
    match notation % NOTATIONS {
        0 => format!("+1 ({a}) {e:03}-{l:04}"),
        1 => format!("{a}.{e:03}.{l:04}"),
        2 => format!("1-{a}-{e:03}-{l:04}"),
        3 => format!("({a}) {e:03} {l:04}"),
        4 => format!("+1{a}{e:03}{l:04}"),
        _ => format!("tel:+1-{a}-{e:03}-{l:04}"),
    }
}

/// Number of notations [`pbx_written`] knows.
pub const PBX_NOTATIONS: u64 = 4;

/// Number `idx` as a Zammad-style CTI webhook carries it. Such a PBX sends international
/// numbers as digits without `+` (`12125550100`) or with it, never a bare US national
/// number: in its convention digits not starting with `0` are international, so
/// `2125550100` is a number in Egypt (`+20`), as Zammad reads it too.
pub fn pbx_written(idx: u64, notation: u64) -> String {
    let (a, e, l) = parts(idx);
    match notation % PBX_NOTATIONS {
        0 => format!("1{a}{e:03}{l:04}"),
        1 => format!("+1{a}{e:03}{l:04}"),
        2 => format!("+1 ({a}) {e:03}-{l:04}"),
        _ => format!("tel:+1-{a}-{e:03}-{l:04}"),
    }
}

/// Number of notations [`searched_written`] knows.
pub const SEARCHED_NOTATIONS: u64 = 5;

/// Number `idx` written in notation `notation % SEARCHED_NOTATIONS`, among those a CRM query
/// finds without a normalized column: the Dataverse adapter searches every phone column for
/// the E.164 form, the international and national formats, and the bare digits with and
/// without the country code (`PhoneNormalizer::notations`). Numbers typed any other way in
/// Dataverse are found through the local index only.
pub fn searched_written(idx: u64, notation: u64) -> String {
    let (a, e, l) = parts(idx);
    match notation % SEARCHED_NOTATIONS {
        0 => format!("+1{a}{e:03}{l:04}"),
        1 => format!("+1 {a}-{e:03}-{l:04}"),
        2 => format!("({a}) {e:03}-{l:04}"),
        3 => format!("{a}{e:03}{l:04}"),
        _ => format!("1{a}{e:03}{l:04}"),
    }
}

/// The number index stored in contact `i`'s `phone` field.
pub fn stored_phone(i: u64) -> u64 {
    if i % 50 == 49 { i - 1 } else { i }
}

/// Whether contact `i` has a mobile number (`number(mobile_base() + i)`).
pub fn has_mobile(i: u64) -> bool {
    i.is_multiple_of(10)
}

/// How many CRM records carry phone-number index `idx`, given `contacts` contacts.
pub fn expected_matches(idx: u64, contacts: u64) -> u32 {
    if idx >= mobile_base() {
        return u32::from(has_mobile(idx - mobile_base()) && idx - mobile_base() < contacts);
    }
    if idx >= contacts {
        return 0;
    }
    match idx % 50 {
        48 if idx + 1 < contacts => 2,
        49 => 0,
        _ => 1,
    }
}

/// A small, fast, seedable generator (SplitMix64): the benchmark needs repeatable
/// choices, not cryptographic ones.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the tiny modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A caller: a number index, how it is written, and how many records it should match.
pub struct Caller {
    pub idx: u64,
    pub written: String,
    pub expected: u32,
}

/// Picks a caller: unknown with probability `unknown_percent`, otherwise a stored phone
/// or mobile number of a random contact.
pub fn pick_caller(rng: &mut Rng, contacts: u64, unknown_percent: u8) -> Caller {
    let idx = if contacts == 0 || rng.below(100) < u64::from(unknown_percent) {
        contacts + rng.below(mobile_base() - contacts)
    } else {
        let i = rng.below(contacts);
        if has_mobile(i) && rng.below(4) == 0 { mobile_base() + i } else { stored_phone(i) }
    };
    let notation = rng.below(NOTATIONS);
    Caller { idx, written: written(idx, notation), expected: expected_matches(idx, contacts) }
}

/// [`pick_caller`], written as a Zammad-style CTI webhook carries the number. It draws the
/// same random numbers, so a phase that follows another keeps its sequence.
pub fn pick_pbx_caller(rng: &mut Rng, contacts: u64, unknown_percent: u8) -> Caller {
    let Caller { idx, written: _, expected } = pick_caller(rng, contacts, unknown_percent);
    // The notation follows the number, not a further draw, for the same reason.
    Caller { idx, written: pbx_written(idx, idx / 7), expected }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_permutation_is_a_permutation() {
        fn gcd(a: u128, b: u128) -> u128 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        assert_eq!(gcd(MULTIPLIER, u128::from(capacity())), 1);
        let seen: HashSet<String> = (0..200_000).map(e164).collect();
        assert_eq!(seen.len(), 200_000);
        assert!(!seen.contains(&e164(mobile_base())));
    }

    #[test]
    fn notations_share_one_number() {
        let (a, e, l) = parts(42);
        assert!((201..=989).contains(&a) && a % 100 != 11);
        assert!((200..=999).contains(&e) && l < 10_000);
        for n in 0..NOTATIONS {
            let w = written(42, n);
            let digits: String = w.chars().filter(char::is_ascii_digit).collect();
            let digits = digits.strip_prefix('1').filter(|d| d.len() == 10).unwrap_or(&digits).to_string();
            assert_eq!(format!("+1{digits}"), e164(42), "{w}");
        }
        for n in 0..PBX_NOTATIONS {
            let w = pbx_written(42, n);
            let digits: String = w.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(format!("+{digits}"), e164(42), "{w}");
        }
        for n in 0..SEARCHED_NOTATIONS {
            let w = searched_written(42, n);
            let digits: String = w.chars().filter(char::is_ascii_digit).collect();
            let digits = digits.strip_prefix('1').filter(|d| d.len() == 10).unwrap_or(&digits).to_string();
            assert_eq!(format!("+1{digits}"), e164(42), "{w}");
        }
    }

    #[test]
    fn expected_matches_follow_the_layout() {
        assert_eq!(expected_matches(0, 1000), 1);
        assert_eq!(expected_matches(48, 1000), 2);
        assert_eq!(expected_matches(49, 1000), 0);
        assert_eq!(expected_matches(1000, 1000), 0);
        assert_eq!(expected_matches(mobile_base() + 10, 1000), 1);
        assert_eq!(expected_matches(mobile_base() + 11, 1000), 0);
        assert_eq!(expected_matches(mobile_base() + 2000, 1000), 0);
    }
}
