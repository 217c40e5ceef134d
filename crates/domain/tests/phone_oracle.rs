//! The phone-number oracle (issue 13 item 4): random valid numbers of 26 regions, fixed and
//! mobile, own-region and foreign, each in every notation PBXs and CRM users write, read by
//! an independent libphonenumber implementation (Python `phonenumbers`, see
//! scripts/setup-phone-oracle and scripts/phone-oracle-corpus). The hub must give the
//! reference's E.164 form or nothing, never identify two different numbers with each other
//! (in the index or in direct CRM queries by notation), and identify at least 99.9 % of the
//! pairs the reference calls the same number, own-region and foreign separately.
//!
//! `CXBRIDGE_PHONE_CORPUS` names a corpus file (scripts/test writes one with a fresh seed);
//! without it the committed corpus in tests/data is read, except under
//! `CXBRIDGE_REQUIRE_PEERS=1` (CI), where a missing fresh corpus fails the test.

use std::collections::HashMap;
use std::fmt::Write as _;

use cxbridge_domain::phone::{DigitsWithoutPlus, PhoneNormalizer};

struct Row {
    region: String,
    own: bool,
    convention: DigitsWithoutPlus,
    raw: String,
    /// The reference's E.164 form; `None` when it refuses the string.
    expected: Option<String>,
    valid: bool,
}

fn corpus() -> (String, Vec<Row>) {
    let fresh = std::env::var("CXBRIDGE_PHONE_CORPUS").ok().filter(|p| !p.is_empty());
    // CI must check fresh numbers: the committed corpus alone would let a fix that only
    // fits it pass.
    if fresh.is_none() && std::env::var("CXBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!("CXBRIDGE_REQUIRE_PEERS=1 but CXBRIDGE_PHONE_CORPUS is unset: the reference did not run (scripts/setup-phone-oracle, then scripts/phone-oracle-corpus)");
    }
    let path = fresh.unwrap_or_else(|| format!("{}/tests/data/phone_oracle.tsv", env!("CARGO_MANIFEST_DIR")));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading the corpus {path}: {e}"));
    let mut header = String::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(comment) = line.strip_prefix("# ") {
            header = comment.to_string();
            continue;
        }
        if line.starts_with("number\t") || line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let [_number, region, kind, convention, raw, expected, valid] = f.as_slice() else { panic!("{path}:{}: 7 columns expected: {line:?}", i + 1) };
        let convention = match *convention {
            "native" => DigitsWithoutPlus::National,
            "international" => DigitsWithoutPlus::International,
            "zammad" => DigitsWithoutPlus::ZammadStyle,
            other => panic!("{path}:{}: unknown convention {other}", i + 1),
        };
        rows.push(Row {
            region: region.to_string(),
            own: *kind == "own",
            convention,
            raw: raw.to_string(),
            expected: (*expected != "error").then(|| expected.to_string()),
            valid: *valid == "1",
        });
    }
    (format!("{path} ({header})"), rows)
}

#[derive(Default)]
struct Figures {
    rows: usize,
    wrong: usize,
    pairs: usize,
    identified: usize,
    direct_found: usize,
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 { 100.0 } else { part as f64 * 100.0 / whole as f64 }
}

