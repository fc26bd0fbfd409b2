//! Kubernetes resource quantities (`resource.Quantity`): `100m`, `1.5Gi`, `1e3`, `128974848`.
//!
//! A [`Quantity`] holds its value as a whole number of **nano-units** (10⁻⁹) in an `i128`.
//! That is the finest resolution Kubernetes keeps: Go rounds any finer value up (away
//! from zero) to the next nano-unit, and so does [`parse_quantity`]. An `i128` of
//! nano-units reaches about ±1.7 × 10²⁹, far beyond any resource; larger values
//! saturate. As in Go, a binary-SI quantity (`Ki` … `Ei`) is capped at 2⁶³ − 1.
//!
//! Quantities compare by value: `1Ki == 1024`, `1.5 == 1500m`.

use crate::error::FieldError;
use crate::validation::IS_NEGATIVE_ERROR_MSG;
use serde_json::Value;
use std::str::FromStr;

/// Go's `ErrFormatWrong`.
const ERR_FORMAT_WRONG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// Go's `ErrSuffix`.
const ERR_SUFFIX: &str = "unable to parse quantity's suffix";

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
/// Go caps binary-SI quantities at the largest int64.
const MAX_BINARY_NANOS: i128 = i64::MAX as i128 * NANOS_PER_UNIT;

/// A resource quantity, exact to the nano-unit (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

/// `n / d` rounded away from zero, as Go's `ScaledValue` rounds.
fn div_away_from_zero(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n > 0 {
        q + 1
    } else {
        q - 1
    }
}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// A quantity of `nanos` nano-units.
    pub fn from_nanos(nanos: i128) -> Self {
        Self { nanos }
    }

    /// A quantity of `milli` thousandths (`from_milli(100)` is `100m`).
    pub fn from_milli(milli: i128) -> Self {
        Self { nanos: milli.saturating_mul(NANOS_PER_MILLI) }
    }

    /// A quantity of `value` whole units (bytes, cores, …).
    pub fn from_value(value: i128) -> Self {
        Self { nanos: value.saturating_mul(NANOS_PER_UNIT) }
    }

    /// The value in nano-units, exactly.
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in thousandths, rounded up (away from zero) like Go's `MilliValue`:
    /// `100m` → 100, `1` → 1000, `1n` → 1.
    pub fn as_milli(&self) -> i128 {
        div_away_from_zero(self.nanos, NANOS_PER_MILLI)
    }

    /// The value in whole units, rounded up (away from zero) like Go's `Value`:
    /// `1.5Gi` → 1610612736, `100m` → 1.
    pub fn as_value(&self) -> i128 {
        div_away_from_zero(self.nanos, NANOS_PER_UNIT)
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn saturating_add(self, other: Self) -> Self {
        Self { nanos: self.nanos.saturating_add(other.nanos) }
    }

    pub fn saturating_sub(self, other: Self) -> Self {
        Self { nanos: self.nanos.saturating_sub(other.nanos) }
    }

    /// Reads a quantity from JSON, where it is a string (`"500m"`) or a number (`2`);
    /// surrounding spaces in a string are ignored, as Go's `UnmarshalJSON` ignores them.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(s) => parse_quantity(s.trim()),
            Value::Number(n) => parse_quantity(&n.to_string()),
            _ => Err(ERR_FORMAT_WRONG.to_string()),
        }
    }
}

impl FromStr for Quantity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)
    }
}

/// What [`scan`] finds in a quantity string.
struct Scanned<'a> {
    positive: bool,
    /// The integer digits, leading zeros stripped (possibly empty).
    num: &'a str,
    /// The fraction digits after the point (possibly empty).
    denom: &'a str,
    suffix: &'a str,
}

/// Go's `parseQuantityString`: splits sign, number and suffix, or fails with Go's
/// "must match the regular expression" error.
fn scan(s: &str) -> Result<Scanned<'_>, String> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    let zero = |positive| Scanned { positive, num: "", denom: "", suffix: "" };

    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok(zero(positive));
    }

    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = &s[num_start..pos];
    if pos >= end {
        return Ok(Scanned { positive, num, denom: "", suffix: "" });
    }

    let mut denom = "";
    if b[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
        if pos >= end {
            return Ok(Scanned { positive, num, denom, suffix: "" });
        }
    }

    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(ERR_FORMAT_WRONG.to_string());
    }
    Ok(Scanned { positive, num, denom, suffix: &s[suffix_start..] })
}

