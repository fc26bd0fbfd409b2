//! `$((…))`: integer arithmetic (64-bit, wrapping) with C's precedence for
//! `?: || && | ^ & == != < <= > >= << >> + - * / % ! ~` and unary `-`/`+`.

/// Evaluates `src` (whose `$X`s the caller has already expanded); bare names are
/// variables read through `var` (unset or empty is 0).
pub fn eval(src: &str, var: &dyn Fn(&str) -> String) -> Result<i64, String> {
    let tokens = tokenize(src, var)?;
    let mut p = P { t: tokens, i: 0, depth: 0 };
    let value = p.ternary()?;
    if p.i != p.t.len() {
        return Err(format!("arithmetic syntax error: {src}"));
    }
    Ok(value)
}

#[derive(Clone, Debug, PartialEq)]
enum T {
    Num(i64),
    Op(&'static str),
}

const OPS: &[&str] = &[
    "**", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "%", "(", ")", "<", ">", "!", "~", "&",
    "|", "^", "?", ":",
];

fn tokenize(src: &str, var: &dyn Fn(&str) -> String) -> Result<Vec<T>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
            out.push(T::Num(number(&chars[start..i].iter().collect::<String>())?));
        } else if c == '_' || c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && (chars[i] == '_' || chars[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            let value = var(&chars[start..i].iter().collect::<String>());
            let value = value.trim();
            out.push(T::Num(if value.is_empty() { 0 } else { number(value)? }));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op =
                OPS.iter().find(|op| rest.starts_with(*op)).ok_or_else(|| format!("arithmetic syntax error: {src}"))?;
            out.push(T::Op(op));
            i += op.len();
        }
    }
    Ok(out)
}

fn number(text: &str) -> Result<i64, String> {
    let (neg, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16)
    } else if text.len() > 1 && text.starts_with('0') {
        i64::from_str_radix(&text[1..], 8)
    } else {
        text.parse()
    }
    .map_err(|_| format!("arithmetic syntax error: {text}"))?;
    Ok(if neg { value.wrapping_neg() } else { value })
}

struct P {
    t: Vec<T>,
    i: usize,
    depth: usize,
}

const LEVELS: &[&[&str]] = &[
    &["||"],
    &["&&"],
    &["|"],
    &["^"],
    &["&"],
    &["==", "!="],
    &["<", "<=", ">", ">="],
    &["<<", ">>"],
    &["+", "-"],
    &["*", "/", "%"],
];

impl P {
    fn peek_op(&self) -> Option<&'static str> {
        match self.t.get(self.i) {
            Some(T::Op(op)) => Some(op),
            _ => None,
        }
    }

    fn ternary(&mut self) -> Result<i64, String> {
        let cond = self.binary(0)?;
        if self.peek_op() == Some("?") {
            self.i += 1;
            let yes = self.ternary()?;
            if self.peek_op() != Some(":") {
                return Err("arithmetic syntax error: expecting ':'".into());
            }
            self.i += 1;
            let no = self.ternary()?;
            return Ok(if cond != 0 { yes } else { no });
        }
        Ok(cond)
    }

    fn binary(&mut self, level: usize) -> Result<i64, String> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.peek_op().filter(|op| LEVELS[level].contains(op)) {
            self.i += 1;
            let right = self.binary(level + 1)?;
            left = match op {
                "||" => i64::from(left != 0 || right != 0),
                "&&" => i64::from(left != 0 && right != 0),
                "|" => left | right,
                "^" => left ^ right,
                "&" => left & right,
                "==" => i64::from(left == right),
                "!=" => i64::from(left != right),
                "<" => i64::from(left < right),
                "<=" => i64::from(left <= right),
                ">" => i64::from(left > right),
                ">=" => i64::from(left >= right),
                "<<" => left.wrapping_shl(right as u32),
                ">>" => left.wrapping_shr(right as u32),
                "+" => left.wrapping_add(right),
                "-" => left.wrapping_sub(right),
                "*" => left.wrapping_mul(right),
                "/" | "%" if right == 0 => return Err("divide by zero".into()),
                "/" => left.wrapping_div(right),
                _ => left.wrapping_rem(right),
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<i64, String> {
        self.depth += 1;
        if self.depth > 200 {
            return Err("arithmetic expression nested too deeply".into());
        }
        let result = match self.t.get(self.i).cloned() {
            Some(T::Num(n)) => {
                self.i += 1;
                Ok(n)
            }
            Some(T::Op("(")) => {
                self.i += 1;
                let value = self.ternary()?;
                if self.peek_op() != Some(")") {
                    return Err("arithmetic syntax error: missing ')'".into());
                }
                self.i += 1;
                Ok(value)
            }
            Some(T::Op(op @ ("-" | "+" | "!" | "~"))) => {
                self.i += 1;
                let value = self.unary()?;
                Ok(match op {
                    "-" => value.wrapping_neg(),
                    "+" => value,
                    "!" => i64::from(value == 0),
                    _ => !value,
                })
            }
            _ => Err("arithmetic syntax error".into()),
        };
        // `**`: right-associative, on the operand just read.
        let result = match result {
            Ok(base) if self.peek_op() == Some("**") => {
                self.i += 1;
                let exp = self.unary()?;
                if exp < 0 {
                    Err("exponent less than 0".into())
                } else {
                    Ok(base.wrapping_pow(exp.min(i64::from(u32::MAX)) as u32))
                }
            }
            other => other,
        };
        self.depth -= 1;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let var = |name: &str| if name == "x" { "5".to_owned() } else { String::new() };
        assert_eq!(eval("1 + 2 * 3", &var), Ok(7));
        assert_eq!(eval("(1 + 2) * 3", &var), Ok(9));
        assert_eq!(eval("x % 3 + -1", &var), Ok(1));
        assert_eq!(eval("x > 3 && y == 0", &var), Ok(1));
        assert_eq!(eval("10 / 3", &var), Ok(3));
        assert_eq!(eval("0x10 + 010", &var), Ok(24));
        assert_eq!(eval("x ? 1 : 2", &var), Ok(1));
        assert_eq!(eval("2 ** 3 ** 2", &var), Ok(512));
        assert!(eval("1 / 0", &var).is_err());
        assert!(eval("1 +", &var).is_err());
    }
}