#[test]
fn the_hub_reads_numbers_as_the_reference_does() {
    let (source, rows) = corpus();
    assert!(rows.len() > 1000, "{source}: only {} rows", rows.len());
    let mut normalizers: HashMap<String, PhoneNormalizer> = HashMap::new();
    let mut by_kind = [Figures::default(), Figures::default()];
    let mut wrong_examples = String::new();
    let mut missed_examples = String::new();
    let mut false_index = 0usize;
    let mut false_direct = 0usize;
    let mut false_examples = String::new();

    let mut regions: Vec<&str> = rows.iter().map(|r| r.region.as_str()).collect();
    regions.sort_unstable();
    regions.dedup();
    for region in &regions {
        let n = normalizers.entry(region.to_string()).or_insert_with(|| PhoneNormalizer::new(Some(region), &[]).expect("region"));
        let here: Vec<&Row> = rows.iter().filter(|r| r.region == *region).collect();
        let keys: Vec<Option<String>> = here.iter().map(|r| n.normalize_from(&r.raw, r.convention).e164().map(str::to_string)).collect();
        for (row, key) in here.iter().zip(&keys) {
            let f = &mut by_kind[usize::from(!row.own)];
            f.rows += 1;
            if key.is_none() && row.valid && missed_examples.lines().count() < 20 {
                let _ = writeln!(missed_examples, "  {region} {:?} {:?}: no number, reference {:?}", row.convention, row.raw, row.expected);
            }
            if let Some(k) = key
                && row.expected.as_deref() != Some(k.as_str())
            {
                f.wrong += 1;
                if wrong_examples.lines().count() < 20 {
                    let _ = writeln!(wrong_examples, "  {region} {:?} {:?}: {k}, reference {:?}", row.convention, row.raw, row.expected);
                }
            }
        }
        // Pairs the reference calls the same valid number: any incoming notation against
        // every notation a CRM record may hold (CRM data is read by the region's rules).
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, row) in here.iter().enumerate() {
            if let (Some(e), true) = (row.expected.as_deref(), row.valid) {
                groups.entry(e).or_default().push(i);
            }
        }
        let stored_by_raw: HashMap<&str, Vec<usize>> = here.iter().enumerate().filter(|(_, r)| r.convention == DigitsWithoutPlus::National).fold(HashMap::new(), |mut m, (i, r)| {
            m.entry(r.raw.as_str()).or_default().push(i);
            m
        });
        let mut notations_cache: HashMap<String, Vec<String>> = HashMap::new();
        for members in groups.values() {
            for &caller in members {
                let notations = keys[caller].as_ref().map(|k| notations_cache.entry(k.clone()).or_insert_with(|| n.notations(k)).clone()).unwrap_or_default();
                for &stored in members {
                    if caller == stored || here[stored].convention != DigitsWithoutPlus::National {
                        continue;
                    }
                    let f = &mut by_kind[usize::from(!here[caller].own)];
                    f.pairs += 1;
                    if keys[caller].is_some() && keys[caller] == keys[stored] {
                        f.identified += 1;
                    }
                    if notations.contains(&here[stored].raw) {
                        f.direct_found += 1;
                    }
                }
            }
        }
        // False matches in the index: rows the reference reads differently under one key.
        let mut by_key: HashMap<&str, HashMap<Option<&str>, usize>> = HashMap::new();
        for (row, key) in here.iter().zip(&keys) {
            if let Some(k) = key {
                *by_key.entry(k.as_str()).or_default().entry(row.expected.as_deref()).or_default() += 1;
            }
        }
        for (k, readings) in &by_key {
            if readings.len() > 1 {
                let total: usize = readings.values().sum();
                false_index += (total * total - readings.values().map(|c| c * c).sum::<usize>()) / 2;
                let _ = writeln!(false_examples, "  index {region} {k}: reference readings {readings:?}");
            }
        }
        // False matches in direct mode: a record found by one of the notations searched for
        // a caller although the reference reads the record's number as another number.
        for (caller, key) in keys.iter().enumerate() {
            let Some(k) = key else { continue };
            let notations = notations_cache.entry(k.clone()).or_insert_with(|| n.notations(k)).clone();
            for t in &notations {
                for &stored in stored_by_raw.get(t.as_str()).into_iter().flatten() {
                    if here[stored].expected != here[caller].expected {
                        false_direct += 1;
                        let _ = writeln!(false_examples, "  direct {region} {:?} finds {:?}", here[caller].raw, here[stored].raw);
                    }
                }
            }
        }
    }

    println!("phone oracle: {source}, {} regions", regions.len());
    for (name, f) in ["own-region", "foreign"].iter().zip(&by_kind) {
        println!(
            "  {name:10} rows {:6}  wrong E.164 {:3}  pairs {:7}  identified {:7} ({:.3} %)  direct mode found {:7} ({:.1} %)",
            f.rows,
            f.wrong,
            f.pairs,
            f.identified,
            percent(f.identified, f.pairs),
            f.direct_found,
            percent(f.direct_found, f.pairs)
        );
    }
    let refused = rows.iter().filter(|r| r.expected.is_none()).count();
    println!("  false matches: index {false_index}, direct mode {false_direct}; rows the reference refuses: {refused} (a key for one counts as wrong)");
    let wrong: usize = by_kind.iter().map(|f| f.wrong).sum();
    assert_eq!(wrong, 0, "wrong E.164 forms (first 20):\n{wrong_examples}");
    assert_eq!(false_index + false_direct, 0, "false matches:\n{false_examples}");
    for (name, f) in ["own-region", "foreign"].iter().zip(&by_kind) {
        assert!(f.pairs > 0, "{name}: no pairs in the corpus");
        assert!(percent(f.identified, f.pairs) >= 99.9, "{name}: {} of {} pairs identified; numbers the reference reads and the hub does not (first 20):\n{missed_examples}", f.identified, f.pairs);
    }
}
