"""Generates the phone-number oracle corpus (see scripts/phone-oracle-corpus).

Every row is one raw address as a hub in `region` receives it from a source with a
`convention` for digits without `+`, and what the reference (Python `phonenumbers`, a
libphonenumber implementation independent of ours) makes of it:

    number  region  kind  convention  raw  expected  valid

`number` groups the rows written from one generated number, `kind` is `own` (the number
belongs to the hub's country calling code) or `foreign`, `expected` is the reference's
E.164 form or `error` (it refuses the string), `valid` is 1 when the reference calls that
E.164 form a valid number. Conventions: `native` (the hub's region rules, as
libphonenumber parses), `international` (sipgate: digits without `+` are international),
`zammad` (Zammad's CTI: a leading `00` is international, a leading `0` national, other
digits are international when that reading is a valid number, else national when that
one is). Only digit strings without `+` are read by a convention.
"""

import random
import sys

import phonenumbers
from phonenumbers import PhoneNumberFormat as F
from phonenumbers import PhoneNumberType as T

REGIONS = [
    "US", "CA", "GB", "DE", "FR", "IT", "ES", "NL", "CH", "AT", "BE", "SE", "PL",
    "AU", "NZ", "BR", "MX", "AR", "IN", "JP", "CN", "ZA", "RU", "SG", "IE", "CZ",
]

SPACES = ["\u00a0", "\u202f", "\u2009", "\u3000"]

# International call prefixes to try, longest first; the first one the hub region's own
# `international_prefix` pattern fully matches is what its callers dial.
IDD_CANDIDATES = ["0011", "0021", "8~10", "810", "011", "010", "001", "000", "00"]


def parse(raw, region):
    try:
        return phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None


def e164(n):
    return phonenumbers.format_number(n, F.E164)


def idd_of(region):
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    import re

    pattern = re.compile(meta.international_prefix)
    for c in IDD_CANDIDATES:
        plain = c.replace("~", "")
        if pattern.fullmatch(plain):
            return plain
    return meta.preferred_international_prefix or "00"


def random_number(rng, region, kind):
    """A random valid number of `kind` (fixed line or mobile) in `region`."""
    example = phonenumbers.example_number_for_type(region, kind)
    if example is None:
        return None
    nsn = phonenumbers.national_significant_number(example)
    for _ in range(200):
        keep = max(1, len(nsn) - rng.randint(3, 6))
        digits = nsn[:keep] + "".join(str(rng.randint(0, 9)) for _ in range(len(nsn) - keep))
        n = parse("+%d%s" % (example.country_code, digits), None)
        if n is None or not phonenumbers.is_valid_number(n):
            continue
        t = phonenumbers.number_type(n)
        if kind == T.MOBILE and t in (T.MOBILE, T.FIXED_LINE_OR_MOBILE):
            return n
        if kind == T.FIXED_LINE and t in (T.FIXED_LINE, T.FIXED_LINE_OR_MOBILE):
            return n
    return None