/// How a suffix scales the number.
enum Scale {
    /// × 10^n
    Decimal(i64),
    /// × 2^n (`Ki` … `Ei`)
    Binary(u32),
}

/// Go's `quantitySuffixer.interpret`.
fn interpret_suffix(suffix: &str) -> Option<Scale> {
    let scale = match suffix {
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "" => Scale::Decimal(0),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(10),
        "Mi" => Scale::Binary(20),
        "Gi" => Scale::Binary(30),
        "Ti" => Scale::Binary(40),
        "Pi" => Scale::Binary(50),
        "Ei" => Scale::Binary(60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            if exponent.is_empty() {
                return None;
            }
            Scale::Decimal(exponent.parse::<i64>().ok()?)
        }
    };
    Some(scale)
}

/// The decimal digits `digits` read as an integer, saturating at `i128::MAX`.
fn saturating_digits(digits: &[u8]) -> i128 {
    digits.iter().try_fold(0i128, |acc, d| acc.checked_mul(10)?.checked_add(i128::from(d - b'0'))).unwrap_or(i128::MAX)
}

/// `digits × 10^(point − len)` rounded up to an integer: the first `point` digits are the
/// integer part (padded with zeros past the end), the rest a fraction that rounds up.
fn shift_decimal(digits: &[u8], point: i64) -> i128 {
    let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let split = usize::try_from(point.clamp(0, len)).unwrap_or(0);
    let (int_digits, frac_digits) = digits.split_at(split);
    let mut value = saturating_digits(int_digits);
    let zeros = point.saturating_sub(len).max(0);
    if value != 0 {
        for _ in 0..zeros.min(40) {
            value = value.saturating_mul(10);
        }
    }
    if frac_digits.iter().any(|&d| d != b'0') {
        value = value.saturating_add(1);
    }
    value
}

/// `0.frac × 2^exponent` rounded up: long multiplication from the last digit.
fn binary_fraction(frac: &[u8], exponent: u32) -> i128 {
    let factor: u128 = 1 << exponent;
    let mut carry: u128 = 0;
    let mut exact = true;
    for &d in frac.iter().rev() {
        let t = u128::from(d - b'0') * factor + carry;
        exact &= t.is_multiple_of(10);
        carry = t / 10;
    }
    i128::try_from(carry).unwrap_or(i128::MAX).saturating_add(i128::from(!exact))
}

/// Parses a quantity as Kubernetes does: an optional sign, digits with an optional
/// decimal point, then a binary-SI suffix (`Ki Mi Gi Ti Pi Ei`), a decimal-SI suffix
/// (`n u m k M G T P E` or none) or a decimal exponent (`e3`, `E-2`).
///
/// Errors carry Go's messages ("quantities must match the regular expression …",
/// "unable to parse quantity's suffix").
pub fn parse_quantity(s: &str) -> Result<Quantity, String> {
    if s.is_empty() {
        return Err(ERR_FORMAT_WRONG.to_string());
    }
    let scanned = scan(s)?;
    let scale = interpret_suffix(scanned.suffix).ok_or_else(|| ERR_SUFFIX.to_string())?;
    let digits: Vec<u8> = scanned.num.bytes().chain(scanned.denom.bytes()).collect();
    let num_len = i64::try_from(scanned.num.len()).unwrap_or(i64::MAX);
    let magnitude = match scale {
        // nanos = digits × 10^(exponent + 9 − len(denom)): the point moves right.
        Scale::Decimal(exponent) => shift_decimal(&digits, num_len.saturating_add(exponent).saturating_add(9)),
        // nanos = num.denom × 10^9 × 2^exponent: first shift by 9 places, then
        // multiply the integer and fractional parts by 2^exponent separately.
        Scale::Binary(exponent) => {
            let point = usize::try_from(num_len.saturating_add(9)).unwrap_or(usize::MAX);
            let split = point.min(digits.len());
            let (int_digits, frac_digits) = digits.split_at(split);
            let mut integer = saturating_digits(int_digits);
            for _ in 0..point - split {
                integer = integer.saturating_mul(10);
            }
            let whole = integer.saturating_mul(1i128 << exponent);
            whole.saturating_add(binary_fraction(frac_digits, exponent)).min(MAX_BINARY_NANOS)
        }
    };
    let nanos = if scanned.positive { magnitude } else { -magnitude };
    Ok(Quantity { nanos })
}