def notations(n, hub):
    """(convention, raw) pairs for number `n` received by a hub in region `hub`."""
    cc = n.country_code
    nsn = phonenumbers.national_significant_number(n)
    intl = phonenumbers.format_number(n, F.INTERNATIONAL)
    meta = phonenumbers.PhoneMetadata.metadata_for_region(phonenumbers.region_code_for_number(n) or hub)
    hub_meta = phonenumbers.PhoneMetadata.metadata_for_region(hub)
    idd = idd_of(hub)
    out = [
        ("native", e164(n)),
        ("native", intl),
        ("native", intl.replace(" ", "-")),
        ("native", intl.replace(" ", ".")),
        ("native", " " + intl + " "),
        ("native", "+%d %s" % (cc, nsn)),
        ("native", "%s %d %s" % (idd, cc, nsn)),
        ("native", "%s%d%s" % (idd, cc, nsn)),
        ("native", phonenumbers.format_number(n, F.RFC3966)),
        ("native", intl + " ext. 12"),
        ("native", phonenumbers.format_number(n, F.RFC3966) + ";ext=12"),
        ("native", "+%d-%s x12" % (cc, nsn)),
    ]
    rest = intl.split(" ", 1)[-1]
    out += [
        ("native", "(+%d) %s" % (cc, rest)),
        ("native", "+%d/%s" % (cc, rest.replace(" ", ""))),
        ("native", "Tel.: %s" % intl),
        ("native", "\uff0b%d %s" % (cc, rest)),
        ("native", "sip:%s@pbx.example.com" % e164(n)),
    ]
    if meta is not None and meta.national_prefix:
        out.append(("native", "%s %d (%s)%s" % (idd, cc, meta.national_prefix, rest)))
    groups = intl.split(" ")
    if len(groups) >= 3:
        out.append(("native", "%s (%s) %s" % (groups[0], groups[1], " ".join(groups[2:]))))
    for space in SPACES:
        out.append(("native", intl.replace(" ", space)))
    if meta is not None and meta.national_prefix:
        out.append(("native", "+%d (%s)%s" % (cc, meta.national_prefix, intl.split(" ", 1)[-1])))
    if idd != "00":
        # A blanket `00` is no international prefix here: the reference says what it is.
        out.append(("native", "00%d%s" % (cc, nsn)))
    if cc == hub_meta.country_code:
        national = phonenumbers.format_number(n, F.NATIONAL)
        compact = "".join(ch for ch in national if ch.isdigit())
        out += [
            ("native", national),
            ("native", compact),
            ("native", national.replace(" ", "/", 1)),
            ("native", national.replace(" ", "-")),
            ("native", national.replace(" ", "\u00a0")),
            ("native", national + " x12"),
            ("native", "tel:%s;phone-context=+%d" % (compact, cc)),
            ("native", nsn),
            ("zammad", compact),
        ]
    # Digits without `+`, as sipgate always sends them and Zammad-style CTI may.
    out += [
        ("international", "%d%s" % (cc, nsn)),
        ("international", e164(n)),
        ("zammad", "%d%s" % (cc, nsn)),
        ("zammad", "00%d%s" % (cc, nsn)),
    ]
    return out


def expected(raw, hub, convention):
    """The reference's reading under a source convention: (E.164 or None, valid).

    The reference refuses some Unicode spaces (U+202F, U+2009) that documents carry; the
    hub's contract is that any Unicode space counts as a space, so the reference is asked
    about the string with ASCII spaces."""
    raw = "".join(" " if ch.isspace() else ch for ch in raw).strip()
    if raw.startswith("sip:"):
        # The reference knows no SIP URIs: it is asked about the user part.
        raw = raw[4:].split("@", 1)[0]
    digits_only = raw.isdigit()
    if convention == "international" and digits_only and not raw.startswith("0"):
        n = parse("+" + raw, None)
    elif convention == "zammad" and digits_only and raw.startswith("00"):
        n = parse("+" + raw[2:], None)
    elif convention == "zammad" and digits_only and not raw.startswith("0"):
        n = parse("+" + raw, None)
        if n is None or not phonenumbers.is_valid_number(n):
            national = parse(raw, hub)
            if national is not None and phonenumbers.is_valid_number(national):
                n = national
    else:
        n = parse(raw, hub)
    if n is None:
        return None, False
    return e164(n), phonenumbers.is_valid_number(n)


def main():
    out_path = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    per_kind = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    regions = REGIONS
    if len(sys.argv) > 4 and sys.argv[4] == "all":
        # Every region the reference knows: a wider check than the suite's 26.
        regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    rng = random.Random(seed)
    rows = []
    serial = 0
    for hub in regions:
        numbers = []
        for kind in (T.FIXED_LINE, T.MOBILE):
            if phonenumbers.example_number_for_type(hub, kind) is None:
                continue
            for _ in range(per_kind):
                n = random_number(rng, hub, kind)
                if n is not None:
                    numbers.append(n)
            for foreign in rng.sample([r for r in regions if r != hub], per_kind * 2):
                n = random_number(rng, foreign, kind)
                if n is not None:
                    numbers.append(n)
        hub_cc = phonenumbers.PhoneMetadata.metadata_for_region(hub).country_code
        for n in numbers:
            serial += 1
            kind = "own" if n.country_code == hub_cc else "foreign"
            seen = set()
            for convention, raw in notations(n, hub):
                if (convention, raw) in seen or "\t" in raw or "\n" in raw:
                    continue
                seen.add((convention, raw))
                e, valid = expected(raw, hub, convention)
                rows.append((str(serial), hub, kind, convention, raw, e or "error", "1" if valid else "0"))
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("# phone oracle corpus: phonenumbers %s, seed %d, %d per kind\n" % (phonenumbers.__version__, seed, per_kind))
        f.write("number\tregion\tkind\tconvention\traw\texpected\tvalid\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print("wrote %d rows for %d numbers to %s (seed %d)" % (len(rows), serial, out_path, seed))


if __name__ == "__main__":
    main()