/// Validates a resource quantity in a JSON document (a `resources.requests` value, …):
/// a string or number that parses, and is not negative. Spaces around a string are
/// ignored, as Go's `Quantity.UnmarshalJSON` ignores them.
pub fn validate_resource_quantity(value: &Value, field: &str) -> Vec<FieldError> {
    let text = match value {
        // Go's Quantity.UnmarshalJSON trims spaces before parsing.
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => return vec![FieldError::invalid(field, other, ERR_FORMAT_WRONG)],
    };
    match parse_quantity(&text) {
        Err(message) => vec![FieldError::invalid(field, &text, message)],
        Ok(quantity) if quantity.is_negative() => {
            vec![FieldError::invalid(field, &text, IS_NEGATIVE_ERROR_MSG)]
        }
        Ok(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Quantity {
        match parse_quantity(s) {
            Ok(q) => q,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn decimal_si() {
        assert_eq!(q("100m").as_milli(), 100);
        assert_eq!(q("1").as_milli(), 1000);
        assert_eq!(q("0.1").as_milli(), 100);
        assert_eq!(q("1.5").as_milli(), 1500);
        assert_eq!(q("2k").as_value(), 2000);
        assert_eq!(q("1M").as_value(), 1_000_000);
        assert_eq!(q("1G").as_value(), 1_000_000_000);
        assert_eq!(q("1T").as_value(), 1_000_000_000_000);
        assert_eq!(q("1P").as_value(), 1_000_000_000_000_000);
        assert_eq!(q("1E").as_value(), 1_000_000_000_000_000_000);
        assert_eq!(q("1u").as_nanos(), 1000);
        assert_eq!(q("5n").as_nanos(), 5);
        assert_eq!(q("+3").as_value(), 3);
        assert_eq!(q("007").as_value(), 7);
        assert_eq!(q("1.").as_value(), 1);
        assert_eq!(q(".5").as_milli(), 500);
        assert_eq!(q("1.G").as_value(), 1_000_000_000);
    }

    #[test]
    fn binary_si() {
        assert_eq!(q("1Ki").as_value(), 1024);
        assert_eq!(q("1Mi").as_value(), 1 << 20);
        assert_eq!(q("1.5Gi").as_value(), 1_610_612_736);
        assert_eq!(q("128Mi").as_value(), 134_217_728);
        assert_eq!(q("1Ti").as_value(), 1 << 40);
        assert_eq!(q("1Pi").as_value(), 1 << 50);
        assert_eq!(q("1Ei").as_value(), 1 << 60);
        assert_eq!(q("0.5Ki").as_value(), 512);
        assert_eq!(q("0.001Ki").as_milli(), 1024);
        assert_eq!(q("0.0001Ki").as_nanos(), 102_400_000);
        // A fraction that is not a whole nano-unit rounds up.
        assert_eq!(q("0.0000000000001Ki").as_nanos(), 1);
        // Capped at the largest int64, as Go caps it.
        assert_eq!(q("8Ei").as_value(), i128::from(i64::MAX));
        assert_eq!(q("100000Ei").as_value(), i128::from(i64::MAX));
    }

    #[test]
    fn decimal_exponents() {
        assert_eq!(q("1e3").as_value(), 1000);
        assert_eq!(q("1E3").as_value(), 1000);
        assert_eq!(q("1e+3").as_value(), 1000);
        assert_eq!(q("1E-2").as_milli(), 10);
        assert_eq!(q("12e6").as_value(), 12_000_000);
        assert_eq!(q("1.5e1").as_value(), 15);
        assert_eq!(q("1e-9").as_nanos(), 1);
        assert_eq!(q("1e-12").as_nanos(), 1);
        assert_eq!(q("1e100").as_nanos(), i128::MAX);
        assert_eq!(q("0e100").as_nanos(), 0);
    }

    #[test]
    fn rounding_is_up() {
        assert_eq!(q("0.1m").as_nanos(), 100_000);
        assert_eq!(q("0.1n").as_nanos(), 1);
        assert_eq!(q("100m").as_value(), 1);
        assert_eq!(q("1001m").as_value(), 2);
        assert_eq!(q("1n").as_milli(), 1);
        assert_eq!(q("-100m").as_value(), -1);
        assert_eq!(q("-0.1n").as_nanos(), -1);
    }

    #[test]
    fn zero_and_signs() {
        assert!(q("0").is_zero());
        assert!(q("-0").is_zero());
        assert!(!q("-0").is_negative());
        assert!(q("000").is_zero());
        assert!(q("0.0").is_zero());
        assert!(q("0Gi").is_zero());
        assert!(q("-1").is_negative());
        assert_eq!(q("-1").as_value(), -1);
        assert_eq!(q("-1.5Gi").as_value(), -1_610_612_736);
    }

    #[test]
    fn go_quirks_are_kept() {
        // Go's scanner lets the number be empty: a bare suffix, a sign or a point is zero.
        for zero in ["Gi", "m", "k", "e3", "+", "-", ".", "-."] {
            assert!(q(zero).is_zero(), "{zero}");
        }
    }

    #[test]
    fn comparisons() {
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1.5"), q("1500m"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("100m") < q("1"));
        assert_eq!(q("1").saturating_add(q("500m")), q("1.5"));
        assert_eq!(Quantity::from_milli(250), q("250m"));
        assert_eq!(Quantity::from_value(3), q("3"));
        assert_eq!("2Mi".parse::<Quantity>(), Ok(q("2097152")));
    }

    #[test]
    fn malformed() {
        for bad in ["", "1.2.3", "abc", "1Gb", " 1", "1 Gi", "1 ", "1Gi ", "1i5", "--1", "1-2-"] {
            let err = parse_quantity(bad).err();
            assert!(err.is_some(), "{bad:?} should not parse");
        }
        assert_eq!(parse_quantity("1Gb").err().as_deref(), Some(ERR_FORMAT_WRONG));
        assert_eq!(parse_quantity("").err().as_deref(), Some(ERR_FORMAT_WRONG));
        assert_eq!(parse_quantity("abc").err().as_deref(), Some(ERR_FORMAT_WRONG));
        for bad_suffix in ["1K", "1e", "1Ki3", "1mi", "1ee3", "1e-", "1-", "1EE"] {
            assert_eq!(parse_quantity(bad_suffix).err().as_deref(), Some(ERR_SUFFIX), "{bad_suffix}");
        }
    }

    #[test]
    fn json_values() {
        assert!(validate_resource_quantity(&json!("500m"), "spec.cpu").is_empty());
        assert!(validate_resource_quantity(&json!(2), "spec.cpu").is_empty());
        assert!(validate_resource_quantity(&json!(0.5), "spec.cpu").is_empty());
        assert_eq!(Quantity::from_json(&json!(0.5)), Ok(q("500m")));
        let errs = validate_resource_quantity(&json!("-1"), "spec.containers[0].resources.limits[cpu]");
        assert_eq!(
            errs[0].to_string(),
            "spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"
        );
        let errs = validate_resource_quantity(&json!(-2), "x");
        assert_eq!(errs[0].detail, IS_NEGATIVE_ERROR_MSG);
        let errs = validate_resource_quantity(&json!("1Gb"), "x");
        assert_eq!(errs[0].to_string(), format!("x: Invalid value: \"1Gb\": {ERR_FORMAT_WRONG}"));
        assert_eq!(validate_resource_quantity(&json!(true), "x").len(), 1);
        assert!(validate_resource_quantity(&json!(" 1Gi "), "x").is_empty());
    }
}
